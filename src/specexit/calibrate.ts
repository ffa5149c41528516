// Choosing an exit rule on a calibration split: every rule of a grid is simulated on each prompt's trace
// (trace.ts: exact for greedy decoding), the outcome of each exit point (reasoning tokens, answer right or
// wrong) comes from the caller, and the rule with the most reasoning tokens saved whose accuracy stays
// within the budget of full thinking's wins.
import type { ExitRule } from './policy.ts';
import { exitAt, type ThinkingStep } from './trace.ts';

/** What one prompt's output came to: tokens up to and including </think>, and whether the answer is right (null: no reference). */
export interface Outcome {
  reasoning: number;
  correct: boolean | null;
}

/** One calibration prompt: its compiled trace and the outcome of thinking in full. */
export interface CalibrationCase {
  steps: ThinkingStep[];
  full: Outcome;
}

export interface RuleScore {
  rule: ExitRule;
  prompts: number;
  /** Prompts with a reference answer (the accuracies' denominator). */
  judged: number;
  /** Prompts on which the rule exits. */
  exits: number;
  /** Mean reasoning tokens per answer with the rule, and with full thinking. */
  reasoning: number;
  fullReasoning: number;
  /** 1 - reasoning / fullReasoning (over all prompts' tokens). */
  saved: number;
  /** Answer accuracy with the rule and with full thinking, over the prompts with a reference (null: none). */
  accuracy: number | null;
  fullAccuracy: number | null;
}

/** The rules a calibration tries: EWMA alpha and seeding, each threshold at a few values or unused (null), both closes. */
export function ruleGrid(): ExitRule[] {
  const rules: ExitRule[] = [];
  for (const alpha of [0.1, 0.2, 0.3, 0.5, 0.7, 1])
    for (const seeding of ['first', 'debiased'] as const) {
      if (alpha === 1 && seeding === 'debiased') continue; // no smoothing: both seedings are the same rule
      for (const minConfidence of [null, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95])
        for (const minProgress of [null, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8])
          for (const maxRemaining of [null, 5, 10, 15, 20, 30, 50, 100, 200])
            for (const close of ['after-split', 'replace-split'] as const)
              rules.push({ alpha, seeding, minConfidence, minProgress, maxRemaining, close });
    }
  return rules;
}

/** Scores a rule from its exit point on each case (null: no exit) and `outcomeAt(case, exit point)`. */
export function scoreRule(
  rule: ExitRule,
  exits: (number | null)[],
  cases: CalibrationCase[],
  outcomeAt: (i: number, cut: number) => Outcome,
): RuleScore {
  if (exits.length !== cases.length) throw new Error(`scoreRule: ${exits.length} exit points for ${cases.length} cases`);
  let n = 0;
  let reasoning = 0;
  let full = 0;
  let judged = 0;
  let right = 0;
  let rightFull = 0;
  cases.forEach((c, i) => {
    const cut = exits[i];
    const o = cut === null ? c.full : outcomeAt(i, cut);
    if (cut !== null) n++;
    reasoning += o.reasoning;
    full += c.full.reasoning;
    if (c.full.correct !== null) {
      judged++;
      if (c.full.correct) rightFull++;
      if (o.correct) right++;
    }
  });
  const count = Math.max(1, cases.length);
  return {
    rule,
    prompts: cases.length,
    judged,
    exits: n,
    reasoning: reasoning / count,
    fullReasoning: full / count,
    saved: full > 0 ? 1 - reasoning / full : 0,
    accuracy: judged ? right / judged : null,
    fullAccuracy: judged ? rightFull / judged : null,
  };
}

/** Each rule's exit point on each case. */
export function exitPoints(rules: ExitRule[], cases: CalibrationCase[]): (number | null)[][] {
  return rules.map((r) => cases.map((c) => exitAt(r, c.steps)));
}

/**
 * The index of the rule with the most reasoning saved whose accuracy is at most `budget` (a fraction: 0.01
 * is one point) below full thinking's; ties go to the higher accuracy, then to the earlier rule. Without
 * reference answers accuracy cannot be judged: an error. null when no rule is within the budget.
 */
export function chooseRule(scores: RuleScore[], budget: number): number | null {
  let best: number | null = null;
  scores.forEach((s, i) => {
    if (s.accuracy === null || s.fullAccuracy === null)
      throw new Error('SpecExit calibration needs prompts with reference answers (the accuracy budget cannot be judged without them)');
    if (s.fullAccuracy - s.accuracy > budget + 1e-9) return;
    if (best === null) {
      best = i;
      return;
    }
    const b = scores[best];
    if (s.saved > b.saved + 1e-12 || (Math.abs(s.saved - b.saved) <= 1e-12 && s.accuracy > b.accuracy! + 1e-12)) best = i;
  });
  return best;
}
