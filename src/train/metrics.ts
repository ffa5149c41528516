// Training metrics: what one micro-batch adds up to (named sums over one Float32Array, so that a single
// all-reduce turns every rank's sums into the global batch's), their averages over a log interval, the
// progress bar's fields, and the rows of <run>/metrics.jsonl (rank 0 writes them, through run-log.ts).
import type { Collective } from '../parallel/collective.ts';
import type { Recipe } from '../recipe/recipe.ts';
import type { TrainerState } from './checkpoint.ts';
import type { EvalMetrics } from './evaluate.ts';
import type { MetricRow } from './tensorboard.ts';
import { simulatedAcceptanceLength } from './ttt.ts';

/** The three SpecExit signals (confidence, progress, remaining length). */
const SIGNALS = 3;

/**
 * Sums over one micro-batch's chunks, per TTT step k < L: the loss, the correct and the counted
 * predictions; the SpecExit signal losses; the tokens. The all-reduce layout is
 * [loss x L, correct x L, counted x L, signal x 3, tokens].
 */
export class BatchSums {
  readonly data: Float32Array;
  readonly loss: Float32Array;
  readonly correct: Float32Array;
  readonly counted: Float32Array;
  readonly signal: Float32Array;

  constructor(readonly tttLength: number) {
    const L = tttLength;
    this.data = new Float32Array(3 * L + SIGNALS + 1);
    this.loss = this.data.subarray(0, L);
    this.correct = this.data.subarray(L, 2 * L);
    this.counted = this.data.subarray(2 * L, 3 * L);
    this.signal = this.data.subarray(3 * L, 3 * L + SIGNALS);
  }

  get tokens(): number {
    return this.data[this.data.length - 1];
  }

  set tokens(n: number) {
    this.data[this.data.length - 1] = n;
  }

  /** In place, the sums over every rank's share: the global micro-batch's. */
  allReduce(collective: Collective): this {
    if (collective.worldSize > 1) collective.allReduceSum(this.data);
    return this;
  }
}

/** What the progress bar and the train rows of metrics.jsonl report, and where the rows go. */
export class TrainMetrics {
  private readonly L: number;
  // The current log interval: the optimizer steps since the last train row.
  private loss: number[];
  private signal: number[];
  private correct: number[];
  private counted: number[];
  private steps = 0;
  /** The current optimizer step's loss (summed over TTT steps, mean over ranks and micro-batches). */
  private stepLoss = 0;
  private tokens = 0;
  private start = Date.now();
  /** Since the run (this process) started. */
  private readonly t0 = Date.now();
  private total = 0;

  constructor(
    /** Where the rows go (rank 0's run log); the other ranks keep the same sums and write nothing. */
    private readonly sink: ((row: MetricRow) => void) | null,
    private readonly t: Recipe['training'],
    private readonly worldSize: number,
  ) {
    this.L = t.ttt_length;
    this.loss = new Array(this.L).fill(0);
    this.signal = new Array(SIGNALS).fill(0);
    this.correct = new Array(this.L).fill(0);
    this.counted = new Array(this.L).fill(0);
  }

  /** A global micro-batch's sums: its losses count as the mean over ranks, per optimizer step. */
  add(s: BatchSums): void {
    for (let k = 0; k < this.L; k++) {
      this.loss[k] += s.loss[k] / this.worldSize / this.t.accumulation_steps;
      this.stepLoss += s.loss[k] / this.worldSize / this.t.accumulation_steps;
      this.correct[k] += s.correct[k];
      this.counted[k] += s.counted[k];
    }
    for (let k = 0; k < SIGNALS; k++) this.signal[k] += s.signal[k] / this.worldSize / this.t.accumulation_steps;
    this.tokens += s.tokens;
    this.total += s.tokens;
  }

  /** One optimizer step is done; returns its loss (summed over TTT steps; the same on every rank). */
  endStep(): number {
    this.steps++;
    const loss = this.stepLoss;
    this.stepLoss = 0;
    return loss;
  }

  private accuracies(): number[] {
    return this.correct.map((c, k) => (this.counted[k] ? c / this.counted[k] : 0));
  }

  /** The progress bar's fields: the interval's step-0 loss and accuracy, the run's tokens per second. */
  progress(): Record<string, number> {
    return {
      loss: this.loss[0] / Math.max(this.steps, 1),
      acc0: this.accuracies()[0],
      'tok/s': Math.round(this.total / this.seconds()),
    };
  }

  /** Writes the interval's train row and starts the next interval. */
  writeTrain(state: TrainerState, gradNorm: number): void {
    const accs = this.accuracies();
    const secs = (Date.now() - this.start) / 1000;
    this.write({
      split: 'train',
      step: state.step,
      epoch: state.epoch,
      lr: state.learningRate,
      loss: this.loss.map((x) => x / this.steps),
      acc: accs,
      tau: simulatedAcceptanceLength(accs),
      tokens_per_s: this.tokens / secs,
      grad_norm: gradNorm,
      ...(this.t.specexit ? { specexit_loss: this.signal.map((x) => x / this.steps) } : {}),
    });
    this.signal = this.signal.map(() => 0);
    this.loss = this.loss.map(() => 0);
    this.correct = this.correct.map(() => 0);
    this.counted = this.counted.map(() => 0);
    this.steps = 0;
    this.tokens = 0;
    this.start = Date.now();
  }

  writeEval(state: TrainerState, ev: EvalMetrics): void {
    this.write({ split: 'eval', step: state.step, epoch: state.epoch, ...ev });
  }

  /** Tokens trained on since the run (this process) started, over all ranks. */
  get totalTokens(): number {
    return this.total;
  }

  /** Seconds since the run started. */
  seconds(): number {
    return (Date.now() - this.t0) / 1000;
  }

  private write(row: MetricRow): void {
    this.sink?.(row);
  }
}
