// One rank of bench/scaling.ts: times fixed amounts of work after a barrier, so all ranks run at once.
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../src/backend/backend.ts';
import type { RankContext } from '../src/parallel/launch.ts';

export interface ScalingResult {
  /** Seconds per kernel, this rank. */
  seconds: Record<string, number>;
}

function timed(ctx: RankContext, fn: () => void): number {
  fn(); // warm-up
  ctx.collective.barrier();
  const t0 = performance.now();
  fn();
  return (performance.now() - t0) / 1000;
}

export async function runRank(ctx: RankContext): Promise<ScalingResult> {
  await initBackend('wasm');
  const a = tf.randomNormal([256, 256]) as tf.Tensor2D;
  const q = tf.randomNormal([64, 112, 24]) as tf.Tensor3D;
  const kT = tf.randomNormal([64, 24, 112]) as tf.Tensor3D;
  const seconds: Record<string, number> = {};
  // XNNPACK's fast product (batch 1), the slow batched kernel attention runs on, and plain JS arithmetic.
  seconds['wasm matmul 256^3 x400'] = timed(ctx, () => {
    for (let i = 0; i < 400; i++) tf.matMul(a, a).dataSync();
  });
  seconds['wasm batched matmul [64,112,24]x[64,24,112] x40'] = timed(ctx, () => {
    for (let i = 0; i < 40; i++) tf.matMul(q, kT).dataSync();
  });
  seconds['js float loop 1e9'] = timed(ctx, () => {
    let x = 1.0001;
    for (let i = 0; i < 1e9; i++) x = x * 0.9999999 + 1e-9;
    if (x === 42) console.log(x);
  });
  const buf = new Float32Array(1 << 24);
  seconds['memory sweep 64 MB x100'] = timed(ctx, () => {
    for (let r = 0; r < 100; r++) for (let i = 0; i < buf.length; i += 16) buf[i] += 1;
  });
  tf.dispose([a, q, kT]);
  return { seconds };
}
