// AdamW (PyTorch semantics: decoupled weight decay), the learning-rate schedule and gradient clipping.
// The moments are host Float32Arrays beside each variable (saved and restored exactly). The update is one
// fused pass over each weight instead of a dozen tensor ops, each a pass over memory and a fresh tensor: at
// a 30M-parameter draft those ops took 0.4-1 s a step. Every intermediate is rounded to float32 as the tensor
// ops rounded it, so the result is the op-by-op float32 update to the bit.
import * as tf from '@tensorflow/tfjs';

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

export class AdamW {
  readonly beta1: number;
  readonly beta2: number;
  readonly eps: number;
  readonly weightDecay: number;
  /** Updates taken so far (bias correction uses it). */
  step = 0;
  private readonly m = new Map<string, Float32Array>();
  private readonly v = new Map<string, Float32Array>();

  constructor(opts: AdamWOptions = {}) {
    this.beta1 = opts.beta1 ?? 0.9;
    this.beta2 = opts.beta2 ?? 0.999;
    this.eps = opts.eps ?? 1e-8;
    this.weightDecay = opts.weightDecay ?? 0;
  }

  /** One update of each variable with its gradient (keyed by variable name) at learning rate lr. */
  apply(vars: tf.Variable[], grads: Record<string, tf.Tensor>, lr: number): void {
    const params = vars
      .filter((p) => grads[p.name])
      .map((p) => ({
        v: p,
        name: p.name,
        p: Float32Array.from(p.dataSync() as Float32Array),
        g: grads[p.name].dataSync() as Float32Array,
      }));
    this.applyHost(params, lr);
    for (const { v, p } of params) v.assign(tf.tensor(p, v.shape));
  }

  /** The same update on host arrays, each gradient multiplied by gradScale first (a clipping factor; 1: as is). */
  applyHost(params: HostParam[], lr: number, gradScale = 1): void {
    this.step += 1;
    const t = this.step;
    // The constants as the tensor ops saw them: float32 scalars.
    const b1 = f(this.beta1);
    const b1c = f(1 - this.beta1);
    const b2 = f(this.beta2);
    const b2c = f(1 - this.beta2);
    const c1 = f(1 - this.beta1 ** t);
    const c2 = f(1 - this.beta2 ** t);
    const eps = f(this.eps);
    const rate = f(lr);
    const decay = this.weightDecay ? f(1 - lr * this.weightDecay) : 1;
    const scale = f(gradScale);
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
      for (let i = 0; i < p.length; i++) {
        const gi = scale === 1 ? g[i] : f(g[i] * scale);
        const mi = f(f(m[i] * b1) + f(gi * b1c));
        const vi = f(f(v[i] * b2) + f(f(gi * gi) * b2c));
        m[i] = mi;
        v[i] = vi;
        const update = f(f(mi / c1) / f(f(Math.sqrt(f(vi / c2))) + eps));
        p[i] = f((decay === 1 ? p[i] : f(p[i] * decay)) - f(update * rate));
      }
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
