// Batched cached generation against a naive loop that re-runs the full forward for every token.
import assert from 'node:assert/strict';
import { before, test } from 'node:test';
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../src/backend/backend.ts';
import { parseModelConfig } from '../src/io/hf-config.ts';
import { generate } from '../src/target/generate.ts';
import { TfjsTarget } from '../src/target/tfjs-target.ts';
import { Rng } from '../src/util/random.ts';
import { pickToken } from '../src/util/sampling.ts';
import { mapSource, randomWeights } from './helpers.ts';

before(async () => {
  await initBackend('wasm');
});

test('greedy generation of a ragged batch equals naive per-prompt greedy decoding', () => {
  const config = parseModelConfig({
    architectures: ['Qwen3ForCausalLM'],
    hidden_size: 32,
    intermediate_size: 48,
    num_hidden_layers: 3,
    num_attention_heads: 4,
    num_key_value_heads: 2,
    head_dim: 8,
    vocab_size: 30,
  });
  const model = TfjsTarget.fromWeights(config, mapSource(randomWeights(config, 9)));
  const prompts = [
    [1, 2, 3, 4, 5, 6, 7],
    [8, 9],
    [10, 11, 12, 13],
  ];
  const stop = 0;
  const naive = prompts.map((p) => {
    const seq = [...p];
    const out: number[] = [];
    while (out.length < 10) {
      const r = model.forward({ ids: [seq] });
      const V = config.vocabSize;
      const last = (r.logits!.dataSync() as Float32Array).slice((seq.length - 1) * V, seq.length * V);
      tf.dispose([r.logits!, r.finalNormed]);
      const next = pickToken(last);
      out.push(next);
      seq.push(next);
      if (next === stop) break;
    }
    return out;
  });
  const got = generate(model, prompts, { maxNewTokens: 10, stopIds: [stop] });
  assert.deepEqual(got, naive);
  model.dispose();
});

test('sampling follows the temperature-scaled distribution; top-p cuts the tail', () => {
  const rng = new Rng(3);
  const logits = Float32Array.from([Math.log(0.5), Math.log(0.3), Math.log(0.2)]);
  const counts = [0, 0, 0];
  const n = 20000;
  for (let i = 0; i < n; i++) counts[pickToken(logits, 1, 1, rng)]++;
  [0.5, 0.3, 0.2].forEach((p, i) =>
    assert.ok(Math.abs(counts[i] / n - p) < 4 * Math.sqrt((p * (1 - p)) / n), `token ${i}: ${counts[i] / n}`),
  );
  for (let i = 0; i < 2000; i++) assert.notEqual(pickToken(logits, 1, 0.7, rng), 2, 'top-p 0.7 keeps the two most likely');
});
