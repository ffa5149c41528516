// The training-graph builder's gradients (src/train/graph/builder.ts) on small graphs run by ONNX Runtime,
// against plainly written float64 loops: a weight product at a narrow and at a wide (lm_head-like) output,
// broadcasting sums and products, a concat.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import * as ort from 'onnxruntime-node';
import { TrainGraph } from '../src/train/graph/builder.ts';
import { Rng } from '../src/util/random.ts';
import { maxAbsDiff } from './helpers.ts';

const rng = new Rng(5);
const rand = (n: number) => Float32Array.from(rng.normalArray(n, 1));

async function run(g: TrainGraph, feeds: Record<string, [Float32Array, number[]]>): Promise<Record<string, Float32Array>> {
  const s = await ort.InferenceSession.create(g.encode('test'));
  const out = await s.run(Object.fromEntries(Object.entries(feeds).map(([k, [d, dims]]) => [k, new ort.Tensor('float32', d, dims)])));
  return Object.fromEntries(Object.entries(out).map(([k, t]) => [k, t.data as Float32Array]));
}

for (const N of [6, 8192]) {
  test(`linear [B, T, K] x [K, ${N}]: value, dX = g W^T and dW = sum x^T g as plain loops`, async () => {
    const [B, T, K] = [2, 3, 4];
    const g = new TrainGraph();
    const x = g.input('x', ['B', 'T', K], { grad: true });
    const w = g.input('w', [K, N], { grad: true });
    const seed = g.input('seed', ['B', 'T', N]);
    const y = g.linear(x, w);
    g.output(g.named(y, 'y'));
    const [dx, dw] = g.backward([[y, seed]], [x, w]);
    g.output(g.named(dx!, 'dx'));
    g.output(g.named(dw!, 'dw'));
    const [xs, ws, gs] = [rand(B * T * K), rand(K * N), rand(B * T * N)];
    const out = await run(g, { x: [xs, [B, T, K]], w: [ws, [K, N]], seed: [gs, [B, T, N]] });
    const rows = B * T;
    // Summed in float64: the plain loops are the reference.
    const y0 = new Float64Array(rows * N);
    const dx0 = new Float64Array(rows * K);
    const dw0 = new Float64Array(K * N);
    for (let r = 0; r < rows; r++)
      for (let n = 0; n < N; n++)
        for (let k = 0; k < K; k++) {
          y0[r * N + n] += xs[r * K + k] * ws[k * N + n];
          dx0[r * K + k] += gs[r * N + n] * ws[k * N + n];
          dw0[k * N + n] += xs[r * K + k] * gs[r * N + n];
        }
    assert.ok(maxAbsDiff(out.y, y0) <= 1e-5, `y: ${maxAbsDiff(out.y, y0)}`);
    assert.ok(maxAbsDiff(out.dx, dx0) <= 1e-4, `dx: ${maxAbsDiff(out.dx, dx0)}`);
    assert.ok(maxAbsDiff(out.dw, dw0) <= 1e-5, `dw: ${maxAbsDiff(out.dw, dw0)}`);
  });
}

test('broadcasting: d(a * b + c) sums the gradient over the axes each operand was broadcast along; concat splits it back', async () => {
  const g = new TrainGraph();
  const a = g.input('a', ['B', 3, 4], { grad: true });
  const b = g.input('b', [4], { grad: true });
  const c = g.input('c', ['B', 1, 4], { grad: true });
  const d = g.input('d', ['B', 3, 2], { grad: true });
  const seed = g.input('seed', ['B', 3, 6]);
  const y = g.concat([g.add(g.mul(a, b), c), d], -1);
  const grads = g.backward([[y, seed]], [a, b, c, d]);
  ['da', 'db', 'dc', 'dd'].forEach((n, i) => g.output(g.named(grads[i]!, n)));
  const B = 2;
  const [as, bs, cs, ds, gs] = [rand(B * 12), rand(4), rand(B * 4), rand(B * 6), rand(B * 18)];
  const out = await run(g, { a: [as, [B, 3, 4]], b: [bs, [4]], c: [cs, [B, 1, 4]], d: [ds, [B, 3, 2]], seed: [gs, [B, 3, 6]] });
  const da = new Float32Array(B * 12);
  const db = new Float32Array(4);
  const dc = new Float32Array(B * 4);
  const dd = new Float32Array(B * 6);
  for (let i = 0; i < B; i++)
    for (let r = 0; r < 3; r++) {
      for (let k = 0; k < 4; k++) {
        const gy = gs[(i * 3 + r) * 6 + k];
        da[(i * 3 + r) * 4 + k] = gy * bs[k];
        db[k] += gy * as[(i * 3 + r) * 4 + k];
        dc[i * 4 + k] += gy;
      }
      for (let k = 0; k < 2; k++) dd[(i * 3 + r) * 2 + k] = gs[(i * 3 + r) * 6 + 4 + k];
    }
  for (const [name, want] of [
    ['da', da],
    ['db', db],
    ['dc', dc],
    ['dd', dd],
  ] as const)
    assert.ok(maxAbsDiff(out[name], want) <= 1e-5, `${name}: ${out[name]} vs ${want}`);
});

test('silu: the value a sigmoid(a) and its written-out gradient against the derivative as a plain loop', async () => {
  const n = 64;
  const g = new TrainGraph();
  const a = g.input('a', [n], { grad: true });
  const seed = g.input('seed', [n]);
  const y = g.silu(a);
  g.output(g.named(y, 'y'));
  const [da] = g.backward([[y, seed]], [a]);
  g.output(g.named(da!, 'da'));
  const as = Float32Array.from(rng.normalArray(n, 4)); // into both tails of the sigmoid
  const gs = rand(n);
  const out = await run(g, { a: [as, [n]], seed: [gs, [n]] });
  const sig = (x: number) => 1 / (1 + Math.exp(-x));
  // d/da a s(a) = s(a) + a s(a) (1 - s(a))
  const y0 = Array.from(as, (x) => x * sig(x));
  const da0 = Array.from(as, (x, i) => gs[i] * (sig(x) + x * sig(x) * (1 - sig(x))));
  assert.ok(maxAbsDiff(out.y, y0) < 1e-5, `value off by ${maxAbsDiff(out.y, y0)}`);
  assert.ok(maxAbsDiff(out.da, da0) < 1e-5, `gradient off by ${maxAbsDiff(out.da, da0)}`);
});
