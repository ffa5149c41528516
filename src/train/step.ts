// One optimisation step of data-parallel training. Each rank runs its share of every micro-batch through
// the draft in chunks (src/train/chunks.ts), summing the gradients over chunks and accumulation_steps
// micro-batches; the step then all-reduces them (mean over ranks), clips them to max_grad_norm and
// applies the same AdamW update on every rank, so the replicas stay identical.
import os from 'node:os';
import * as tf from '@tensorflow/tfjs';
import { ortWorker } from '../backend/matmul.ts';
import { backendLimit } from '../backend/memory.ts';
import type { Collective } from '../parallel/collective.ts';
import type { Recipe } from '../recipe/recipe.ts';
import { signalBatch, signalLosses, signalMaskCounts } from '../specexit/loss.ts';
import type { FeatureSample } from '../store/feature-source.ts';
import { planChunks } from './chunks.ts';
import { collateFeatures, type TrainingModel } from './collate.ts';
import { BatchSums } from './metrics.ts';
import { HostWeights } from './host-weights.ts';
import { PhaseTimes } from './phases.ts';
import type { AdamW, Schedule } from './optimizer.ts';
import { OrtTttStep } from './ort-step.ts';
import { prepareTeacher, stepAccuracies, tttForward, tttGradients } from './ttt.ts';

type Divisors = [number, number, number];

/** The run's optimizer steps (max_steps, or num_epochs of full steps) and its learning-rate schedule. */
export function stepSchedule(r: Recipe, trainSamples: number, worldSize: number): Schedule {
  const t = r.training;
  const microPerEpoch = Math.floor(Math.floor(trainSamples / worldSize) / t.batch_size);
  const stepsPerEpoch = Math.floor(microPerEpoch / t.accumulation_steps);
  if (stepsPerEpoch < 1)
    throw new Error(
      `${r.file}: ${trainSamples} training samples make no full optimizer step of ${t.batch_size} x ${t.accumulation_steps} on ${worldSize} rank(s)`,
    );
  const totalSteps = t.max_steps ?? stepsPerEpoch * t.num_epochs;
  return { lr: t.learning_rate, warmupSteps: Math.round(t.warmup_ratio * totalSteps), totalSteps };
}

export class OptimizerStep {
  private readonly vars: tf.Variable[];
  private readonly t: Recipe['training'];
  private micro = 0;
  /**
   * Every variable's gradient, summed over the step's micro-batches so far, flattened for the all-reduce. The
   * gradients stay on the host from here to the update: AdamW reads them where the all-reduce left them.
   */
  private readonly flat: Float32Array;
  /** Where each variable's gradient starts in `flat`, by variable name. */
  private readonly offsets = new Map<string, number>();
  /** Variables whose gradient in `flat` holds this step's values so far; the others' are stale. */
  private readonly written = new Set<string>();
  /** The weights as host arrays, which the step graph reads and AdamW updates in place. */
  private readonly weights = new HostWeights();
  /** The longest sample of each rank's share (one slot per rank) and the SpecExit mask counts (summed). */
  private readonly shared: Float32Array;
  /** Wall time per phase over every step so far. */
  readonly phases = new PhaseTimes();
  /** The TTT loss and gradients as one ONNX Runtime graph (runtime.train_step), or null: tfjs ops. */
  readonly ortStep: OrtTttStep | null;

  constructor(
    private readonly m: TrainingModel,
    private readonly opt: AdamW,
    private readonly collective: Collective,
    r: Recipe,
  ) {
    this.t = r.training;
    this.vars = m.draft.variables();
    let size = 0;
    for (const v of this.vars) {
      this.offsets.set(v.name, size);
      size += v.size;
    }
    this.flat = new Float32Array(size);
    this.shared = new Float32Array(collective.worldSize + 3);
    const engine = r.runtime.train_step;
    const worker = ortWorker();
    if (engine === 'ort' && !worker)
      throw new Error(`${r.file}: runtime.train_step is ort, but no ONNX Runtime worker is up (set runtime.gemm to auto or ort)`);
    this.ortStep = engine !== 'tfjs' && worker ? new OrtTttStep(worker, m.draft, this.t.ttt_length, this.weights) : null;
  }

  /** Whether the micro-batches of a whole optimizer step are in. */
  get ready(): boolean {
    return this.micro === this.t.accumulation_steps;
  }

  /**
   * Loss and gradients of this rank's share of a micro-batch, the gradients added to the step's. Returns
   * its sums on this rank (all-reduce them for the global batch's) and its total loss.
   */
  microBatch(samples: FeatureSample[]): { sums: BatchSums; loss: number } {
    // Normalisers of the whole global batch: the TTT loss's B*T and the SpecExit losses' mask counts are
    // then those of a single rank holding the whole batch.
    const { T, divisors } = this.globalShape(samples);
    const sums = new BatchSums(this.t.ttt_length);
    sums.tokens = samples.reduce((n, s) => n + s.inputIds.length, 0);
    let loss = 0;
    const lengths = samples.map((s) => s.inputIds.length);
    for (const chunk of planChunks(lengths, this.t.chunk_tokens, T)) {
      loss += this.chunkGradients(
        chunk.indices.map((i) => samples[i]),
        chunk.padTo,
        samples.length * T,
        divisors,
        sums,
      );
    }
    this.micro++;
    return { sums, loss };
  }

