// Language-model loss, batching, the optimizer and the schedule, against plain references.
import assert from 'node:assert/strict';
import { before, test } from 'node:test';
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../src/backend/backend.ts';
import { parseModelConfig } from '../src/io/hf-config.ts';
import { TfjsTarget } from '../src/target/tfjs-target.ts';
import { collate, lengthBucketedBatches, lmLoss, shardBatch } from '../src/tiny/lm.ts';
import { AdamW, adamwKernel, clipByGlobalNorm, learningRate } from '../src/train/optimizer.ts';
import { Rng } from '../src/util/random.ts';
import { mapSource, randomWeights } from './helpers.ts';
import { plainForward } from './reference/plain-target.ts';

before(async () => {
  await initBackend('wasm');
});

const raw = {
  architectures: ['LlamaForCausalLM'],
  hidden_size: 16,
  intermediate_size: 24,
  num_hidden_layers: 2,
  num_attention_heads: 2,
  num_key_value_heads: 1,
  vocab_size: 20,
};

test('lmLoss equals a plain masked next-token cross-entropy', () => {
  const config = parseModelConfig(raw);
  const weights = randomWeights(config, 4);
  const model = TfjsTarget.fromWeights(config, mapSource(weights));
  const samples = [
    { ids: [1, 5, 7, 2, 9, 11], lossMask: [0, 0, 1, 1, 0, 1] },
    { ids: [3, 4, 8], lossMask: [0, 1, 1] },
  ];
  const batch = collate(samples, 0);
  let nll = 0;
  let n = 0;
  for (const s of samples) {
    const logits = plainForward(raw, weights as never, s.ids).logits;
    for (let t = 1; t < s.ids.length; t++) {
      if (!s.lossMask[t]) continue;
      const row = Array.from(logits.subarray((t - 1) * 20, t * 20));
      const max = Math.max(...row);
      const lse = max + Math.log(row.reduce((a, x) => a + Math.exp(x - max), 0));
      nll += lse - row[s.ids[t]];
      n++;
    }
  }
  assert.equal(batch.tokens, n);
  const loss = lmLoss(model, batch);
  assert.ok(Math.abs(loss.dataSync()[0] - nll / n) < 1e-5, `${loss.dataSync()[0]} vs ${nll / n}`);
  // Shards divided by the global count add up to the whole batch's loss.
  const a = lmLoss(model, shardBatch(batch, 0, 2), batch.tokens).dataSync()[0];
  const b = lmLoss(model, shardBatch(batch, 1, 2), batch.tokens).dataSync()[0];
  assert.ok(Math.abs(a + b - nll / n) < 1e-5);
  tf.dispose(loss);
  model.dispose();
});

test('length-bucketed batches cover each sample once per epoch and are deterministic', () => {
  const rng = new Rng(1);
  const samples = Array.from({ length: 100 }, (_, i) => ({
    ids: Array.from({ length: 1 + rng.int(30) }, () => i),
    lossMask: [] as number[],
  }));
  samples.forEach((s) => (s.lossMask = s.ids.map(() => 1)));
  const a = lengthBucketedBatches(samples, 8, -1, new Rng(5));
  const b = lengthBucketedBatches(samples, 8, -1, new Rng(5));
  assert.deepEqual(a, b);
  assert.equal(a.length, 12); // 100 / 8, remainder dropped
  const seen = a.flatMap((batch) => batch.ids.map((row) => row[0]));
  assert.equal(new Set(seen).size, 96);
});

test('AdamW matches a plain implementation of PyTorch AdamW', () => {
  const p0 = [0.5, -1.2, 2.0];
  const gradsAt = (step: number) => [0.1 * step - 0.2, 0.3, -0.05 * step];
  const opts = { beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1 };
  const lr = 0.01;
  // Plain reference.
  const ref = [...p0];
  const m = [0, 0, 0];
  const v = [0, 0, 0];
  for (let t = 1; t <= 5; t++) {
    const g = gradsAt(t);
    for (let i = 0; i < 3; i++) {
      ref[i] *= 1 - lr * opts.weightDecay;
      m[i] = opts.beta1 * m[i] + (1 - opts.beta1) * g[i];
      v[i] = opts.beta2 * v[i] + (1 - opts.beta2) * g[i] * g[i];
      ref[i] -= (lr * (m[i] / (1 - opts.beta1 ** t))) / (Math.sqrt(v[i] / (1 - opts.beta2 ** t)) + opts.eps);
    }
  }
  const p = tf.variable(tf.tensor1d(p0), true, 'adamw-test-p');
  const opt = new AdamW(opts);
  for (let t = 1; t <= 5; t++) {
    const g = tf.tensor1d(gradsAt(t));
    opt.apply([p], { [p.name]: g }, lr);
    g.dispose();
  }
  const got = Array.from(p.dataSync());
  got.forEach((x, i) => assert.ok(Math.abs(x - ref[i]) < 1e-6, `param ${i}: ${x} vs ${ref[i]}`));
  opt.dispose();
  p.dispose();
});

