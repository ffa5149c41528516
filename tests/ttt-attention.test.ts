// The TTT attention in query chunks with its written-out gradient equals the plain form under autodiff:
// outputs and the gradients of q and of every step's keys and values (GQA, diagonal steps, a padded mask).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../src/backend/backend.ts';
import { type StepKV, tttAttention } from '../src/draft/eagle3.ts';
import { MASKED } from '../src/nn/layers.ts';
import { chunkedTttAttention } from '../src/train/ttt-attention.ts';
import { Rng } from '../src/util/random.ts';

await initBackend('cpu');

const maxAbsDiff = (a: ArrayLike<number>, b: ArrayLike<number>) => {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
};

for (const steps of [1, 3]) {
  test(`chunked TTT attention equals the plain one, ${steps} step(s): output and every gradient, chunks of 1, 3 and 7 rows`, () => {
    const [B, H, kvH, T, hd] = [2, 6, 2, 7, 4];
    const rng = new Rng(steps);
    const q = tf.tensor4d(rng.normalArray(B * H * T * hd, 1), [B, H, T, hd]);
    const kvs: StepKV[] = Array.from({ length: steps }, () => ({
      k: tf.tensor4d(rng.normalArray(B * kvH * T * hd, 1), [B, kvH, T, hd]),
      v: tf.tensor4d(rng.normalArray(B * kvH * T * hd, 1), [B, kvH, T, hd]),
    }));
    const bias = new Float32Array(T * T);
    for (let i = 0; i < T; i++) for (let j = i + 1; j < T; j++) bias[i * T + j] = MASKED;
    const causal = tf.tensor4d(bias, [1, 1, T, T]);
    const w = tf.tensor3d(rng.normalArray(B * T * H * hd, 1), [B, T, H * hd]); // a random downstream weight
    const inputs = [q, ...kvs.flatMap(({ k, v }) => [k, v])];
    const run = (rows: number) => {
      const f = (...xs: tf.Tensor[]) => {
        const qq = xs[0] as tf.Tensor4D;
        const kk = kvs.map((_, j) => ({ k: xs[1 + 2 * j] as tf.Tensor4D, v: xs[2 + 2 * j] as tf.Tensor4D }));
        const out = rows ? chunkedTttAttention(qq, kk, causal, rows) : tttAttention(qq, kk, causal);
        return tf.sum(tf.mul(out, w)) as tf.Scalar;
      };
      const { value, grads } = tf.valueAndGrads(f)(inputs);
      const out = rows ? chunkedTttAttention(q, kvs, causal, rows) : tttAttention(q, kvs, causal);
      const res = { value: value.dataSync()[0], out: out.dataSync(), grads: grads.map((g) => g.dataSync()) };
      tf.dispose([value, out, ...grads]);
      return res;
    };
    const plain = run(0);
    for (const rows of [1, 3, 7]) {
      const before = tf.memory().numTensors;
      const got = run(rows);
      assert.equal(tf.memory().numTensors, before, `rows ${rows}: no tensor leaks`);
      assert.ok(maxAbsDiff(got.out, plain.out) < 1e-5, `rows ${rows}: output`);
      assert.ok(Math.abs(got.value - plain.value) < 1e-4);
      got.grads.forEach((g, i) => assert.ok(maxAbsDiff(g, plain.grads[i]) < 1e-5, `rows ${rows}: gradient of input ${i}`));
    }
    tf.dispose([...inputs, causal, w]);
  });
}
