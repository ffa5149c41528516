// The one matmul every model in the project uses.
//
// tfjs' built-in matMul gradient calls BatchMatMul with transpose flags, which the wasm backend runs
// ~20x slower than a plain product. This version's gradient transposes its operands explicitly and
// then multiplies without flags, so forward and backward both take the fast kernel.
import os from 'node:os';
import * as tf from '@tensorflow/tfjs';
import { OrtGemm } from './ort-gemm.ts';

/** ONNX Runtime's GEMM for large 2-D products (useOrtGemm), or null: tfjs does every product. */
let gemm: OrtGemm | null = null;

/**
 * Products of at least this many multiply-adds go to ONNX Runtime when it is on: below it, copying the
 * operands out of the wasm heap and the result back costs more than the faster arithmetic saves
 * (bench/matmul.ts --gemm measures both sides).
 */
export const ORT_GEMM_MIN_MACS = 1 << 24;
let gemmMinMacs = ORT_GEMM_MIN_MACS;

/**
 * Runs this thread's products of at least `minMacs` multiply-adds on ONNX Runtime's GEMM with `threads`
 * threads from now on (each rank its own; tests lower `minMacs` to send every product there).
 */
export async function useOrtGemm(threads: number, minMacs = ORT_GEMM_MIN_MACS): Promise<void> {
  gemmMinMacs = minMacs;
  if (gemm?.threads === threads) return;
  stopOrtGemm();
  gemm = await OrtGemm.start(threads);
}

/**
 * The recipe's runtime.gemm for this thread, one of `ranks` sharing this machine's cores: ORT's GEMM on the
 * wasm and cpu backends under auto (tfjs when it cannot load), always under ort, never under tfjs.
 */
export async function configureGemm(engine: 'auto' | 'ort' | 'tfjs', ranks: number, log?: (m: string) => void): Promise<void> {
  const on = engine === 'ort' || (engine === 'auto' && ['wasm', 'cpu'].includes(tf.getBackend()));
  if (!on) return stopOrtGemm();
  const threads = Math.max(1, Math.floor(os.availableParallelism() / Math.max(1, ranks)));
  try {
    await useOrtGemm(threads);
    log?.(`large matrix products: ONNX Runtime GEMM, ${threads} thread(s) per rank`);
    const d = gemm!.denormals;
    log?.(
      `subnormal floats on ONNX Runtime threads: ${d.flushing ? 'flushed to zero' : `not flushed, slower late in training (${d.reason})`}`,
    );
  } catch (e) {
    if (engine === 'ort') throw e;
    log?.(`large matrix products: tfjs (ONNX Runtime GEMM unavailable: ${e instanceof Error ? e.message : String(e)})`);
  }
}

export function stopOrtGemm(): void {
  gemm?.dispose();
  gemm = null;
}

/** This thread's ONNX Runtime worker when runtime.gemm put one up (the whole-step training graph runs there too). */
export function ortWorker(): OrtGemm | null {
  return gemm;
}

export function ortGemmThreads(): number | null {
  return gemm?.threads ?? null;
}

/**
 * Plain product of equal-rank operands: [..., M, K] x [..., K, N] -> [..., M, N] (batch dims must match).
 * A variable b (a weight) is read where it is in the backward pass rather than kept: keeping is a copy on
 * wasm, a copy of every weight at every use (every TTT step).
 */
const plainMatMul = tf.customGrad(((a: tf.Tensor, b: tf.Tensor, save: tf.GradSaveFunc) => {
  const weight = b instanceof tf.Variable;
  save(weight ? [a] : [a, b]);
  const value = product(a, b, false, false);
  return {
    value,
    gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
      const sa = saved[0];
      const sb = weight ? b : saved[1];
      return [product(dy, sb, false, true), product(sa, dy, true, false)]; // dA = dY B^T, dB = A^T dY
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

/**
 * op(x) op(y) of 2-D, or batched 3-D, x and y (op: a transpose of the last two axes where asked): on ONNX
 * Runtime when it is on and the product is large; else tfjs, with explicit transposes (wasm's flagged
 * matmul is slow) and large batch entries as separate 2-D products on wasm.
 */
function product(x: tf.Tensor, y: tf.Tensor, transA: boolean, transB: boolean): tf.Tensor {
  const [xr, xc] = x.shape.slice(-2) as [number, number];
  const [yr, yc] = y.shape.slice(-2) as [number, number];
  const [M, K, N] = [transA ? xc : xr, transA ? xr : xc, transB ? yr : yc];
  const G = x.rank === 3 ? x.shape[0] : 1;
  const outShape = x.rank === 3 ? [G, M, N] : [M, N];
  if (gemm && G * M * K * N >= gemmMinMacs) {
    // wasm's dataSync is a copy the GEMM worker may take over; other backends may hand out their own storage.
    // An int32 operand (a one-hot of ids) arrives as float32: ORT's Gemm takes float32 only.
    const read = (t: tf.Tensor) =>
      tf.getBackend() === 'wasm' && t.dtype === 'float32' ? (t.dataSync() as Float32Array) : Float32Array.from(t.dataSync());
    const { c } = gemm.product(read(x), x.shape, read(y), y.shape, transA, transB);
    return tf.tensor(c, outShape);
  }
  return tf.tidy(() => {
    const a = transA ? swapLast(x) : x;
    const b = transB ? swapLast(y) : y;
    if (a.rank === 2) return tf.matMul(a as tf.Tensor2D, b as tf.Tensor2D);
    if (tf.getBackend() !== 'wasm' || M * K * N < SPLIT_BATCH_MACS) return tf.matMul(a as tf.Tensor3D, b as tf.Tensor3D);
    const entry = (t: tf.Tensor, i: number) => t.slice([i, 0, 0], [1, t.shape[1]!, t.shape[2]!]).reshape(t.shape.slice(1)) as tf.Tensor2D;
    const ys = Array.from({ length: G }, (_, i) => tf.matMul(entry(a, i), entry(b, i)).reshape([1, M, N]));
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
