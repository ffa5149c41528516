// The TTT step loss fused with the draft's lm_head, computed in row chunks: -(1/N) sum_t m_t sum_v p_tv
// log softmax(h_t W)_v. Written plainly, autodiff keeps [B, T, Vd] logits and their log-softmax for the
// backward pass of every TTT step: at T = 2048 and a 16k draft vocabulary that is 131 MB a tensor, several
// per step, seven steps, past the wasm heap. Here the backward pass recomputes each chunk's logits from h,
// so only h [B, T, H] is kept; the gradient is the closed form (softmax(z) * sum_v p - p) * m / N.
import * as tf from '@tensorflow/tfjs';
import { matmul } from '../backend/matmul.ts';

export interface SoftCrossEntropy {
  /** The loss, differentiable with respect to h and w. */
  loss: tf.Scalar;
  /** The draft's argmax per row [B][T] (for accuracies), from the same logits. */
  argmax: number[][];
}

/**
 * h [B, T, H] (the draft's normed output) and w [H, Vd] (its lm_head) against the teacher `probs`
 * [B, T, Vd] read `offset` rows ahead (TTT step i reads row t+i; rows past the end are zeros, and their
 * mask must be 0), with position weights mask [B, T], divided by `normaliser`; `chunkRows` rows at once.
 */
export function softCrossEntropy(
  h: tf.Tensor3D,
  w: tf.Tensor2D,
  probs: tf.Tensor3D,
  offset: number,
  mask: tf.Tensor2D,
  normaliser: number,
  chunkRows: number,
): SoftCrossEntropy {
  const [B, T, H] = h.shape;
  const Vd = w.shape[1];
  const N = B * T;
  const m2 = mask.reshape([N, 1]) as tf.Tensor2D;
  // Chunks stay within a sample, so the teacher rows of a chunk are one slice of it.
  const chunks: { b: number; t: number; at: number; n: number }[] = [];
  for (let b = 0; b < B; b++) for (let t = 0; t < T; t += chunkRows) chunks.push({ b, t, at: b * T + t, n: Math.min(chunkRows, T - t) });
  const argmax = new Int32Array(N);
  /** Teacher rows t+offset .. of sample b, zeros past the end. */
  const teacherRows = (p: tf.Tensor3D, b: number, t: number, n: number): tf.Tensor2D => {
    const have = Math.max(0, Math.min(n, T - t - offset));
    const rows = have > 0 ? p.slice([b, t + offset, 0], [1, have, Vd]).reshape([have, Vd]) : null;
    if (have === n) return rows as tf.Tensor2D;
    const pad = tf.zeros([n - have, Vd]);
    return (rows ? tf.concat([rows, pad], 0) : pad) as tf.Tensor2D;
  };

  const fused = tf.customGrad(((hIn: tf.Tensor, wIn: tf.Tensor, save: tf.GradSaveFunc) => {
    // Kept for the backward pass: h and the mask (small). Keeping is a copy on wasm, so the teacher and the
    // weight, which outlive the backward pass (the caller's and a variable), are read where they are.
    save([hIn, m2]);
    const h2 = hIn.reshape([N, H]) as tf.Tensor2D;
    // Summed per row on the backend, then over rows in float64 here: one float32 sum over every B*T*Vd
    // term drifts (about 1e-4 low at T 2048 with Vd 16000), and the logged loss is this value.
    let total = 0;
    for (const { b, t, at, n } of chunks) {
      const [rows, best] = tf.tidy(() => {
        const z = matmul(h2.slice([at, 0], [n, H]), wIn as tf.Tensor2D);
        const perRow = tf.sum(tf.mul(teacherRows(probs, b, t, n), tf.logSoftmax(z)), -1, true);
        return [tf.mul(m2.slice([at, 0], [n, 1]), perRow), tf.argMax(z, -1)];
      });
      argmax.set(best.dataSync() as Int32Array, at);
      for (const x of rows.dataSync()) total += x;
      tf.dispose([rows, best]);
    }
    const value = tf.scalar(-total / normaliser);
    h2.dispose();
    return {
      value,
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
        const [hs, ms] = saved as [tf.Tensor3D, tf.Tensor2D];
        const ws = wIn as tf.Tensor2D;
        const ps = probs;
        const hFlat = hs.reshape([N, H]) as tf.Tensor2D;
        const wT = tf.transpose(ws) as tf.Tensor2D; // explicit: wasm's transposed matmul is slow
        const scale = tf.div(dy, normaliser);
        const dh: tf.Tensor2D[] = [];
        let dw = tf.zeros([H, Vd]) as tf.Tensor2D;
        // One chunk's logits at a time: each tidy frees them before the next.
        for (const { b, t, at, n } of chunks) {
          const [dhc, next] = tf.tidy(() => {
            const hc = hFlat.slice([at, 0], [n, H]);
            const pc = teacherRows(ps, b, t, n);
            const z = matmul(hc, ws);
            // d/dz of -sum_v p log softmax(z) is softmax(z) * sum_v p - p; times the row weight and dy / N.
            const dz = tf.mul(tf.sub(tf.mul(tf.softmax(z), tf.sum(pc, -1, true)), pc), tf.mul(ms.slice([at, 0], [n, 1]), scale));
            return [matmul(dz, wT) as tf.Tensor2D, tf.add(dw, matmul(tf.transpose(hc), dz)) as tf.Tensor2D];
          });
          dh.push(dhc);
          dw.dispose();
          dw = next;
        }
        const dhAll = tf.concat(dh, 0).reshape([B, T, H]);
        tf.dispose([...dh, hFlat, wT, scale]);
        return [dhAll, dw];
      },
    };
  }) as unknown as Parameters<typeof tf.customGrad>[0]) as (a: tf.Tensor, b: tf.Tensor) => tf.Tensor;

  const loss = fused(h, w) as tf.Scalar;
  m2.dispose();
  return { loss, argmax: Array.from({ length: B }, (_, b) => Array.from(argmax.subarray(b * T, (b + 1) * T))) };
}
