// SpecExit's early-exit policy during speculative decoding: the signals of the tokens accepted in one
// verify step are averaged, smoothed with an EWMA (seeded by the first value), and an exit is taken only
// while thinking, only in a step whose accepted tokens contain a step-split token (a paragraph break),
// and only when every smoothed signal passes its threshold. On exit the accepted tokens are cut after
// the (last) split and `</think>` is emitted in place of the bonus token.

export interface ExitSignals {
  confidence: number;
  progress: number;
  remaining: number;
}

export interface ExitPolicyOptions {
  alpha: number;
  minConfidence: number;
  minProgress: number;
  maxRemaining: number;
  /** Token ids that end a reasoning step ("\n\n" where it is one token). */
  splitIds: number[];
  thinkId: number;
  endThinkId: number;
}

export const DEFAULT_EXIT: Omit<ExitPolicyOptions, 'splitIds' | 'thinkId' | 'endThinkId'> = {
  alpha: 0.1,
  minConfidence: 0.8,
  minProgress: 0.3,
  maxRemaining: 200,
};

export type ExitDecision =
  | { exit: false; smoothed: ExitSignals | null }
  | { exit: true; smoothed: ExitSignals; keep: number; emit: number };

export class ExitPolicy {
  private smoothed: ExitSignals | null = null;
  private thinking = false;
  exits = 0;

  constructor(private readonly o: ExitPolicyOptions) {}

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

  /**
   * One verify step: `accepted` are the draft tokens the target accepted (before the bonus token) and
   * `signals` their per-token signals. Returns whether to exit and, if so, how many accepted tokens to
   * keep (through the last split token) and the token to emit instead of the bonus (</think>).
   */
  step(accepted: number[], signals: ExitSignals[]): ExitDecision {
    if (accepted.length !== signals.length) throw new Error(`exit policy: ${accepted.length} tokens but ${signals.length} signal sets`);
    const wasThinking = this.thinking;
    if (signals.length > 0) {
      const mean = (f: (s: ExitSignals) => number) => signals.reduce((a, s) => a + f(s), 0) / signals.length;
      const x = { confidence: mean((s) => s.confidence), progress: mean((s) => s.progress), remaining: mean((s) => s.remaining) };
      const a = this.o.alpha;
      this.smoothed = this.smoothed
        ? {
            confidence: a * x.confidence + (1 - a) * this.smoothed.confidence,
            progress: a * x.progress + (1 - a) * this.smoothed.progress,
            remaining: a * x.remaining + (1 - a) * this.smoothed.remaining,
          }
        : x;
    }
    const lastSplit = accepted.reduce((at, t, i) => (this.o.splitIds.includes(t) ? i : at), -1);
    const s = this.smoothed;
    const stillThinking = wasThinking && !accepted.includes(this.o.endThinkId);
    if (
      s &&
      stillThinking &&
      lastSplit >= 0 &&
      s.confidence > this.o.minConfidence &&
      s.progress > this.o.minProgress &&
      s.remaining < this.o.maxRemaining
    ) {
      this.exits++;
      this.thinking = false;
      return { exit: true, smoothed: s, keep: lastSplit + 1, emit: this.o.endThinkId };
    }
    this.observe(accepted);
    return { exit: false, smoothed: s };
  }
}
