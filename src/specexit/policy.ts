// SpecExit's early-exit policy during speculative decoding: the signals of the tokens accepted in one
// verify step are averaged, smoothed with an EWMA, and an exit is taken only while thinking, only in a step
// whose accepted tokens contain a step-split token (a paragraph break), and only when every signal the rule
// uses passes its threshold. On exit the accepted tokens are cut at the (last) split and the thinking is
// closed in place of the bonus token, one of two ways:
//   'after-split'   (SpecExit's) keep the split, then `</think>`: "...= 28.\n\n</think>";
//   'replace-split' the split gives way to the close the model's own thinking spans end with, a newline
//                   and `</think>`: "...= 28.\n</think>" (thinking that closes after a paragraph break is
//                   something a model trained on "\n</think>" has never seen, and it may think on after it).
//
// EWMA seeding: 'first' (SpecExit's) starts the average at the first step's mean, which then keeps weight
// (1 - alpha)^(n-1) after n steps: with a slow alpha and a short thinking span the first, low-confidence
// step dominates. 'debiased' starts at zero and divides by the weight seen so far, 1 - (1 - alpha)^n (Adam's
// bias correction): the first step's mean is the same, but every step's weight then decays alike.

export interface ExitSignals {
  confidence: number;
  progress: number;
  remaining: number;
}

export type EwmaSeeding = 'first' | 'debiased';
export type ThinkingClose = 'after-split' | 'replace-split';

/** When to exit: EWMA settings and thresholds (a null threshold: that signal is not used). */
export interface ExitRule {
  /** EWMA weight of each new step's mean, in (0, 1]; 1 is no smoothing. */
  alpha: number;
  seeding: EwmaSeeding;
  /** Exit needs smoothed confidence > minConfidence. */
  minConfidence: number | null;
  /** ... smoothed progress > minProgress. */
  minProgress: number | null;
  /** ... smoothed remaining tokens < maxRemaining. */
  maxRemaining: number | null;
  /** How an exit closes the thinking (see the file comment). */
  close: ThinkingClose;
}

export interface ExitPolicyOptions extends ExitRule {
  /** Token ids that end a reasoning step ("\n\n" where it is one token). */
  splitIds: number[];
  thinkId: number;
  endThinkId: number;
  /** The tokens that replace the split with close 'replace-split' (a newline's, then </think>). */
  replaceIds: number[];
}

/** SpecExit's published policy (thresholds set for thinking thousands of tokens long). */
export const REFERENCE_EXIT: ExitRule = {
  alpha: 0.1,
  seeding: 'first',
  minConfidence: 0.8,
  minProgress: 0.3,
  maxRemaining: 200,
  close: 'after-split',
};

/** Whether smoothed signals pass every threshold the rule uses (strict comparisons). */
export function passes(rule: ExitRule, s: ExitSignals): boolean {
  return (
    (rule.minConfidence === null || s.confidence > rule.minConfidence) &&
    (rule.minProgress === null || s.progress > rule.minProgress) &&
    (rule.maxRemaining === null || s.remaining < rule.maxRemaining)
  );
}

/**
 * Reasoning tokens of an output: up to and including its last </think> (a model may think on after a
 * </think> an exit forced, and closes again), the whole output when thinking never closes.
 */
export function reasoningTokens(tokens: number[], endThinkId: number): number {
  const at = tokens.lastIndexOf(endThinkId);
  return at >= 0 ? at + 1 : tokens.length;
}

/** The mean signals of one verify step's accepted tokens. */
export function meanSignals(signals: ExitSignals[]): ExitSignals {
  const mean = (f: (s: ExitSignals) => number) => signals.reduce((a, s) => a + f(s), 0) / signals.length;
  return { confidence: mean((s) => s.confidence), progress: mean((s) => s.progress), remaining: mean((s) => s.remaining) };
}

export type ExitDecision =
  | { exit: false; smoothed: ExitSignals | null }
  | { exit: true; smoothed: ExitSignals; keep: number; emit: number[] };

/** What the decode loop asks of an exit policy (the policy itself, or a recorder that never exits). */
export interface ExitController {
  readonly isThinking: boolean;
  observe(tokens: number[]): void;
  step(accepted: number[], signals: ExitSignals[]): ExitDecision;
}

export class ExitPolicy implements ExitController {
  /** The EWMA's running sum (zero-started for 'debiased') and the weight it holds, 1 - (1 - alpha)^n. */
  private sum: ExitSignals | null = null;
  private weight = 0;
  private smoothed: ExitSignals | null = null;
  private thinking = false;
  exits = 0;

  constructor(private readonly o: ExitPolicyOptions) {
    if (!(o.alpha > 0 && o.alpha <= 1)) throw new Error(`exit policy: alpha is ${o.alpha}; expected a number in (0, 1]`);
    if (o.close === 'replace-split' && o.replaceIds[o.replaceIds.length - 1] !== o.endThinkId)
      throw new Error(`exit policy: replaceIds ${JSON.stringify(o.replaceIds)} must end with </think> (${o.endThinkId})`);
  }

  /** Tracks <think> / </think> in tokens the decoder emits (prompt included), without deciding anything. */
  observe(tokens: number[]): void {
    for (const t of tokens) {
      if (t === this.o.thinkId) this.thinking = true;
      else if (t === this.o.endThinkId) this.thinking = false;
    }
  }

  get isThinking(): boolean {
    return this.thinking;
  }

  private smooth(x: ExitSignals): ExitSignals {
    const a = this.o.alpha;
    const mix = (prev: number, v: number) => a * v + (1 - a) * prev;
    if (this.sum === null && this.o.seeding === 'first') {
      this.sum = x;
      this.weight = 1;
    } else {
      const s = this.sum ?? { confidence: 0, progress: 0, remaining: 0 };
      this.sum = {
        confidence: mix(s.confidence, x.confidence),
        progress: mix(s.progress, x.progress),
        remaining: mix(s.remaining, x.remaining),
      };
      this.weight = mix(this.weight, 1);
    }
    const w = this.weight;
    return { confidence: this.sum.confidence / w, progress: this.sum.progress / w, remaining: this.sum.remaining / w };
  }

  /**
   * One verify step: `accepted` are the draft tokens the target accepted (before the bonus token) and
   * `signals` their per-token signals. Returns whether to exit and, if so, how many accepted tokens to
   * keep (through the last split token, or up to it with close 'replace-split') and the tokens to emit
   * instead of the bonus (</think>, or the replaceIds).
   */
  step(accepted: number[], signals: ExitSignals[]): ExitDecision {
    if (accepted.length !== signals.length) throw new Error(`exit policy: ${accepted.length} tokens but ${signals.length} signal sets`);
    const wasThinking = this.thinking;
    if (signals.length > 0) this.smoothed = this.smooth(meanSignals(signals));
    const lastSplit = accepted.reduce((at, t, i) => (this.o.splitIds.includes(t) ? i : at), -1);
    const s = this.smoothed;
    const stillThinking = wasThinking && !accepted.includes(this.o.endThinkId);
    if (s && stillThinking && lastSplit >= 0 && passes(this.o, s)) {
      this.exits++;
      this.thinking = false;
      const replace = this.o.close === 'replace-split';
      return {
        exit: true,
        smoothed: s,
        keep: replace ? lastSplit : lastSplit + 1,
        emit: replace ? [...this.o.replaceIds] : [this.o.endThinkId],
      };
    }
    this.observe(accepted);
    return { exit: false, smoothed: s };
  }
}
