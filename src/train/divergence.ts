// When training has diverged, judged from numbers every rank shares (the all-reduced loss and the global
// gradient norm), so that every rank stops at the same step:
// - a loss that is not finite (before anything is applied);
// - a gradient norm that is not finite: the update it fed has made the weights NaN;
// - a gradient of exactly 0 with a loss above 0: the draft's activations went past float32 and its norms
//   turned them into zeros (weights blown up by a far too high learning rate; nothing can learn from there);
// - a loss above training.divergence_factor times the mean of the previous (up to WINDOW) steps' losses.
// A held-out loss that is not finite also counts. The loss and gradient of step N come from the weights
// step N-1 left, so a divergence at step N condemns those weights (checkpoint-trail.ts).

/** Previous steps whose mean loss a step is compared with. */
export const WINDOW = 10;

export class DivergenceGuard {
  private readonly recent: number[] = [];

  /** `factor`: training.divergence_factor (null: the loss alone never stops the run). */
  constructor(private readonly factor: number | null) {}

  /** Why a micro-batch's loss (summed over ranks) stops the run before it is applied, or null. */
  microBatch(loss: number): string | null {
    return Number.isFinite(loss) ? null : `the loss is ${loss}`;
  }

  /** Why an optimizer step (its mean loss over ranks and micro-batches, its gradient norm before clipping) stops the run, or null. */
  step(loss: number, gradNorm: number): string | null {
    if (!Number.isFinite(loss)) return `the loss is ${loss}`;
    if (!Number.isFinite(gradNorm)) return `the gradient norm is ${gradNorm} (the loss was ${fmt(loss)})`;
    if (gradNorm === 0 && loss > 0)
      return `the gradient is 0 while the loss is ${fmt(loss)}: the draft's activations overflow float32 (its weights have blown up)`;
    if (this.factor !== null && this.recent.length) {
      const mean = this.recent.reduce((a, b) => a + b, 0) / this.recent.length;
      if (loss > this.factor * mean)
        return `the loss ${fmt(loss)} is ${fmt(loss / mean)} times the mean ${fmt(mean)} of the previous ${this.recent.length} step(s) (training.divergence_factor ${this.factor})`;
    }
    this.recent.push(loss);
    if (this.recent.length > WINDOW) this.recent.shift();
    return null;
  }

  /** Why a held-out evaluation (its loss per TTT step) stops the run, or null. */
  evaluation(loss: number[]): string | null {
    const bad = loss.findIndex((l) => !Number.isFinite(l));
    return bad < 0 ? null : `the held-out loss of TTT step ${bad} is ${loss[bad]}`;
  }
}

function fmt(x: number): string {
  return Number(x.toPrecision(4)).toString();
}