for (const kernel of ['wasm', 'js'] as const)
  test(`the fused host AdamW (${kernel} kernel) is, to the bit, the float32 update written as tensor ops (with a clipping factor)`, () => {
    // The reference is AdamW as a sequence of float32 tensor ops, each rounding its result: what the fused pass
    // claims to reproduce exactly. Tiny gradients, large ones and zeros exercise the rounding at both ends; the
    // length spans several of the WebAssembly kernel's blocks and a tail of n mod 4.
    if (kernel === 'wasm') assert.equal(adamwKernel(), 'wasm', 'the WebAssembly SIMD kernel loads on Node.js 20');
    const rng = new Rng(7);
    const n = 2 * 16384 + 4099;
    const opts = { beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.01 };
    const p0 = Float32Array.from(rng.normalArray(n));
    const gradsAt = (t: number) => Float32Array.from(rng.normalArray(n), (x, i) => (i % 97 === 0 ? 0 : x * 10 ** ((i % 7) - 4 + t / 3)));
    const m = tf.variable(tf.zeros([n]), false);
    const v = tf.variable(tf.zeros([n]), false);
    const p = tf.variable(tf.tensor1d(p0), false);
    const host = Float32Array.from(p0);
    const opt = new AdamW({ ...opts, kernel: kernel === 'js' ? 'js' : 'auto' });
    for (let t = 1; t <= 6; t++) {
      const gHost = gradsAt(t);
      const lr = 0.003 * t;
      const scale = t % 2 ? 0.37 / (t + 0.1) : 1;
      tf.tidy(() => {
        const g = scale === 1 ? tf.tensor1d(gHost) : tf.mul(tf.tensor1d(gHost), scale);
        m.assign(tf.add(tf.mul(m, opts.beta1), tf.mul(g, 1 - opts.beta1)));
        v.assign(tf.add(tf.mul(v, opts.beta2), tf.mul(tf.square(g), 1 - opts.beta2)));
        const update = tf.div(tf.div(m, 1 - opts.beta1 ** t), tf.add(tf.sqrt(tf.div(v, 1 - opts.beta2 ** t)), opts.eps));
        p.assign(tf.sub(tf.mul(p, 1 - lr * opts.weightDecay), tf.mul(update, lr)));
      });
      opt.applyHost([{ name: 'w', p: host, g: gHost }], lr, scale);
    }
    const want = p.dataSync() as Float32Array;
    const differ = host.findIndex((x, i) => !Object.is(x, want[i]));
    assert.equal(differ, -1, `weight ${differ}: ${host[differ]} vs ${want[differ]}`);
    const moments = opt.state();
    assert.deepEqual(moments.m.get('w'), m.dataSync());
    assert.deepEqual(moments.v.get('w'), v.dataSync());
    tf.dispose([m, v, p]);
  });

test('schedule: linear warmup, cosine to the floor', () => {
  const s = { lr: 1, warmupSteps: 4, totalSteps: 14, minLrRatio: 0.1 };
  assert.deepEqual(
    [0, 1, 2, 3].map((i) => learningRate(i, s)),
    [0.25, 0.5, 0.75, 1],
  );
  assert.ok(Math.abs(learningRate(9, s) - (0.1 + 0.9 * 0.5)) < 1e-12, 'halfway down the cosine');
  assert.ok(Math.abs(learningRate(14, s) - 0.1) < 1e-12);
  assert.ok(Math.abs(learningRate(100, s) - 0.1) < 1e-12, 'stays at the floor');
});

test('clipByGlobalNorm scales every gradient by maxNorm / global norm', () => {
  const g = { a: tf.tensor1d([3, 0]), b: tf.tensor1d([0, 4]) };
  const { grads, norm } = clipByGlobalNorm(g, 1);
  assert.ok(Math.abs(norm - 5) < 1e-6);
  assert.ok(Math.abs(grads.a.dataSync()[0] - 0.6) < 1e-5 && Math.abs(grads.b.dataSync()[1] - 0.8) < 1e-5);
  const small = { a: tf.tensor1d([0.1]) };
  assert.equal(clipByGlobalNorm(small, 1).grads, small, 'under the limit: untouched');
});
