// `specforge eval --specexit --calibrate`: choose the exit rule on a calibration split and report it on a
// disjoint test split. Each prompt is decoded once with full thinking while its SpecExit view is recorded
// (specexit/trace.ts); every rule of the grid is then simulated on the calibration traces, and the answer
// after each exit point a rule takes is the target's greedy continuation from there (computed once per
// point). The chosen rule is then decoded for real on the test split, beside the full-thinking decode of
// each prompt (alternating, for the time per answer), and the simulation is checked against it.
import type * as tf from '@tensorflow/tfjs';
import { type AnswerExtractor, extractAnswer } from '../data/answers.ts';
import type { Tokenizer } from '../io/tokenizer.ts';
import { type CalibrationCase, chooseRule, exitPoints, type Outcome, type RuleScore, ruleGrid, scoreRule } from '../specexit/calibrate.ts';
import { describeRule } from '../specexit/policy-file.ts';
import {
  type ExitController,
  ExitPolicy,
  type ExitRule,
  type ExitSignals,
  REFERENCE_EXIT,
  reasoningTokens,
  type ThinkingClose,
} from '../specexit/policy.ts';
import { exitTokenIds } from '../specexit/tokens.ts';
import { compileTrace, exitAt, TraceRecorder, type ThinkingStep } from '../specexit/trace.ts';
import { generate } from '../target/generate.ts';
import type { TargetModel } from '../target/runtime.ts';
import { Rng } from '../util/random.ts';
import type { Drafter } from './drafter.ts';
import type { DecodeSettings } from './evaluate.ts';
import type { TokenizedPrompt } from './prompts.ts';
import { speculativeDecode } from './speculative.ts';

export type SignalDrafter = Drafter & { signals(features: tf.Tensor3D): ExitSignals[] };

/** A rule's figures on one split. */
export interface SplitFigures {
  prompts: number;
  exits: number;
  reasoningTokens: { full: number; exit: number };
  reasoningSaved: number;
  accuracy: { full: number; exit: number; of: number } | null;
}

export interface CalibrationReport {
  split: { calibration: number; test: number; rule: string };
  accuracyBudgetPoints: number;
  rulesTried: number;
  chosen: { rule: ExitRule; calibration: SplitFigures; testSimulated: SplitFigures; testDecoded: SplitFigures };
  /** Other rules measured on the test split (simulated, exact): the reference, and the best of restricted grids. */
  compared: { name: string; rule: ExitRule | null; calibration: SplitFigures | null; test: SplitFigures | null }[];
  /** The most an exit at a step split can save on the test split without turning a right answer wrong, per close. */
  oracle: { afterSplit: SplitFigures; replaceSplit: SplitFigures };
  /** Of all exit points at a step split on the test split, those after which the model thinks on (writes </think> again), per close. */
  thinksOn: { afterSplit: { exits: number; of: number }; replaceSplit: { exits: number; of: number } };
  /** Mean seconds per answer on the test split, decoding with full thinking and with the chosen rule's exits. */
  secondsPerAnswer: { full: number; exit: number; saved: number };
  /** Test prompts whose decoded output with exits equals the simulated one (it should be all). */
  simulationExact: { identical: number; of: number };
  /** Every rule's calibration point (distinct points per close, with how many rules landed there), for the picture. */
  points: { saved: number; accuracy: number; close: ThinkingClose; rules: number }[];
}

interface Decoded {
  tokens: number[];
  seconds: number;
}

interface SplitData {
  prompts: TokenizedPrompt[];
  full: Decoded[];
  cases: CalibrationCase[];
  /** Outputs with an exit, by prompt index, exit point and close (filled on demand). */
  after: Map<string, number[]>;
}

