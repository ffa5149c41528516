// AdamW (PyTorch semantics: decoupled weight decay), the learning-rate schedule and gradient clipping.
// The moments are host Float32Arrays beside each variable (saved and restored exactly). The update is one
// fused pass over each weight instead of a dozen tensor ops, each a pass over memory and a fresh tensor: at
// a 30M-parameter draft those ops took 0.4-1 s a step. Every intermediate is rounded to float32 as the tensor
// ops rounded it, so the result is the op-by-op float32 update to the bit. The pass runs as a WebAssembly
// SIMD kernel (adamw.wat), four weights an instruction; plain JavaScript, where every float32 rounding is a
// Math.fround, is the fallback and several times slower.
import * as tf from '@tensorflow/tfjs';
import { ADAMW_WASM } from './adamw-wasm.ts';

export interface AdamWOptions {
  beta1?: number;
  beta2?: number;
  eps?: number;
  weightDecay?: number;
}

/** A weight, its gradient and its name (the key of its moments) for one update on host arrays. */
export interface HostParam {
  name: string;
  /** Updated in place. */
  p: Float32Array;
  g: Float32Array;
}

const f = Math.fround;

/** The update's float32 constants: see adamw.wat for where each goes. */
interface Constants {
  b1: number;
  b1c: number;
  b2: number;
  b2c: number;
  c1: number;
  c2: number;
  eps: number;
  rate: number;
  decay: number;
  scale: number;
}

/** Updates p, m and v in place from g. */
type Kernel = (p: Float32Array, g: Float32Array, m: Float32Array, v: Float32Array, k: Constants) => void;

const jsKernel: Kernel = (p, g, m, v, k) => {
  for (let i = 0; i < p.length; i++) {
    const gi = f(g[i] * k.scale);
    const mi = f(f(m[i] * k.b1) + f(gi * k.b1c));
    const vi = f(f(v[i] * k.b2) + f(f(gi * gi) * k.b2c));
    m[i] = mi;
    v[i] = vi;
    const update = f(f(mi / k.c1) / f(f(Math.sqrt(f(vi / k.c2))) + k.eps));
    p[i] = f(f(p[i] * k.decay) - f(update * k.rate));
  }
};

/**
 * The WebAssembly kernel, or null where it cannot load (no SIMD). Weights pass through the module's memory
 * in blocks of one 64 KiB page per array, small enough to stay in cache between the copies and the kernel.
 */
function wasmKernel(): Kernel | null {
  let exports: WebAssembly.Exports;
  try {
    exports = new WebAssembly.Instance(new WebAssembly.Module(Buffer.from(ADAMW_WASM, 'base64'))).exports;
  } catch {
    return null;
  }
  const BLOCK = 16384;
  const memory = exports.memory as WebAssembly.Memory;
  memory.grow(4 - memory.buffer.byteLength / 65536);
  const [P, G, M, V] = [0, 1, 2, 3].map((k) => new Float32Array(memory.buffer, k * 4 * BLOCK, BLOCK));
  const adamw = exports.adamw as (...args: number[]) => void;
  return (p, g, m, v, k) => {
    for (let s = 0; s < p.length; s += BLOCK) {
      const e = Math.min(p.length, s + BLOCK);
      P.set(p.subarray(s, e));
      G.set(g.subarray(s, e));
      M.set(m.subarray(s, e));
      V.set(v.subarray(s, e));
      adamw(0, 4 * BLOCK, 8 * BLOCK, 12 * BLOCK, e - s, k.b1, k.b1c, k.b2, k.b2c, k.c1, k.c2, k.eps, k.rate, k.decay, k.scale);
      p.set(P.subarray(0, e - s), s);
      m.set(M.subarray(0, e - s), s);
      v.set(V.subarray(0, e - s), s);
    }
  };
}

let loaded: Kernel | null | undefined;
/** The kernel AdamW runs: 'wasm' where it loads, else 'js'. */
export function adamwKernel(): 'wasm' | 'js' {
  loaded ??= wasmKernel();
  return loaded ? 'wasm' : 'js';
}

export class AdamW {
  readonly beta1: number;
  readonly beta2: number;
  readonly eps: number;
  readonly weightDecay: number;
  /** Updates taken so far (bias correction uses it). */
  step = 0;
  private readonly m = new Map<string, Float32Array>();
  private readonly v = new Map<string, Float32Array>();

  private readonly kernel: Kernel;

  /** `kernel`: 'js' forces the plain JavaScript pass (the tests compare the two). */
  constructor(opts: AdamWOptions & { kernel?: 'auto' | 'js' } = {}) {
    this.kernel = opts.kernel !== 'js' && adamwKernel() === 'wasm' ? loaded! : jsKernel;
    this.beta1 = opts.beta1 ?? 0.9;
    this.beta2 = opts.beta2 ?? 0.999;
    this.eps = opts.eps ?? 1e-8;
    this.weightDecay = opts.weightDecay ?? 0;
  }

