import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

import { plainForward, readSafetensorsPlain, type PlainTensor } from './plain-target.ts';

const ARCHS = ['llama', 'qwen2', 'qwen3', 'minicpm'] as const;

function fixturePath(arch: string, file: string): string {
  return fileURLToPath(new URL(`../fixtures/golden/targets/${arch}/${file}`, import.meta.url));
}

function floatTensor(map: ReturnType<typeof readSafetensorsPlain>, name: string): { data: Float32Array; shape: number[] } {
  const t = map.get(name);
  assert.ok(t, `missing tensor ${name}`);
  assert.ok(t.data instanceof Float32Array, `${name} is ${t.dtype}, expected a float tensor`);
  return { data: t.data, shape: t.shape };
}

function maxAbsDiff(actual: Float32Array, expected: Float32Array): number {
  assert.equal(actual.length, expected.length, 'length mismatch');
  let m = 0;
  for (let i = 0; i < actual.length; i++) {
    const d = Math.abs(actual[i]! - expected[i]!);
    if (!(d <= m)) m = d; // also propagates NaN
  }
  return m;
}

function maxAbs(x: Float32Array): number {
  let m = 0;
  for (const v of x) m = Math.max(m, Math.abs(v));
  return m;
}

for (const arch of ARCHS) {
  test(`plainForward matches golden ${arch}`, () => {
    const config = JSON.parse(readFileSync(fixturePath(arch, 'config.json'), 'utf8')) as Record<string, any>;
    const raw = readSafetensorsPlain(fixturePath(arch, 'model.safetensors'));
    const weights = new Map<string, PlainTensor>();
    for (const name of raw.keys()) weights.set(name, floatTensor(raw, name));

    const expected = readSafetensorsPlain(fixturePath(arch, 'expected.safetensors'));
    const idsT = expected.get('input_ids');
    assert.ok(idsT && idsT.data instanceof BigInt64Array, 'input_ids must be int64');
    const ids = Array.from(idsT.data, (v) => Number(v));
    const T = ids.length;
    const hidden: number = config.hidden_size;
    const vocab: number = config.vocab_size;

    const result = plainForward(config, weights, ids);
    assert.equal(result.logits.length, T * vocab);
    assert.equal(result.finalNormed.length, T * hidden);
    assert.equal(result.layerOutputs.length, config.num_hidden_layers);

    const diffs: string[] = [];
    for (let l = 0; l < config.num_hidden_layers; l++) {
      const exp = floatTensor(expected, `layer_output.${l}`);
      assert.deepEqual(exp.shape, [T, hidden]);
      const d = maxAbsDiff(result.layerOutputs[l]!, exp.data);
      diffs.push(`layer${l}=${d.toExponential(2)}`);
      assert.ok(d <= 1e-4, `${arch} layer_output.${l}: max abs diff ${d}`);
    }

    const expNormed = floatTensor(expected, 'final_normed_hidden');
    const dNormed = maxAbsDiff(result.finalNormed, expNormed.data);
    diffs.push(`final_normed=${dNormed.toExponential(2)}`);
    assert.ok(dNormed <= 1e-4, `${arch} final_normed_hidden: max abs diff ${dNormed}`);

    const expLogits = floatTensor(expected, 'logits');
    assert.deepEqual(expLogits.shape, [T, vocab]);
    const dLogits = maxAbsDiff(result.logits, expLogits.data);
    const scale = Math.max(1, maxAbs(expLogits.data));
    diffs.push(`logits=${dLogits.toExponential(2)} (max|logit|=${scale.toFixed(2)})`);
    assert.ok(dLogits <= 1e-4 * scale, `${arch} logits: max abs diff ${dLogits} (scale ${scale})`);

    console.log(`${arch}: ${diffs.join(' ')}`);
  });
}
