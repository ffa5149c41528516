// The tfjs target runtime against (1) PyTorch golden vectors and (2) the plain loop reference on tiny
// random configs scaled down from the published ones; then cached decoding against the full forward.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { after, before, describe, test } from 'node:test';
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../src/backend/backend.ts';
import { parseModelConfig } from '../src/io/hf-config.ts';
import { SafetensorsFile } from '../src/io/safetensors.ts';
import { TfjsTarget } from '../src/target/tfjs-target.ts';
import { Rng } from '../src/util/random.ts';
import { fixture, mapSource, maxAbs, maxAbsDiff, randomWeights, refBf16, refF16, removeTempDirs, rows, tempDir } from './helpers.ts';
import { plainForward } from './reference/plain-target.ts';

before(async () => {
  await initBackend('wasm');
});
after(removeTempDirs);

describe('target runtime vs PyTorch golden vectors', () => {
  for (const arch of ['llama', 'qwen2', 'qwen3', 'minicpm']) {
    test(arch, () => {
      const dir = fixture(`golden/targets/${arch}`);
      const model = TfjsTarget.load(dir);
      const expected = new SafetensorsFile(`${dir}/expected.safetensors`);
      const ids = Array.from(expected.read('input_ids').data as BigInt64Array, Number);
      const out = model.forward({ ids: [ids] }, { layers: [0, 1, 2, 3, 4, 5, 6, 7] });
      const logits = expected.read('logits').data as Float32Array;
      assert.ok(maxAbsDiff(out.logits!.dataSync(), logits) <= 1e-4 * Math.max(1, maxAbs(logits)), 'logits');
      assert.ok(maxAbsDiff(out.finalNormed.dataSync(), expected.read('final_normed_hidden').data as Float32Array) <= 1e-4, 'final normed');
      for (let l = 0; l < 8; l++) {
        const d = maxAbsDiff(out.layers.get(l)!.dataSync(), expected.read(`layer_output.${l}`).data as Float32Array);
        assert.ok(d <= 1e-4, `layer ${l}: ${d}`);
      }
      tf.dispose([out.logits!, out.finalNormed, ...out.layers.values()]);
      model.dispose();
    });
  }
});

/** A published config scaled down to test size, keeping its structural features. */
function scaledDown(name: string): Record<string, unknown> {
  const raw = JSON.parse(fs.readFileSync(fixture(`hf-configs/${name}.json`), 'utf8'));
  const small: Record<string, unknown> = {
    ...raw,
    hidden_size: 32,
    intermediate_size: 48,
    num_hidden_layers: 4,
    num_attention_heads: 4,
    num_key_value_heads: 2,
    vocab_size: 50,
  };
  if (raw.head_dim) small.head_dim = 16; // Qwen3: head_dim differs from hidden/heads (8)
  if (raw.rope_scaling?.rope_type === 'llama3') {
    // head_dim 8 is too few frequencies to reach all three llama3 bands; 16 with a short original
    // context puts one frequency in each (unchanged, blended, interpolated).
    small.num_attention_heads = 2;
    small.num_key_value_heads = 1;
    small.rope_scaling = { ...raw.rope_scaling, original_max_position_embeddings: 64 };
  }
  if (raw.dim_model_base) small.dim_model_base = 8;
  return small;
}

const PUBLISHED = ['llama-3.1-8b-instruct', 'qwen2.5-0.5b-instruct', 'qwen3-8b', 'minicpm4-0.5b'];

describe('target runtime vs plain reference (scaled-down published configs)', () => {
  for (const name of PUBLISHED) {
    test(`${name}: right-padded batch, logits and layers`, () => {
      const raw = scaledDown(name);
      const config = parseModelConfig(raw);
      const weights = randomWeights(config, 7);
      const model = TfjsTarget.fromWeights(config, mapSource(weights));
      const rng = new Rng(3);
      const lengths = [11, 6];
      const T = Math.max(...lengths);
      const seqs = lengths.map((n) => Array.from({ length: n }, () => rng.int(config.vocabSize)));
      const ids = seqs.map((s) => [...s, ...new Array(T - s.length).fill(0)]);
      const attentionMask = seqs.map((s) => Array.from({ length: T }, (_, t) => (t < s.length ? 1 : 0)));
      const layers = [1, 2];
      const out = model.forward({ ids, attentionMask }, { layers });
      const V = config.vocabSize;
      const H = config.hiddenSize;
      const logits = out.logits!.dataSync() as Float32Array;
      const normed = out.finalNormed.dataSync() as Float32Array;
      seqs.forEach((s, b) => {
        const ref = plainForward(raw, weights as never, s);
        const scale = Math.max(1, maxAbs(ref.logits));
        assert.ok(maxAbsDiff(rows(logits, V, b * T, b * T + s.length), ref.logits) <= 1e-4 * scale, `row ${b} logits`);
        assert.ok(maxAbsDiff(rows(normed, H, b * T, b * T + s.length), ref.finalNormed) <= 1e-4, `row ${b} final normed`);
        for (const l of layers) {
          const got = out.layers.get(l)!.dataSync() as Float32Array;
          assert.ok(maxAbsDiff(rows(got, H, b * T, b * T + s.length), ref.layerOutputs[l]) <= 1e-4, `row ${b} layer ${l}`);
        }
      });
      tf.dispose([out.logits!, out.finalNormed, ...out.layers.values()]);
      model.dispose();
    });
  }
});

