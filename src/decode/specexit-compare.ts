// The SpecExit part of eval (eval.specexit): decode every prompt again with the exit policy and compare
// with the speculative run without it (reasoning tokens, answer accuracy, exits taken).
import type * as tf from '@tensorflow/tfjs';
import { type AnswerExtractor, extractAnswer } from '../data/answers.ts';
import type { Tokenizer } from '../io/tokenizer.ts';
import { ExitPolicy, type ExitSignals } from '../specexit/policy.ts';
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
  /** Mean tokens up to and including </think> (the whole output when thinking never closes). */
  reasoningTokens: { full: number; exit: number };
  reasoningSaved: number;
  /** Answer accuracy against the reference reply's answer, without and with exits. */
  accuracy: { full: number; exit: number; of: number } | null;
  tauWithExit: number | null;
  thresholds: { confidence: number; progress: number; remaining: number; alpha: number };
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
    alpha: number;
    thresholds: number[];
    checkpoint: string;
    hasHeads: boolean;
    log: (m: string) => void;
  },
): SpecExitSummary {
  if (!o.hasHeads) throw new Error(`${o.checkpoint}: this draft has no SpecExit signal heads; train it with training.specexit: true`);
  const think = o.tok.requireId('<think>');
  const endThink = o.tok.requireId('</think>');
  const split = o.tok.encode('\n\n');
  if (split.length !== 1)
    throw new Error(`the tokenizer encodes a paragraph break as ${split.length} tokens; SpecExit needs a single step-split token`);
  const [confidence, progress, remaining] = o.thresholds;
  const reasoning = (tokens: number[]) => (tokens.includes(endThink) ? tokens.indexOf(endThink) + 1 : tokens.length);
  const answerOf = (tokens: number[]) => extractAnswer(o.tok.decode(tokens), o.extractor);
  let exits = 0;
  let full = 0;
  let exited = 0;
  let right = 0;
  let rightExit = 0;
  let judged = 0;
  let passes = 0;
  let verifyTokens = 0;
  prompts.forEach((p, i) => {
    const policy = new ExitPolicy({
      alpha: o.alpha,
      minConfidence: confidence,
      minProgress: progress,
      maxRemaining: remaining,
      splitIds: split,
      thinkId: think,
      endThinkId: endThink,
    });
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
    thresholds: { confidence, progress, remaining, alpha: o.alpha },
  };
}
