// AdamW (PyTorch semantics: decoupled weight decay), the learning-rate schedule and gradient clipping.
// Moments are float32 tensors beside each variable; their state can be saved and restored exactly.
import * as tf from '@tensorflow/tfjs';

export interface AdamWOptions {
  beta1?: number;
  beta2?: number;
  eps?: number;
  weightDecay?: number;
}

export class AdamW {
  readonly beta1: number;
  readonly beta2: number;
  readonly eps: number;
  readonly weightDecay: number;
  /** Updates taken so far (bias correction uses it). */
  step = 0;
  private readonly m = new Map<string, tf.Variable>();
  private readonly v = new Map<string, tf.Variable>();

  constructor(opts: AdamWOptions = {}) {
    this.beta1 = opts.beta1 ?? 0.9;
    this.beta2 = opts.beta2 ?? 0.999;
    this.eps = opts.eps ?? 1e-8;
    this.weightDecay = opts.weightDecay ?? 0;
  }

  /** One update of each variable with its gradient (keyed by variable name) at learning rate lr. */
  apply(vars: tf.Variable[], grads: Record<string, tf.Tensor>, lr: number): void {
    this.step += 1;
    const t = this.step;
    const c1 = 1 - this.beta1 ** t;
    const c2 = 1 - this.beta2 ** t;
    for (const p of vars) {
      const g = grads[p.name];
      if (!g) continue;
      if (!this.m.has(p.name)) {
        this.m.set(p.name, tf.variable(tf.zerosLike(p), false));
        this.v.set(p.name, tf.variable(tf.zerosLike(p), false));
      }
      const m = this.m.get(p.name)!;
      const v = this.v.get(p.name)!;
      tf.tidy(() => {
        m.assign(tf.add(tf.mul(m, this.beta1), tf.mul(g, 1 - this.beta1)));
        v.assign(tf.add(tf.mul(v, this.beta2), tf.mul(tf.square(g), 1 - this.beta2)));
        const update = tf.div(tf.div(m, c1), tf.add(tf.sqrt(tf.div(v, c2)), this.eps));
        const decayed = this.weightDecay ? tf.mul(p, 1 - lr * this.weightDecay) : p;
        p.assign(tf.sub(decayed, tf.mul(update, lr)));
      });
    }
  }

  /** Moments by variable name, for checkpoints. */
  state(): { step: number; m: Map<string, tf.Tensor>; v: Map<string, tf.Tensor> } {
    return { step: this.step, m: new Map(this.m), v: new Map(this.v) };
  }

  load(state: { step: number; m: Map<string, Float32Array>; v: Map<string, Float32Array> }, vars: tf.Variable[]): void {
    this.step = state.step;
    for (const p of vars) {
      const m = state.m.get(p.name);
      const v = state.v.get(p.name);
      if (!m || !v) continue;
      this.m.get(p.name)?.dispose();
      this.v.get(p.name)?.dispose();
      this.m.set(p.name, tf.variable(tf.tensor(m, p.shape), false));
      this.v.set(p.name, tf.variable(tf.tensor(v, p.shape), false));
    }
  }

  dispose(): void {
    for (const t of [...this.m.values(), ...this.v.values()]) t.dispose();
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