describe('KV cache decoding equals the full forward', () => {
  const raw = scaledDown('qwen3-8b');
  const config = parseModelConfig(raw);
  const weights = randomWeights(config, 11);
  const rng = new Rng(5);
  const seq = Array.from({ length: 12 }, () => rng.int(config.vocabSize));
  const V = config.vocabSize;

  const full = (ids: number[]) => {
    const model = TfjsTarget.fromWeights(config, mapSource(weights));
    const out = model.forward({ ids: [ids] });
    const data = out.logits!.dataSync() as Float32Array;
    tf.dispose([out.logits!, out.finalNormed]);
    model.dispose();
    return data;
  };

  test('prefill, then one token at a time, then k tokens at once', () => {
    const model = TfjsTarget.fromWeights(config, mapSource(weights));
    const expected = full(seq);
    const cache = model.newCache(1);
    const chunks = [
      [0, 5],
      [5, 6],
      [6, 7],
      [7, 8],
      [8, 12],
    ]; // prefill 5, three single steps, append 4
    for (const [a, b] of chunks) {
      const out = model.forward({ ids: [seq.slice(a, b)] }, { cache });
      const d = maxAbsDiff(out.logits!.dataSync(), rows(expected, V, a, b));
      assert.ok(d <= 1e-4, `tokens [${a}, ${b}): ${d}`);
      tf.dispose([out.logits!, out.finalNormed]);
    }
    assert.equal(cache.length, 12);
    cache.dispose();
    model.dispose();
  });

  test('rejected draft tokens are truncated away', () => {
    const model = TfjsTarget.fromWeights(config, mapSource(weights));
    const expected = full(seq);
    const cache = model.newCache(1);
    model.forward({ ids: [seq.slice(0, 6)] }, { cache, logits: false }).finalNormed.dispose();
    model.forward({ ids: [[1, 2, 3]] }, { cache, logits: false }).finalNormed.dispose(); // a wrong guess
    cache.truncate(6);
    const out = model.forward({ ids: [seq.slice(6)] }, { cache });
    assert.ok(maxAbsDiff(out.logits!.dataSync(), rows(expected, V, 6, 12)) <= 1e-4);
    tf.dispose([out.logits!, out.finalNormed]);
    cache.dispose();
    model.dispose();
  });

  test('ragged batch: prefill right-padded, then a step per row', () => {
    const model = TfjsTarget.fromWeights(config, mapSource(weights));
    const a = seq.slice(0, 9);
    const b = seq.slice(2, 6);
    const cache = model.newCache(2);
    const pad = (s: number[]) => [...s, ...new Array(9 - s.length).fill(0)];
    const prefill = model.forward(
      { ids: [a, pad(b)], attentionMask: [a.map(() => 1), pad(b).map((_, t) => (t < b.length ? 1 : 0))] },
      { cache },
    );
    tf.dispose([prefill.logits!, prefill.finalNormed]);
    const next = [17, 23];
    const step = model.forward({ ids: [[next[0]], [next[1]]] }, { cache });
    const got = step.logits!.dataSync() as Float32Array;
    assert.ok(maxAbsDiff(rows(got, V, 0, 1), rows(full([...a, next[0]]), V, 9, 10)) <= 1e-4, 'row 0');
    assert.ok(
      maxAbsDiff(rows(got, V, 1, 2), rows(full([...b, next[1]]), V, 4, 5)) <= 1e-4,
      'row 1 (padding slots skipped, position continues at 4)',
    );
    tf.dispose([step.logits!, step.finalNormed]);
    cache.dispose();
    model.dispose();
  });

  test('tree mask: a sibling branch sees only its own ancestors', () => {
    const model = TfjsTarget.fromWeights(config, mapSource(weights));
    const prefix = seq.slice(0, 5);
    // Tree over the prefix: node 0 (depth 0) with two children, node 1 and node 2 (both depth 1).
    const [x0, x1, x2] = [31, 32, 33];
    const tree = [[x0, x1, x2]];
    const cache = model.newCache(1);
    model.forward({ ids: [prefix] }, { cache, logits: false }).finalNormed.dispose();
    const out = model.forward(
      {
        ids: tree,
        positionIds: [[5, 6, 6]],
        treeMask: [
          [1, 0, 0],
          [1, 1, 0],
          [1, 0, 1],
        ],
      },
      { cache },
    );
    const got = out.logits!.dataSync() as Float32Array;
    assert.ok(maxAbsDiff(rows(got, V, 2, 3), rows(full([...prefix, x0, x2]), V, 6, 7)) <= 1e-4, 'node 2 = path prefix, x0, x2');
    assert.ok(maxAbsDiff(rows(got, V, 1, 2), rows(full([...prefix, x0, x1]), V, 6, 7)) <= 1e-4, 'node 1 = path prefix, x0, x1');
    // Keep the accepted path (x0, x2) and continue: equals the plain sequence.
    cache.select([0, 1, 2, 3, 4, 5, 7]);
    const cont = model.forward({ ids: [[40]] }, { cache });
    assert.ok(maxAbsDiff(cont.logits!.dataSync(), rows(full([...prefix, x0, x2, 40]), V, 7, 8)) <= 1e-4, 'continuation after select');
    tf.dispose([out.logits!, out.finalNormed, cont.logits!, cont.finalNormed]);
    cache.dispose();
    model.dispose();
  });
});

