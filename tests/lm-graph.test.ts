// The language-model loss as one ONNX Runtime graph (src/tiny/lm-graph.ts, ort-lm.ts) against tfjs' taped
// lmLoss and a plain float64 reference with finite differences.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../src/backend/backend.ts';
import { ortWorker, stopOrtGemm, useOrtGemm } from '../src/backend/matmul.ts';
import { parseModelConfig } from '../src/io/hf-config.ts';
import type { StoredTensor } from '../src/io/safetensors.ts';
import { TfjsTarget } from '../src/target/tfjs-target.ts';
import { collate, lmLoss } from '../src/tiny/lm.ts';
import { hfName, OrtLmStep } from '../src/tiny/ort-lm.ts';
import { mapSource, maxAbs, maxAbsDiff, randomWeights } from './helpers.ts';
import { plainForward } from './reference/plain-target.ts';

before(async () => {
  await initBackend('wasm');
  await useOrtGemm(1);
});
after(() => stopOrtGemm());

// GQA 2:1, head_dim 4, 3 layers: small enough for finite differences, with every kind of weight.
const raw = {
  architectures: ['LlamaForCausalLM'],
  hidden_size: 16,
  intermediate_size: 24,
  num_hidden_layers: 3,
  num_attention_heads: 4,
  num_key_value_heads: 2,
  vocab_size: 20,
  tie_word_embeddings: false,
};
const samples = [
  { ids: [1, 5, 7, 2, 9, 11, 3], lossMask: [0, 0, 1, 1, 0, 1, 1] },
  { ids: [3, 4, 8], lossMask: [0, 1, 1] },
  { ids: [6, 6, 2, 19, 0], lossMask: [0, 1, 1, 1, 1] },
];

/** The mean masked next-token NLL of `samples`, each run alone through the plain float64 forward. */
function plainLoss(weights: Map<string, StoredTensor>): number {
  let nll = 0;
  let n = 0;
  for (const s of samples) {
    const logits = plainForward(raw, weights as never, s.ids).logits;
    for (let t = 1; t < s.ids.length; t++) {
      if (!s.lossMask[t]) continue;
      const row = Array.from(logits.subarray((t - 1) * 20, t * 20));
      const max = Math.max(...row);
      nll += max + Math.log(row.reduce((a, x) => a + Math.exp(x - max), 0)) - row[s.ids[t]];
      n++;
    }
  }
  return nll / n;
}

test('the ONNX Runtime LM graph gives lmLoss and the gradient of every weight, the embedding included', () => {
  const config = parseModelConfig(raw);
  const weights = randomWeights(config, 11);
  const model = TfjsTarget.fromWeights(config, mapSource(weights), 'weights', { trainable: true });
  const step = new OrtLmStep(ortWorker()!, model);
  const batch = collate(samples, 0);
  const vars = model.variables();
  const { value, grads } = tf.variableGrads(() => lmLoss(model, batch), vars);
  const ort = step.gradients(batch);
  const expected = plainLoss(weights);
  assert.ok(Math.abs(ort.loss - expected) < 1e-5, `loss ${ort.loss} vs plain ${expected}`);
  assert.ok(Math.abs(value.dataSync()[0] - expected) < 1e-5);
  assert.equal(Object.keys(ort.grads).length, vars.length);
  for (const v of vars) {
    const want = grads[v.name].dataSync();
    const got = ort.grads[v.name].dataSync();
    assert.ok(maxAbs(want) > 0, `${hfName(v)}: tfjs gradient is zero`);
    assert.ok(maxAbsDiff(got, want) < 1e-5 * Math.max(1, maxAbs(want)), `${hfName(v)}: ${maxAbsDiff(got, want)}`);
  }
  // Finite differences of the plain reference, on one entry of several weights (HF layout [out, in]).
  for (const [name, index, graphIndex] of [
    ['model.embed_tokens.weight', 7 * 16 + 3, 7 * 16 + 3],
    ['model.layers.0.self_attn.k_proj.weight', 5 * 16 + 2, 2 * 8 + 5], // [in, out] in the graph: row 2, col 5
    ['model.layers.2.mlp.down_proj.weight', 9 * 24 + 4, 4 * 16 + 9],
    ['model.layers.1.input_layernorm.weight', 6, 6],
    ['lm_head.weight', 11 * 16 + 1, 1 * 20 + 11],
  ] as [string, number, number][]) {
    const w = weights.get(name)!;
    const h = 1e-3;
    const orig = w.data[index] as number;
    w.data[index] = orig + h;
    const up = plainLoss(weights);
    w.data[index] = orig - h;
    const down = plainLoss(weights);
    w.data[index] = orig;
    const fd = (up - down) / (2 * h);
    const v = vars.find((x) => hfName(x) === name)!;
    const got = ort.grads[v.name].dataSync()[graphIndex];
    assert.ok(Math.abs(got - fd) < 2e-3 * Math.max(1, Math.abs(fd)), `${name}[${index}]: graph ${got}, finite difference ${fd}`);
  }
  tf.dispose([value, ...Object.values(grads), ...Object.values(ort.grads)]);
  model.dispose();
});

test('a batch divided by the global token count: the shards of two ranks add up to the whole batch', () => {
  const config = parseModelConfig(raw);
  const model = TfjsTarget.fromWeights(config, mapSource(randomWeights(config, 12)), 'weights', { trainable: true });
  const step = new OrtLmStep(ortWorker()!, model);
  const batch = collate(samples, 0);
  const whole = step.gradients(batch);
  const a = step.gradients(collate(samples.slice(0, 2), 0), batch.tokens);
  const b = step.gradients(collate(samples.slice(2), 0), batch.tokens);
  assert.ok(Math.abs(a.loss + b.loss - whole.loss) < 1e-6);
  for (const [name, g] of Object.entries(whole.grads)) {
    const sum = tf.add(a.grads[name], b.grads[name]);
    assert.ok(maxAbsDiff(sum.dataSync(), g.dataSync()) < 1e-6, name);
    sum.dispose();
  }
  model.dispose();
});

test("tfjs' taped lmLoss with every product on ORT's GEMM (an int32 one-hot operand included) gives the same gradients", async () => {
  const config = parseModelConfig(raw);
  const model = TfjsTarget.fromWeights(config, mapSource(randomWeights(config, 13)), 'weights', { trainable: true });
  const batch = collate(samples, 0);
  const vars = model.variables();
  const run = () => tf.variableGrads(() => lmLoss(model, batch), vars);
  const onTfjs = run();
  await useOrtGemm(1, 0);
  try {
    const onOrt = run();
    assert.ok(Math.abs(onOrt.value.dataSync()[0] - onTfjs.value.dataSync()[0]) < 1e-5);
    for (const v of vars) assert.ok(maxAbsDiff(onOrt.grads[v.name].dataSync(), onTfjs.grads[v.name].dataSync()) < 1e-5, hfName(v));
    tf.dispose([onOrt.value, ...Object.values(onOrt.grads)]);
  } finally {
    await useOrtGemm(1);
  }
  tf.dispose([onTfjs.value, ...Object.values(onTfjs.grads)]);
  model.dispose();
});