  /**
   * All-reduces the step's gradients (mean over ranks), clips them to max_grad_norm (as
   * torch.nn.utils.clip_grad_norm_, the norm summed in float64) and applies AdamW at `lr`, all on the host
   * gradient buffer; returns the norm before clipping.
   */
  update(lr: number): number {
    const t0 = performance.now();
    const { vars, flat } = this;
    const worldSize = this.collective.worldSize;
    this.micro = 0;
    for (const v of vars) if (!this.written.has(v.name)) this.gradOf(v.name, v.size).fill(0);
    this.written.clear();
    this.collective.allReduceSum(flat);
    if (worldSize > 1) for (let i = 0; i < flat.length; i++) flat[i] /= worldSize;
    const t1 = performance.now();
    this.phases.add('all-reduce', t1 - t0);
    let squares = 0;
    for (let i = 0; i < flat.length; i++) squares += flat[i] * flat[i];
    const norm = Math.sqrt(squares);
    const maxNorm = this.t.max_grad_norm;
    const params = vars.map((v) => ({ name: v.name, p: this.weights.get(v), g: this.gradOf(v.name, v.size) }));
    this.opt.applyHost(params, lr, maxNorm > 0 && norm > maxNorm ? maxNorm / (norm + 1e-6) : 1);
    for (const v of vars) this.weights.commit(v);
    this.phases.add('optimizer', performance.now() - t1);
    return norm;
  }

  /** Drops the gradients of an unfinished step. */
  dispose(): void {
    this.written.clear();
    this.micro = 0;
  }

  /** What the whole global batch shares, gathered in one all-reduce: its padded length and the SpecExit divisors. */
  private globalShape(samples: FeatureSample[]): { T: number; divisors: Divisors | undefined } {
    const { shared } = this;
    const { rank, worldSize } = this.collective;
    shared.fill(0);
    shared[rank] = Math.max(...samples.map((s) => s.inputIds.length));
    if (this.t.specexit) shared.set(signalMaskCounts(samples), worldSize);
    if (worldSize > 1) this.collective.allReduceSum(shared);
    const T = Math.max(...shared.subarray(0, worldSize));
    // Each rank divides by its share of the global count, so that the mean over ranks is the global masked mean.
    const divisors = this.t.specexit ? (Array.from(shared.subarray(worldSize), (n) => Math.max(n, 1) / worldSize) as Divisors) : undefined;
    return { T, divisors };
  }