/** Calibrates, stores nothing (the caller does), returns the report. */
export function calibrateSpecExit(
  target: TargetModel,
  drafter: SignalDrafter,
  prompts: TokenizedPrompt[],
  s: DecodeSettings,
  o: { tok: Tokenizer; extractor: AnswerExtractor; budgetPoints: number; log: (m: string) => void },
): CalibrationReport {
  if (s.temperature > 0) throw new Error('SpecExit calibration replays greedy decoding; set eval.temperature to 0');
  const ids = exitTokenIds(o.tok);
  const { thinkId: think, endThinkId: endThink } = ids;
  const calPrompts = prompts.filter((_, i) => i % 2 === 0);
  const testPrompts = prompts.filter((_, i) => i % 2 === 1);
  if (calPrompts.length < 1 || testPrompts.length < 1)
    throw new Error(`SpecExit calibration needs at least 2 prompts (half calibrate, half test); got ${prompts.length}`);
  const budget = o.budgetPoints / 100;

  const reasoningOf = (tokens: number[]) => reasoningTokens(tokens, endThink);
  const correctOf = (p: TokenizedPrompt, tokens: number[]): boolean | null => {
    const reference = p.reference === undefined ? null : extractAnswer(p.reference, o.extractor);
    return reference === null ? null : extractAnswer(o.tok.decode(tokens), o.extractor) === reference;
  };
  const decode = (p: TokenizedPrompt, i: number, policy: ExitController) => {
    const r = speculativeDecode(target, drafter, p.ids, {
      maxNewTokens: s.maxNewTokens,
      stopIds: s.stopIds,
      draftSteps: s.draftSteps,
      tree: s.tree,
      temperature: 0,
      rng: new Rng(s.seed + i),
      exit: { policy, signals: (f) => drafter.signals(f) },
    });
    return { tokens: r.tokens, seconds: r.seconds, exits: r.exits };
  };
  const record = (p: TokenizedPrompt, i: number) => {
    const rec = new TraceRecorder(think, endThink);
    const r = decode(p, i, rec);
    return { decoded: { tokens: r.tokens, seconds: r.seconds }, steps: compileTrace(rec.events, p.ids.length, ids) };
  };
  const caseOf = (p: TokenizedPrompt, d: Decoded, steps: ThinkingStep[]): CalibrationCase => ({
    steps,
    full: { reasoning: reasoningOf(d.tokens), correct: correctOf(p, d.tokens) },
  });
  /** The output when exiting after `cut` output tokens: the kept thinking, its close, the target's greedy answer. */
  const exitOutput = (data: SplitData, i: number, cut: number, close: ThinkingClose): number[] => {
    const key = `${i}:${cut}:${close}`;
    let out = data.after.get(key);
    if (!out) {
      const kept = [...data.full[i].tokens.slice(0, cut), ...(close === 'after-split' ? [endThink] : ids.replaceIds)];
      const room = s.maxNewTokens - kept.length;
      const answer =
        room > 0 && !s.stopIds.includes(endThink)
          ? generate(target, [[...data.prompts[i].ids, ...kept]], { maxNewTokens: room, stopIds: s.stopIds })[0]
          : [];
      out = [...kept, ...answer].slice(0, s.maxNewTokens);
      data.after.set(key, out);
    }
    return out;
  };
  const outcomeAt =
    (data: SplitData, close: ThinkingClose) =>
    (i: number, cut: number): Outcome => {
      const tokens = exitOutput(data, i, cut, close);
      return { reasoning: reasoningOf(tokens), correct: correctOf(data.prompts[i], tokens) };
    };

  // 1. Calibration split: record, sweep, choose.
  const cal: SplitData = { prompts: calPrompts, full: [], cases: [], after: new Map() };
  calPrompts.forEach((p, i) => {
    const r = record(p, 2 * i);
    cal.full.push(r.decoded);
    cal.cases.push(caseOf(p, r.decoded, r.steps));
    o.log(
      `[calibrate record ${i + 1}/${calPrompts.length}] ${p.id}: ${r.decoded.tokens.length} tokens, reasoning ${cal.cases[i].full.reasoning}`,
    );
  });
  const rules = ruleGrid();
  const cuts = exitPoints(rules, cal.cases);
  const needed = new Set<string>();
  cuts.forEach((row, k) => row.forEach((c, i) => c !== null && needed.add(`${i}:${c}:${rules[k].close}`)));
  o.log(`calibration: ${rules.length} rules on ${calPrompts.length} prompts; ${needed.size} distinct exit points to continue`);
  let done = 0;
  for (const key of needed) {
    const [i, c, close] = key.split(':');
    exitOutput(cal, Number(i), Number(c), close as ThinkingClose);
    if (++done % 100 === 0) o.log(`[calibrate answers ${done}/${needed.size}]`);
  }
  const scores = rules.map((r, k) => scoreRule(r, cuts[k], cal.cases, outcomeAt(cal, r.close)));
  const pick = (filter: (r: ExitRule) => boolean): RuleScore | null => {
    const kept = scores.filter((x) => filter(x.rule));
    const at = chooseRule(kept, budget);
    return at === null ? null : kept[at];
  };
  const best = pick(() => true);
  if (!best)
    throw new Error(`no exit rule keeps accuracy within ${o.budgetPoints} points on the calibration split (eval.exit_accuracy_budget)`);
  o.log(`chosen: ${describeRule(best.rule)}`);

  // 2. Test split: record full thinking and decode with the chosen rule, alternating per prompt.
  const test: SplitData = { prompts: testPrompts, full: [], cases: [], after: new Map() };
  const decodedExit: Decoded[] = [];
  let exitsTaken = 0;
  testPrompts.forEach((p, i) => {
    const r = record(p, 2 * i + 1);
    test.full.push(r.decoded);
    test.cases.push(caseOf(p, r.decoded, r.steps));
    const e = decode(p, 2 * i + 1, new ExitPolicy({ ...best.rule, ...ids }));
    exitsTaken += e.exits;
    decodedExit.push({ tokens: e.tokens, seconds: e.seconds });
    o.log(
      `[test ${i + 1}/${testPrompts.length}] ${p.id}: reasoning ${test.cases[i].full.reasoning} -> ${reasoningOf(e.tokens)} tokens, ${r.decoded.seconds.toFixed(3)} s -> ${e.seconds.toFixed(3)} s`,
    );
  });
  const testScore = (rule: ExitRule) =>
    scoreRule(
      rule,
      test.cases.map((c) => exitAt(rule, c.steps)),
      test.cases,
      outcomeAt(test, rule.close),
    );
  const chosenTest = testScore(best.rule);
  let identical = 0;
  testPrompts.forEach((_, i) => {
    const cut = exitAt(best.rule, test.cases[i].steps);
    const simulated = cut === null ? test.full[i].tokens : exitOutput(test, i, cut, best.rule.close);
    if (sameTokens(simulated, decodedExit[i].tokens)) identical++;
  });
  const decodedFigures = figuresOf(
    testPrompts.length,
    exitsTaken,
    test.cases.map((c) => c.full),
    decodedExit.map((d, i) => ({ reasoning: reasoningOf(d.tokens), correct: correctOf(testPrompts[i], d.tokens) })),
  );

  const compared: CalibrationReport['compared'] = [
    { name: 'reference (SpecExit)', rule: REFERENCE_EXIT, calibration: null, test: toFigures(testScore(REFERENCE_EXIT)) },
  ];
  // Each change from SpecExit's rule, taken away on its own: the best rule without it, on the test split.
  const restricted: [string, (r: ExitRule) => boolean][] = [
    ["best with SpecExit's close (after-split)", (r) => r.close === 'after-split'],
    ["best with SpecExit's EWMA seeding (first)", (r) => r.seeding === 'first'],
    ["best with SpecExit's close and seeding", (r) => r.close === 'after-split' && r.seeding === 'first'],
    ["best with SpecExit's alpha 0.1", (r) => r.alpha === 0.1],
    ['best using confidence alone', (r) => r.minProgress === null && r.maxRemaining === null],
  ];
  for (const [name, filter] of restricted) {
    const b = pick(filter);
    compared.push({ name, rule: b?.rule ?? null, calibration: b ? toFigures(b) : null, test: b ? toFigures(testScore(b.rule)) : null });
  }

  // What an ideal signal could save: on each test prompt the exit point with the fewest reasoning tokens
  // that keeps a right answer right (any point on a prompt full thinking gets wrong).
  const thinksOn = { afterSplit: { exits: 0, of: 0 }, replaceSplit: { exits: 0, of: 0 } };
  const oracle = (close: ThinkingClose): SplitFigures => {
    const closeLength = close === 'after-split' ? 1 : ids.replaceIds.length;
    const count = close === 'after-split' ? thinksOn.afterSplit : thinksOn.replaceSplit;
    const chosen = test.cases.map((c, i) => {
      let best: Outcome = c.full;
      for (const st of c.steps) {
        if (!st.open || st.split === null) continue;
        const cut = st.at + st.split + (close === 'after-split' ? 1 : 0);
        const o = outcomeAt(test, close)(i, cut);
        count.of++;
        if (o.reasoning > cut + closeLength) count.exits++;
        if ((o.correct || !c.full.correct) && o.reasoning < best.reasoning) best = o;
      }
      return best;
    });
    return figuresOf(
      testPrompts.length,
      chosen.filter((o, i) => o !== test.cases[i].full).length,
      test.cases.map((c) => c.full),
      chosen,
    );
  };
  const bound = { afterSplit: oracle('after-split'), replaceSplit: oracle('replace-split') };

  const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / Math.max(1, xs.length);
  const full = mean(test.full.map((d) => d.seconds));
  const exit = mean(decodedExit.map((d) => d.seconds));
  const points = new Map<string, CalibrationReport['points'][number]>();
  for (const x of scores) {
    const key = `${x.saved.toFixed(6)}:${(x.accuracy ?? 0).toFixed(6)}:${x.rule.close}`;
    const pt = points.get(key) ?? { saved: x.saved, accuracy: x.accuracy ?? 0, close: x.rule.close, rules: 0 };
    pt.rules++;
    points.set(key, pt);
  }
  return {
    split: {
      calibration: calPrompts.length,
      test: testPrompts.length,
      rule: 'interleaved: prompts 1, 3, 5, ... calibrate; 2, 4, 6, ... test',
    },
    accuracyBudgetPoints: o.budgetPoints,
    rulesTried: rules.length,
    chosen: { rule: best.rule, calibration: toFigures(best), testSimulated: toFigures(chosenTest), testDecoded: decodedFigures },
    compared,
    oracle: bound,
    thinksOn,
    secondsPerAnswer: { full, exit, saved: full > 0 ? 1 - exit / full : 0 },
    simulationExact: { identical, of: testPrompts.length },
    points: [...points.values()],
  };
}

