// Building blocks shared by the target runtime and the draft model.
import * as tf from '@tensorflow/tfjs';
import { matmul } from '../backend/matmul.ts';

/** RMSNorm over the last axis: x / sqrt(mean(x^2) + eps) * weight. */
export function rmsNorm<R extends tf.Rank>(x: tf.Tensor<R>, weight: tf.Tensor1D, eps: number): tf.Tensor<R> {
  return tf.tidy(() => {
    const meanSq = tf.mean(tf.square(x), -1, true);
    return tf.mul(tf.mul(x, tf.rsqrt(tf.add(meanSq, eps))), weight) as tf.Tensor<R>;
  });
}

export function silu<R extends tf.Rank>(x: tf.Tensor<R>): tf.Tensor<R> {
  return tf.tidy(() => tf.mul(x, tf.sigmoid(x)) as tf.Tensor<R>);
}

/**
 * cos and sin tables [B, 1, T, headDim] for the given positions, in HF's rotate_half layout (the two
 * halves repeat). Computed on the host: angle = fround(pos * invFreq) as PyTorch's float32 product, then
 * cos/sin in double precision, so that every backend sees the same table.
 */
export function ropeTables(positions: number[][], invFreq: Float32Array): { cos: tf.Tensor4D; sin: tf.Tensor4D } {
  const B = positions.length;
  const T = positions[0]?.length ?? 0;
  const half = invFreq.length;
  const hd = 2 * half;
  const cos = new Float32Array(B * T * hd);
  const sin = new Float32Array(B * T * hd);
  for (let b = 0; b < B; b++) {
    for (let t = 0; t < T; t++) {
      const base = (b * T + t) * hd;
      for (let i = 0; i < half; i++) {
        const angle = Math.fround(positions[b][t] * invFreq[i]);
        const c = Math.cos(angle);
        const s = Math.sin(angle);
        cos[base + i] = cos[base + half + i] = c;
        sin[base + i] = sin[base + half + i] = s;
      }
    }
  }
  return { cos: tf.tensor4d(cos, [B, 1, T, hd]), sin: tf.tensor4d(sin, [B, 1, T, hd]) };
}

/** Rotary embedding on x [B, heads, T, hd]: x*cos + rotate_half(x)*sin, rotate_half(x) = [-x2, x1]. */
export function applyRope(x: tf.Tensor4D, cos: tf.Tensor4D, sin: tf.Tensor4D): tf.Tensor4D {
  return tf.tidy(() => {
    const half = x.shape[3] / 2;
    const [x1, x2] = tf.split(x, [half, half], 3);
    const rotated = tf.concat([tf.neg(x2), x1], 3);
    return tf.add(tf.mul(x, cos), tf.mul(rotated, sin)) as tf.Tensor4D;
  });
}

/**
 * Grouped-query attention. q [B, H, Tq, hd]; k, v [B, kvH, S, hd]; bias [B, 1, Tq, S] additive
 * (0 where allowed, a large negative number elsewhere). Query head h reads kv head floor(h / (H / kvH)),
 * done by folding each kv head's group of query heads into its rows rather than copying k and v.
 * Returns [B, Tq, H * hd].
 */
export function groupedAttention(q: tf.Tensor4D, k: tf.Tensor4D, v: tf.Tensor4D, bias: tf.Tensor4D): tf.Tensor3D {
  return tf.tidy(() => {
    const [B, H, Tq, hd] = q.shape;
    const kvH = k.shape[1];
    const S = k.shape[2];
    const group = H / kvH;
    const qg = q.reshape([B * kvH, group * Tq, hd]);
    const kT = tf.transpose(k.reshape([B * kvH, S, hd]), [0, 2, 1]);
    const scores = tf.mul(matmul(qg, kT), 1 / Math.sqrt(hd)).reshape([B, H, Tq, S]);
    const probs = tf.softmax(tf.add(scores, bias));
    const out = matmul(probs.reshape([B * kvH, group * Tq, S]), v.reshape([B * kvH, S, hd]));
    return tf.transpose(out.reshape([B, H, Tq, hd]), [0, 2, 1, 3]).reshape([B, Tq, H * hd]) as tf.Tensor3D;
  });
}

/** Value used for disallowed attention entries: large enough to zero the softmax, finite so a fully masked row is not NaN. */
export const MASKED = -1e9;

/**
 * Embedding lookup whose gradient is a one-hot product. tfjs' own gather gradient needs
 * UnsortedSegmentSum, which the wasm backend lacks; onehot(ids)^T x dy runs on the fast matmul.
 */
export const embeddingLookup = tf.customGrad(((table: tf.Tensor2D, ids: tf.Tensor, save: tf.GradSaveFunc) => {
  save([ids]);
  const value = tf.gather(table, ids);
  return {
    value,
    gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
      const [V, H] = table.shape;
      const flatIds = saved[0].reshape([-1]) as tf.Tensor1D;
      const oneHotT = tf.transpose(tf.oneHot(flatIds, V)); // [V, N], transposed explicitly (see matmul.ts)
      const dTable = matmul(oneHotT, dy.reshape([-1, H]) as tf.Tensor2D);
      return [dTable, tf.zerosLike(saved[0])];
    },
  };
}) as unknown as Parameters<typeof tf.customGrad>[0]) as (table: tf.Tensor2D, ids: tf.Tensor) => tf.Tensor;

/**
 * Rows of a frozen table (columns with axis 1), recorded for autodiff as a function of the ids only. tfjs'
 * own gather keeps its input for the backward pass, and on wasm keeping is a copy: a vocabulary-sized
 * embedding copied at every TTT step. Nothing flows back into the table, so nothing of it is kept.
 */
export function frozenGather(table: tf.Tensor, ids: tf.Tensor, axis = 0): tf.Tensor {
  const f = tf.customGrad(((i: tf.Tensor) => ({
    value: tf.gather(table, i, axis),
    gradFunc: () => tf.zerosLike(i),
  })) as unknown as Parameters<typeof tf.customGrad>[0]) as (i: tf.Tensor) => tf.Tensor;
  return f(ids);
}
