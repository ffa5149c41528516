// A decode's SpecExit view, recorded once with full thinking, so that exit rules can be tried offline.
//
// Why replaying is exact (greedy decoding): an exit rule sees only the signals of the tokens accepted in
// each verify pass, and until it exits, the passes, their accepted tokens and the target features behind
// the signals are those of the decode that never exits. So the first exit a rule takes on the recorded
// trace is the exit it takes when decoding, and the output up to it is the recorded output up to it; after
// the exit the output is the target's greedy continuation of that prefix plus </think> (speculative greedy
// decoding writes what plain greedy decoding writes), which depends on the exit point alone.
import type { ExitController, ExitDecision, ExitPolicyOptions, ExitRule, ExitSignals } from './policy.ts';
import { ExitPolicy, meanSignals } from './policy.ts';

/** What the decode loop told the policy: tokens it committed, and verify passes it asked about. */
export type TraceEvent = { observe: number[] } | { step: number[]; signals: ExitSignals[] };

/** An exit controller that never exits and records every call (the decode-loop side of a trace). */
export class TraceRecorder implements ExitController {
  readonly events: TraceEvent[] = [];
  private thinking = false;

  constructor(
    private readonly thinkId: number,
    private readonly endThinkId: number,
  ) {}

  get isThinking(): boolean {
    return this.thinking;
  }

  private track(tokens: number[]): void {
    for (const t of tokens) {
      if (t === this.thinkId) this.thinking = true;
      else if (t === this.endThinkId) this.thinking = false;
    }
  }

  observe(tokens: number[]): void {
    this.events.push({ observe: [...tokens] });
    this.track(tokens);
  }

  step(accepted: number[], signals: ExitSignals[]): ExitDecision {
    this.events.push({ step: [...accepted], signals: signals.map((s) => ({ ...s })) });
    this.track(accepted);
    return { exit: false, smoothed: null };
  }
}

/**
 * Where a policy exits on a recorded trace, by running the policy itself over it: the number of output
 * tokens kept before the tokens that close the thinking (null: no exit). `promptLength` tokens of the first observed
 * tokens are the prompt.
 */
export function replayExit(events: TraceEvent[], promptLength: number, o: ExitPolicyOptions): number | null {
  const policy = new ExitPolicy(o);
  let seen = 0;
  for (const e of events) {
    if ('observe' in e) {
      policy.observe(e.observe);
      seen += e.observe.length;
    } else {
      const d = policy.step(e.step, e.signals);
      if (d.exit) return seen - promptLength + d.keep;
      seen += e.step.length;
    }
  }
  return null;
}

/** One verify pass a rule is asked about, reduced to what the rule reads. */
export interface ThinkingStep {
  /** Output tokens committed before the pass. */
  at: number;
  /** Mean signals of its accepted tokens (null: none read). */
  mean: ExitSignals | null;
  /** Index of the last split among its accepted tokens (null: none). */
  split: number | null;
  /** Whether the policy is thinking when asked and its accepted tokens do not close the thinking. */
  open: boolean;
}

/** A trace reduced to the passes an exit rule is asked about (see exitAt). */
export function compileTrace(
  events: TraceEvent[],
  promptLength: number,
  ids: { splitIds: number[]; thinkId: number; endThinkId: number },
): ThinkingStep[] {
  const out: ThinkingStep[] = [];
  let seen = 0;
  let thinking = false;
  const track = (tokens: number[]) => {
    for (const t of tokens) {
      if (t === ids.thinkId) thinking = true;
      else if (t === ids.endThinkId) thinking = false;
    }
  };
  for (const e of events) {
    const tokens = 'observe' in e ? e.observe : e.step;
    if ('step' in e) {
      let split: number | null = null;
      e.step.forEach((t, i) => {
        if (ids.splitIds.includes(t)) split = i;
      });
      out.push({
        at: seen - promptLength,
        mean: e.signals.length ? meanSignals(e.signals) : null,
        split,
        open: thinking && !e.step.includes(ids.endThinkId),
      });
    }
    track(tokens);
    seen += tokens.length;
  }
  return out;
}

/**
 * Where `rule` exits on compiled steps: output tokens kept before the close (null: no exit). The same
 * decision as ExitPolicy over the trace (replayExit), written for speed: a calibration sweep runs it for
 * every rule and prompt.
 */
export function exitAt(rule: ExitRule, steps: ThinkingStep[]): number | null {
  const a = rule.alpha;
  const first = rule.seeding === 'first';
  let c = 0;
  let p = 0;
  let r = 0;
  let w = 0;
  let any = false;
  for (const s of steps) {
    if (s.mean) {
      if (first && w === 0) {
        c = s.mean.confidence;
        p = s.mean.progress;
        r = s.mean.remaining;
        w = 1;
      } else {
        c = a * s.mean.confidence + (1 - a) * c;
        p = a * s.mean.progress + (1 - a) * p;
        r = a * s.mean.remaining + (1 - a) * r;
        w = a + (1 - a) * w;
      }
      any = true;
    }
    if (!any || !s.open || s.split === null) continue;
    if (rule.minConfidence !== null && !(c / w > rule.minConfidence)) continue;
    if (rule.minProgress !== null && !(p / w > rule.minProgress)) continue;
    if (rule.maxRemaining !== null && !(r / w < rule.maxRemaining)) continue;
    return s.at + s.split + (rule.close === 'after-split' ? 1 : 0);
  }
  return null;
}
