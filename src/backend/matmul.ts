// The one matmul every model in the project uses.
//
// tfjs' built-in matMul gradient calls BatchMatMul with transpose flags, which the wasm backend runs
// ~20x slower than a plain product. This version's gradient transposes its operands explicitly and
// then multiplies without flags, so forward and backward both take the fast kernel.
import * as tf from '@tensorflow/tfjs';

/**
 * Plain product of equal-rank operands: [..., M, K] x [..., K, N] -> [..., M, N] (batch dims must match).
 * A variable b (a weight) is read where it is in the backward pass rather than kept: keeping is a copy on
 * wasm, a copy of every weight at every use (every TTT step).
 */
const plainMatMul = tf.customGrad(((a: tf.Tensor, b: tf.Tensor, save: tf.GradSaveFunc) => {
  const weight = b instanceof tf.Variable;
  save(weight ? [a] : [a, b]);
  const value = batchedProduct(a, b);
  return {
    value,
    gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
      const sa = saved[0];
      const sb = weight ? b : saved[1];
      const da = batchedProduct(dy, swapLast(sb)); // dA = dY B^T
      const db = batchedProduct(swapLast(sa), dy); // dB = A^T dY
      return [da, db];
    },
  };
}) as unknown as Parameters<typeof tf.customGrad>[0]) as (a: tf.Tensor, b: tf.Tensor) => tf.Tensor;

function swapLast(x: tf.Tensor): tf.Tensor {
  const perm = x.shape.map((_, i) => i);
  perm[x.rank - 1] = x.rank - 2;
  perm[x.rank - 2] = x.rank - 1;
  return tf.transpose(x, perm);
}

/**
 * Batch entries of at least this many multiply-adds run as separate 2-D products: the wasm backend's
 * BatchMatMul is a generic kernel (about 2 GFLOP/s on this machine class), its 2-D product is XNNPACK's
 * (about 25); below this size the extra dispatches cost more than they save (bench/matmul.ts --batched).
 */
export const SPLIT_BATCH_MACS = 1 << 19;

function batchedProduct(a: tf.Tensor, b: tf.Tensor): tf.Tensor {
  if (a.rank === 2) return tf.matMul(a as tf.Tensor2D, b as tf.Tensor2D);
  const [G, M, K] = a.shape;
  const N = b.shape[2]!;
  if (tf.getBackend() !== 'wasm' || M * K * N < SPLIT_BATCH_MACS) return tf.matMul(a as tf.Tensor3D, b as tf.Tensor3D);
  return tf.tidy(() => {
    const entry = (x: tf.Tensor, i: number, rows: number, cols: number) =>
      x.slice([i, 0, 0], [1, rows, cols]).reshape([rows, cols]) as tf.Tensor2D;
    const ys = Array.from({ length: G }, (_, i) => tf.matMul(entry(a, i, M, K), entry(b, i, K, N)).reshape([1, M, N]));
    return G === 1 ? ys[0] : tf.concat(ys, 0);
  });
}

/**
 * a [..., M, K] times b [K, N] (a weight shared over the leading dims), or
 * a [B, M, K] times b [B, K, N] (batched). Leading dims of `a` are flattened for the shared case.
 */
export function matmul<R extends tf.Rank>(a: tf.Tensor<R>, b: tf.Tensor): tf.Tensor<R> {
  if (a.rank < 2 || b.rank < 2) throw new Error(`matmul: operands need rank >= 2, got ${a.rank} and ${b.rank}`);
  const K = a.shape[a.rank - 1]!;
  if (b.shape[b.rank - 2] !== K) {
    throw new Error(`matmul: inner dimensions differ: [${a.shape}] x [${b.shape}]`);
  }
  return tf.tidy(() => {
    if (b.rank === 2) {
      const N = b.shape[1]!;
      const lead = a.shape.slice(0, -1);
      const flat = a.rank === 2 ? a : a.reshape([-1, K]);
      const y = plainMatMul(flat, b);
      return (a.rank === 2 ? y : y.reshape([...lead, N])) as tf.Tensor<R>;
    }
    if (a.rank !== b.rank) throw new Error(`matmul: batched operands need equal rank, got [${a.shape}] x [${b.shape}]`);
    const batch = a.shape.slice(0, -2);
    const M = a.shape[a.rank - 2]!;
    const N = b.shape[b.rank - 1]!;
    const a3 = a.rank === 3 ? a : a.reshape([-1, M, K]);
    const b3 = b.rank === 3 ? b : b.reshape([-1, K, N]);
    const y = plainMatMul(a3, b3);
    return (a.rank === 3 ? y : y.reshape([...batch, M, N])) as tf.Tensor<R>;
  });
}

/** A linear layer with a weight stored as [in, out] (transposed from PyTorch's [out, in] at load time). */
export function linear<R extends tf.Rank>(x: tf.Tensor<R>, weightInOut: tf.Tensor2D, bias?: tf.Tensor1D): tf.Tensor<R> {
  const y = matmul(x, weightInOut);
  return bias ? tf.add(y, bias) : y;
}