function toFigures(x: RuleScore): SplitFigures {
  return {
    prompts: x.prompts,
    exits: x.exits,
    reasoningTokens: { full: x.fullReasoning, exit: x.reasoning },
    reasoningSaved: x.saved,
    accuracy: x.accuracy === null || x.fullAccuracy === null ? null : { full: x.fullAccuracy, exit: x.accuracy, of: x.judged },
  };
}

function figuresOf(prompts: number, exits: number, full: Outcome[], exit: Outcome[]): SplitFigures {
  const sum = (xs: number[]) => xs.reduce((a, b) => a + b, 0);
  const judged = full.filter((f) => f.correct !== null).length;
  const f = sum(full.map((x) => x.reasoning));
  const e = sum(exit.map((x) => x.reasoning));
  return {
    prompts,
    exits,
    reasoningTokens: { full: f / Math.max(1, prompts), exit: e / Math.max(1, prompts) },
    reasoningSaved: f > 0 ? 1 - e / f : 0,
    accuracy: judged
      ? {
          full: full.filter((x) => x.correct).length / judged,
          exit: exit.filter((x, i) => full[i].correct !== null && x.correct).length / judged,
          of: judged,
        }
      : null,
  };
}

function sameTokens(a: number[], b: number[]): boolean {
  return a.length === b.length && a.every((t, i) => t === b[i]);
}
