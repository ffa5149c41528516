// The SpecExit part of eval (eval.specexit): decode every prompt again with the exit policy and compare
// with the speculative run without it (reasoning tokens, answer accuracy, exits taken, time per answer).
import type * as tf from '@tensorflow/tfjs';
import { type AnswerExtractor, extractAnswer } from '../data/answers.ts';
import type { Tokenizer } from '../io/tokenizer.ts';
import { exitTokenIds } from '../specexit/tokens.ts';
import { ExitPolicy, type ExitRule, type ExitSignals, reasoningTokens } from '../specexit/policy.ts';
import type { TargetModel } from '../target/runtime.ts';
import { Rng } from '../util/random.ts';
import type { Drafter } from './drafter.ts';
import type { DecodeSettings } from './evaluate.ts';
import type { TokenizedPrompt } from './prompts.ts';
import type { PromptRecord } from './report.ts';
import { speculativeDecode } from './speculative.ts';

export interface SpecExitSummary {
  prompts: number;
  exits: number;
  /** Mean tokens up to and including the last </think> (the whole output when thinking never closes). */
  reasoningTokens: { full: number; exit: number };
  reasoningSaved: number;
  /** Answer accuracy against the reference reply's answer, without and with exits. */
  accuracy: { full: number; exit: number; of: number } | null;
  tauWithExit: number | null;
  /** Mean seconds per answer (end to end) of the speculative decode without and with exits. */
  secondsPerAnswer: { full: number; exit: number };
  /** The rule decoding used, and where it came from (eval.exit_policy). */
  rule: ExitRule;
  policy: string;
}

/**
 * Decodes every prompt again with the SpecExit exit policy and compares it with the plain speculative run:
 * reasoning tokens, answer accuracy, exits taken.
 */
export function specExitComparison(
  target: TargetModel,
  drafter: Drafter & { signals(features: tf.Tensor3D): ExitSignals[] },
  prompts: TokenizedPrompt[],
  records: PromptRecord[],
  s: DecodeSettings,
  o: {
    tok: Tokenizer;
    extractor: AnswerExtractor;
    rule: ExitRule;
    policySource: string;
    checkpoint: string;
    hasHeads: boolean;
    log: (m: string) => void;
  },
): SpecExitSummary {
  if (!o.hasHeads) throw new Error(`${o.checkpoint}: this draft has no SpecExit signal heads; train it with training.specexit: true`);
  const ids = exitTokenIds(o.tok);
  const endThink = ids.endThinkId;
  const reasoning = (tokens: number[]) => reasoningTokens(tokens, endThink);
  const answerOf = (tokens: number[]) => extractAnswer(o.tok.decode(tokens), o.extractor);
  let exits = 0;
  let full = 0;
  let exited = 0;
  let right = 0;
  let rightExit = 0;
  let judged = 0;
  let passes = 0;
  let verifyTokens = 0;
  let secondsFull = 0;
  let secondsExit = 0;
  prompts.forEach((p, i) => {
    const policy = new ExitPolicy({ ...o.rule, ...ids });
    const r = speculativeDecode(target, drafter, p.ids, {
      maxNewTokens: s.maxNewTokens,
      stopIds: s.stopIds,
      draftSteps: s.draftSteps,
      tree: s.tree,
      temperature: s.temperature,
      topP: s.topP,
      rng: new Rng(s.seed + i),
      exit: { policy, signals: (f) => drafter.signals(f) },
    });
    exits += r.exits;
    passes += r.verifyPasses;
    verifyTokens += r.verifyTokens;
    secondsFull += records[i].spec.seconds;
    secondsExit += r.seconds;
    full += reasoning(records[i].spec.tokens);
    exited += reasoning(r.tokens);
    const reference = p.reference === undefined ? null : extractAnswer(p.reference, o.extractor);
    if (reference !== null) {
      judged++;
      if (answerOf(records[i].spec.tokens) === reference) right++;
      if (answerOf(r.tokens) === reference) rightExit++;
    }
    o.log(
      `[specexit ${i + 1}/${prompts.length}] ${p.id}: ${r.exits ? 'exit' : 'no exit'}, reasoning ${reasoning(records[i].spec.tokens)} -> ${reasoning(r.tokens)} tokens`,
    );
  });
  const n = Math.max(1, prompts.length);
  return {
    prompts: prompts.length,
    exits,
    reasoningTokens: { full: full / n, exit: exited / n },
    reasoningSaved: full ? 1 - exited / full : 0,
    accuracy: judged ? { full: right / judged, exit: rightExit / judged, of: judged } : null,
    tauWithExit: passes ? verifyTokens / passes : null,
    secondsPerAnswer: { full: secondsFull / n, exit: secondsExit / n },
    rule: o.rule,
    policy: o.policySource,
  };
}