  /**
   * One update of each variable with its gradient (keyed by variable name; a tensor or host values) at learning
   * rate lr, each gradient multiplied by gradScale first (a clipping factor; 1: as is).
   */
  apply(vars: tf.Variable[], grads: Record<string, tf.Tensor | Float32Array>, lr: number, gradScale = 1): void {
    const params = vars
      .filter((p) => grads[p.name])
      .map((p) => {
        const g = grads[p.name];
        return {
          v: p,
          name: p.name,
          p: Float32Array.from(p.dataSync() as Float32Array),
          g: g instanceof Float32Array ? g : (g.dataSync() as Float32Array),
        };
      });
    this.applyHost(params, lr, gradScale);
    // In a tidy: the tensor made for the assign would otherwise outlive it (one weight-sized leak a step).
    for (const { v, p } of params) tf.tidy(() => v.assign(tf.tensor(p, v.shape)));
  }

  /** The same update on host arrays, each gradient multiplied by gradScale first (a clipping factor; 1: as is). */
  applyHost(params: HostParam[], lr: number, gradScale = 1): void {
    this.step += 1;
    const t = this.step;
    // The constants as the tensor ops saw them: float32 scalars. Multiplying by a decay or scale of 1 changes
    // nothing, so the kernel always multiplies.
    const k: Constants = {
      b1: f(this.beta1),
      b1c: f(1 - this.beta1),
      b2: f(this.beta2),
      b2c: f(1 - this.beta2),
      c1: f(1 - this.beta1 ** t),
      c2: f(1 - this.beta2 ** t),
      eps: f(this.eps),
      rate: f(lr),
      decay: this.weightDecay ? f(1 - lr * this.weightDecay) : 1,
      scale: f(gradScale),
    };
    for (const { name, p, g } of params) {
      if (g.length !== p.length) throw new Error(`AdamW: '${name}' has ${p.length} weights but ${g.length} gradients`);
      let m = this.m.get(name);
      let v = this.v.get(name);
      if (!m || !v) {
        m = new Float32Array(p.length);
        v = new Float32Array(p.length);
        this.m.set(name, m);
        this.v.set(name, v);
      }
      this.kernel(p, g, m, v, k);
    }
  }

  /** Moments by variable name, for checkpoints (the live arrays: copy before changing them). */
  state(): { step: number; m: Map<string, Float32Array>; v: Map<string, Float32Array> } {
    return { step: this.step, m: new Map(this.m), v: new Map(this.v) };
  }

  load(state: { step: number; m: Map<string, Float32Array>; v: Map<string, Float32Array> }, vars: tf.Variable[]): void {
    this.step = state.step;
    for (const p of vars) {
      const m = state.m.get(p.name);
      const v = state.v.get(p.name);
      if (!m || !v) continue;
      this.m.set(p.name, Float32Array.from(m));
      this.v.set(p.name, Float32Array.from(v));
    }
  }

  dispose(): void {
    this.m.clear();
    this.v.clear();
  }
}

export interface Schedule {
  lr: number;
  warmupSteps: number;
  totalSteps: number;
  /** Floor of the cosine as a fraction of lr (0 in SpecForge). */
  minLrRatio?: number;
}

/** Linear warmup from 0 to lr over warmupSteps, then cosine down to minLrRatio*lr at totalSteps. `step` is 0-based. */
export function learningRate(step: number, s: Schedule): number {
  const floor = (s.minLrRatio ?? 0) * s.lr;
  if (s.warmupSteps > 0 && step < s.warmupSteps) return (s.lr * (step + 1)) / s.warmupSteps;
  const span = Math.max(1, s.totalSteps - s.warmupSteps);
  const progress = Math.min(1, (step - s.warmupSteps) / span);
  return floor + (s.lr - floor) * 0.5 * (1 + Math.cos(Math.PI * progress));
}

/** Scales all gradients so that their global L2 norm is at most maxNorm (as torch.nn.utils.clip_grad_norm_). Returns the norm before clipping. */
export function clipByGlobalNorm(grads: Record<string, tf.Tensor>, maxNorm: number): { grads: Record<string, tf.Tensor>; norm: number } {
  const names = Object.keys(grads);
  const norm = Math.sqrt(tf.tidy(() => tf.addN(names.map((n) => tf.sum(tf.square(grads[n])))).dataSync()[0]));
  if (!(maxNorm > 0) || norm <= maxNorm) return { grads, norm };
  const scale = maxNorm / (norm + 1e-6);
  const clipped: Record<string, tf.Tensor> = {};
  for (const n of names) {
    clipped[n] = tf.mul(grads[n], scale);
    grads[n].dispose();
  }
  return { grads: clipped, norm };
}