describe('loading and memory', () => {
  test('bf16 and f16 checkpoints load as float32: the model computes exactly what float32 computes on the rounded weights', async () => {
    const { SafetensorsFolder, writeSafetensors } = await import('../src/io/safetensors.ts');
    const path = await import('node:path');
    const src = fixture('golden/targets/llama');
    const config = parseModelConfig(JSON.parse(fs.readFileSync(path.join(src, 'config.json'), 'utf8')));
    const f32 = new SafetensorsFolder(src);
    const ids = [[3, 14, 15, 9, 26, 5]];
    const logitsOf = (model: TfjsTarget) => {
      const out = model.forward({ ids });
      const l = Float32Array.from(out.logits!.dataSync());
      tf.dispose([out.logits!, out.finalNormed]);
      model.dispose();
      return l;
    };
    const full = logitsOf(TfjsTarget.load(src));
    const dir = tempDir('target-half-');
    for (const [dtype, round] of [
      ['BF16', refBf16],
      ['F16', refF16],
    ] as const) {
      fs.mkdirSync(path.join(dir, dtype));
      fs.copyFileSync(path.join(src, 'config.json'), path.join(dir, dtype, 'config.json'));
      writeSafetensors(path.join(dir, dtype, 'model.safetensors'), new Map(f32.names().map((n) => [n, { ...f32.read(n), dtype }])));
      const loaded = logitsOf(TfjsTarget.load(path.join(dir, dtype)));
      // The same model from float32 weights rounded here (the reference rounding, not src's).
      const rounded = new Map(f32.names().map((n) => [n, { ...f32.read(n), data: (f32.read(n).data as Float32Array).map(round) }]));
      const expected = logitsOf(TfjsTarget.fromWeights(config, mapSource(rounded)));
      assert.ok(
        Buffer.from(loaded.buffer).equals(Buffer.from(expected.buffer)),
        `${dtype}: logits differ from float32 on rounded weights by ${maxAbsDiff(loaded, expected)}`,
      );
      assert.ok(maxAbsDiff(loaded, full) > 0, `${dtype}: the weights were rounded`);
    }
  });

  test('a missing or misshapen tensor is an error naming it', async () => {
    const config = parseModelConfig(scaledDown('qwen2.5-0.5b-instruct'));
    const weights = randomWeights(config, 1);
    weights.delete('model.layers.2.self_attn.k_proj.bias');
    assert.throws(
      () => TfjsTarget.fromWeights(config, mapSource(weights)),
      /missing tensor 'model\.layers\.2\.self_attn\.k_proj\.bias' \(expected shape \[16\]\)/,
    );
    const w2 = randomWeights(config, 1);
    w2.set('model.norm.weight', { dtype: 'F32', shape: [31], data: new Float32Array(31) });
    assert.throws(() => TfjsTarget.fromWeights(config, mapSource(w2)), /'model\.norm\.weight' has shape \[31\], expected \[32\]/);
  });

  test('decoding with a cache leaks no tensors', () => {
    const config = parseModelConfig(scaledDown('llama-3.1-8b-instruct'));
    const model = TfjsTarget.fromWeights(config, mapSource(randomWeights(config, 2)));
    const before = tf.memory().numTensors;
    const cache = model.newCache(1);
    for (let step = 0; step < 5; step++) {
      const out = model.forward({ ids: [[step + 1, step + 2]] }, { cache, layers: [1] });
      tf.dispose([out.logits!, out.finalNormed, ...out.layers.values()]);
      if (step === 2) cache.truncate(3);
    }
    cache.dispose();
    assert.equal(tf.memory().numTensors, before);
    model.dispose();
  });
});
