// Matmul throughput per backend, and the cost of tfjs' default matmul gradient on wasm.
// and batched products (attention) through wasm's BatchMatMul against the project's matmul.
// Usage: npm run bench:matmul [-- --runs 5]
// Prints medians over runs; the machine is shared, so single timings mislead.
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../src/backend/backend.ts';
import { matmul } from '../src/backend/matmul.ts';

const runs = Number(process.argv[process.argv.indexOf('--runs') + 1]) || 5;

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

async function time(fn: () => tf.Tensor | tf.Tensor[], reps: number): Promise<number> {
  const warm = fn();
  await Promise.all([warm].flat().map((t) => t.data()));
  tf.dispose(warm);
  const ms: number[] = [];
  for (let r = 0; r < reps; r++) {
    const t0 = performance.now();
    const out = fn();
    await Promise.all([out].flat().map((t) => t.data())); // force completion
    ms.push(performance.now() - t0);
    tf.dispose(out);
  }
  return median(ms);
}

async function gflops(backend: 'wasm' | 'cpu', n: number): Promise<number> {
  await initBackend(backend);
  const a = tf.randomNormal([n, n]);
  const b = tf.randomNormal([n, n]);
  const ms = await time(() => tf.matMul(a, b), runs);
  tf.dispose([a, b]);
  return (2 * n ** 3) / (ms / 1000) / 1e9;
}

/** One forward+backward of logits = x W with softmax cross-entropy: an lm_head-sized step. */
async function projectionStep(useCustom: boolean): Promise<number> {
  await initBackend('wasm');
  const [M, K, N] = [1024, 512, 8000];
  const x = tf.randomNormal([M, K]);
  const w = tf.variable(tf.randomNormal([K, N], 0, 0.02));
  const labels = tf.oneHot(tf.randomUniform([M], 0, N, 'int32'), N);
  const mm = useCustom
    ? (a: tf.Tensor, b: tf.Tensor) => matmul(a as tf.Tensor2D, b)
    : (a: tf.Tensor, b: tf.Tensor) => tf.matMul(a as tf.Tensor2D, b as tf.Tensor2D);
  const step = () => {
    const { value, grads } = tf.variableGrads(() => tf.losses.softmaxCrossEntropy(labels, mm(x, w)) as tf.Scalar, [w]);
    return [value, grads[w.name]];
  };
  const ms = await time(step, runs);
  tf.dispose([x, w, labels]);
  return ms;
}

const rows: [string, string][] = [];
for (const n of [256, 512, 1024]) rows.push([`wasm matmul ${n}^3`, `${(await gflops('wasm', n)).toFixed(1)} GFLOP/s`]);
for (const n of [256, 512]) rows.push([`cpu matmul ${n}^3`, `${(await gflops('cpu', n)).toFixed(2)} GFLOP/s`]);
/** Batched [G, M, K] x [G, K, N]: wasm's BatchMatMul kernel against project matmul (2-D products per entry when large). */
async function batched(G: number, M: number, K: number, N: number): Promise<[number, number]> {
  await initBackend('wasm');
  const a = tf.randomNormal([G, M, K]) as tf.Tensor3D;
  const b = tf.randomNormal([G, K, N]) as tf.Tensor3D;
  const flops = (2 * G * M * K * N) / 1e9;
  const kernel = flops / ((await time(() => tf.matMul(a, b), runs)) / 1000);
  const ours = flops / ((await time(() => matmul(a, b), runs)) / 1000);
  tf.dispose([a, b]);
  return [kernel, ours];
}
// Attention shapes: the quickstart draft's, and a Qwen3-0.6B draft's TTT attention chunk (8 kv groups, 2 x 128 queries, T 2048).
for (const [G, M, K, N] of [
  [16, 64, 16, 64],
  [16, 256, 16, 256],
  [8, 256, 128, 2048],
  [8, 2048, 256, 128],
]) {
  const [kernel, ours] = await batched(G, M, K, N);
  rows.push([
    `wasm batched [${G}x${M}x${K}]x[${G}x${K}x${N}]: BatchMatMul / project matmul`,
    `${kernel.toFixed(1)} / ${ours.toFixed(1)} GFLOP/s`,
  ]);
}
const custom = await projectionStep(true);
const builtin = await projectionStep(false);
rows.push(['wasm fwd+bwd [1024x512]x[512x8000] + softmax CE, custom-gradient matmul', `${custom.toFixed(0)} ms`]);
rows.push(['wasm fwd+bwd [1024x512]x[512x8000] + softmax CE, tf.matMul gradient', `${builtin.toFixed(0)} ms`]);
rows.push(['speedup of the custom gradient', `${(builtin / custom).toFixed(1)}x`]);
console.log(`median of ${runs} runs`);
for (const [k, v] of rows) console.log(`${k.padEnd(76)} ${v}`);