  /**
   * Loss, metrics and gradients of one chunk of a micro-batch, with the micro-batch's normaliser and
   * SpecExit divisors so that the chunks' results add up to the micro-batch's: the gradients are added to
   * the step's, the metrics into `sums`; returns the chunk's loss.
   */
  private chunkGradients(part: FeatureSample[], padTo: number, normaliser: number, divisors: Divisors | undefined, sums: BatchSums) {
    const { m, t } = this;
    const ph = this.phases;
    const { batch, teacher } = ph.time('teacher', () => {
      const batch = collateFeatures(part, m, padTo);
      const teacher = prepareTeacher(batch, m.vocab);
      batch.targetDraft?.logits.dispose(); // the teacher holds what the loss reads
      return { batch, teacher };
    });
    const kept: tf.Scalar[] = [];
    const keptSignals: tf.Scalar[] = [];
    let argmax: number[][][] = [];
    const sig = t.specexit ? signalBatch(part, padTo) : null;
    // SpecExit multi-task loss, added to the TTT loss with the recipe's weights.
    const signalTotal = () => {
      const losses = signalLosses(m.draft.signalLogits(batch.aux), sig!, divisors);
      keptSignals.push(...losses.map((l) => tf.keep(l)));
      return losses.reduce((sum: tf.Scalar, l, k) => tf.add(sum, tf.mul(l, t.specexit_weights[k])), tf.scalar(0));
    };
    let value: tf.Scalar;
    const ortStep = this.ortStep;
    if (ortStep || this.recomputes(batch.aux.shape[0], padTo)) {
      const opts = { normaliser, scale: 1 / t.accumulation_steps };
      const recompute = this.ortRecomputes(batch.aux.shape[0], padTo);
      const arena = !recompute && this.ortKeptBytes(batch.aux.shape[0], padTo) <= this.ortMemoryShare() / 4;
      const re = ortStep
        ? ph.time('backward', () => ortStep.gradients(m.head, batch.aux, teacher, { ...opts, recompute, arena })) // forward and backward in one run
        : tttGradients(m.draft, m.head, batch.aux, teacher, t.ttt_length, { ...opts, phases: ph });
      kept.push(...re.stepLosses.map((l) => tf.scalar(l)));
      argmax = re.draftArgmax;
      this.addGrads(re.grads);
      let total = re.total;
      if (sig) {
        const signal = ph.time('signals', () =>
          tf.variableGrads(() => tf.div(signalTotal(), t.accumulation_steps) as tf.Scalar, this.vars),
        );
        total += signal.value.dataSync()[0] * t.accumulation_steps;
        signal.value.dispose();
        this.addGrads(signal.grads);
      }
      value = tf.scalar(total / t.accumulation_steps);
    } else {
      // Taped whole: forward and backward are one call, counted as backward.
      const taped = ph.time('backward', () =>
        tf.variableGrads(() => {
          const out = tttForward(m.draft, m.head, batch.aux, teacher, t.ttt_length, { normaliser });
          kept.push(...out.stepLosses);
          argmax = out.draftArgmax;
          const total = sig ? tf.add(out.total, signalTotal()) : out.total;
          return tf.div(total, t.accumulation_steps) as tf.Scalar;
        }, this.vars),
      );
      value = taped.value;
      this.addGrads(taped.grads);
    }
    const tHost = performance.now();
    const acc = stepAccuracies(teacher, argmax);
    kept.forEach((l, k) => (sums.loss[k] += l.dataSync()[0]));
    acc.correct.forEach((c, k) => {
      sums.correct[k] += c;
      sums.counted[k] += acc.counted[k];
    });
    keptSignals.forEach((l, k) => (sums.signal[k] += l.dataSync()[0]));
    const loss = value.dataSync()[0] * t.accumulation_steps;
    tf.dispose([
      value,
      ...kept,
      ...keptSignals,
      ...(sig ? [sig.targets, sig.masks] : []),
      teacher.probs,
      batch.aux,
      batch.targetDraft?.logits,
    ]);
    ph.add('host', performance.now() - tHost);
    return loss;
  }

  /**
   * Whether a chunk of B samples padded to T recomputes its TTT steps in the backward pass: as the recipe
   * says, or under auto when the activations of all steps (about 48 H + 32 I floats per position and
   * step, measured on the wasm backend) would take over half the backend's memory limit.
   */
  private recomputes(B: number, T: number): boolean {
    const mode = this.t.recompute;
    if (mode !== 'auto') return mode === 'on';
    const limit = backendLimit();
    const c = this.m.draft.config;
    const bytes = 4 * B * T * this.t.ttt_length * (48 * c.hiddenSize + 32 * c.intermediateSize);
    return limit !== null && bytes > limit / 2;
  }

  /**
   * Whether the ONNX Runtime step graph recomputes logits and attention probabilities in its backward pass:
   * as the recipe says, or under auto when what it would keep (about Vd + heads x T + 40 H + 10 I floats per
   * position and step) would take over half of this rank's share of the machine's memory.
   */
  private ortRecomputes(B: number, T: number): boolean {
    const mode = this.t.recompute;
    if (mode !== 'auto') return mode === 'on';
    return this.ortKeptBytes(B, T) > this.ortMemoryShare() / 2;
  }

  /** What the step graph keeps from its forward pass for the backward, without recomputation (bytes). */
  private ortKeptBytes(B: number, T: number): number {
    const c = this.m.draft.config;
    return 4 * B * T * this.t.ttt_length * (c.draftVocabSize + c.numHeads * T + 40 * c.hiddenSize + 10 * c.intermediateSize);
  }

  /**
   * This rank's share of the machine's memory. The step graph keeps ORT's memory arena between runs when
   * what it keeps takes at most a quarter of it: the arena grows in powers of two and is held through the
   * rest of the step.
   */
  private ortMemoryShare(): number {
    return os.totalmem() / this.collective.worldSize;
  }

  /** Adds gradients (by variable name) into the step's; tensors are read out and disposed. */
  private addGrads(grads: Record<string, tf.Tensor | Float32Array>): void {
    for (const [name, g] of Object.entries(grads)) {
      if (!this.offsets.has(name)) throw new Error(`a gradient for '${name}', which is not a trained variable`);
      const data = g instanceof Float32Array ? g : (g.dataSync() as Float32Array);
      const sum = this.gradOf(name, data.length);
      if (this.written.has(name)) for (let i = 0; i < data.length; i++) sum[i] += data[i];
      else sum.set(data); // the step's first: no pass to zero the buffer, nor to add to zeros
      this.written.add(name);
      if (!(g instanceof Float32Array)) g.dispose();
    }
  }

  /** The variable's gradient slot in `flat`. */
  private gradOf(name: string, size: number): Float32Array {
    const off = this.offsets.get(name)!;
    return this.flat.subarray(off, off + size);
  }
}
