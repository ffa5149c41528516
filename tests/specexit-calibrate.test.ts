// SpecExit calibration: the EWMA seedings against their plain weighted-sum formulas, the fast offline
// exit simulation against the live policy replayed over recorded traces, the 'replace-split' close, and
// the sweep on scripted signal sequences whose best rule is known by hand.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { type CalibrationCase, chooseRule, exitPoints, type Outcome, ruleGrid, scoreRule } from '../src/specexit/calibrate.ts';
import { specExitStep } from '../src/specexit/decode-step.ts';
import { ExitPolicy, type ExitRule, type ExitSignals, REFERENCE_EXIT } from '../src/specexit/policy.ts';
import { compileTrace, exitAt, replayExit, type ThinkingStep, type TraceEvent, TraceRecorder } from '../src/specexit/trace.ts';
import { prng } from './helpers.ts';

const THINK = 1;
const END = 2;
const SPLIT = 3;
const NL = 4;
const IDS = { splitIds: [SPLIT], thinkId: THINK, endThinkId: END, replaceIds: [NL, END] };
const sig = (confidence: number, progress: number, remaining: number): ExitSignals => ({ confidence, progress, remaining });

test('EWMA seedings: the smoothed confidence is the plain weighted sum of the step means', () => {
  const means = [0.1, 0.3, 0.9, 0.8, 0.95, 0.2];
  for (const alpha of [0.1, 0.5, 0.9]) {
    // first: x1 weighs (1-a)^(n-1), xk (k > 1) a(1-a)^(n-k). debiased: every xk a(1-a)^(n-k), over their sum.
    const first = (n: number) =>
      (1 - alpha) ** (n - 1) * means[0] + means.slice(1, n).reduce((a, x, k) => a + alpha * (1 - alpha) ** (n - 2 - k) * x, 0);
    const debiased = (n: number) => {
      const w = means.slice(0, n).map((_, k) => alpha * (1 - alpha) ** (n - 1 - k));
      return means.slice(0, n).reduce((a, x, k) => a + w[k] * x, 0) / w.reduce((a, b) => a + b, 0);
    };
    for (const [seeding, formula] of [
      ['first', first],
      ['debiased', debiased],
    ] as const) {
      const p = new ExitPolicy({ ...REFERENCE_EXIT, alpha, seeding, minConfidence: 2, ...IDS });
      p.observe([THINK]);
      means.forEach((m, i) => {
        // Two tokens per step: the policy averages them first.
        const d = p.step([5, 6], [sig(m - 0.05, 0, 0), sig(m + 0.05, 0, 0)]);
        assert.ok(Math.abs(d.smoothed!.confidence - formula(i + 1)) < 1e-12, `${seeding}, alpha ${alpha}, step ${i + 1}`);
      });
    }
  }
});

test("close 'replace-split': the split gives way to a newline and </think>; the decode step emits them one pass apart", () => {
  const p = new ExitPolicy({
    ...REFERENCE_EXIT,
    minConfidence: null,
    minProgress: null,
    maxRemaining: null,
    close: 'replace-split',
    ...IDS,
  });
  p.observe([THINK]);
  const d = p.step([5, SPLIT, 6], [sig(0, 0, 0), sig(0, 0, 0), sig(0, 0, 0)]);
  assert.ok(d.exit);
  if (d.exit) {
    assert.equal(d.keep, 1, 'the tokens before the split');
    assert.deepEqual(d.emit, [NL, END]);
  }
  const policy = new ExitPolicy({
    ...REFERENCE_EXIT,
    minConfidence: null,
    minProgress: null,
    maxRemaining: null,
    close: 'replace-split',
    ...IDS,
  });
  policy.observe([THINK]);
  const exit = { policy, signals: () => [sig(0, 0, 0), sig(0, 0, 0)] };
  const queue: number[] = [];
  const feats = () => ({ dispose() {} }) as never;
  const s1 = specExitStep(exit, queue, [7, SPLIT], 9, feats);
  assert.deepEqual([s1.keep, s1.bonus, s1.exited], [1, NL, true], 'the newline replaces the bonus token');
  assert.deepEqual(queue, [END], '</think> waits for the next pass');
  const s2 = specExitStep(exit, queue, [8, 8, 8], 9, feats);
  assert.deepEqual([s2.keep, s2.bonus, s2.exited], [0, END, false], 'the next pass accepts no draft token and emits </think>');
  assert.deepEqual(queue, []);
  assert.ok(!policy.isThinking);
  const s3 = specExitStep(exit, queue, [8], 9, feats);
  assert.deepEqual([s3.keep, s3.bonus], [1, 9], 'then decoding goes on as usual');
});

/** A random decode's SpecExit calls, recorded: passes of random accepted tokens and signals, bonus tokens. */
function randomTrace(seed: number): { events: TraceEvent[]; promptLength: number } {
  const rand = prng(seed);
  const rec = new TraceRecorder(THINK, END);
  const prompt = [10, 11, ...(rand() < 0.9 ? [THINK] : [])];
  rec.observe([...prompt, 12]);
  const queue: number[] = [];
  const feats = { dispose() {} } as never;
  for (let pass = 0; pass < 30; pass++) {
    const n = Math.floor(rand() * 5);
    const accepted = Array.from({ length: n }, () => {
      const r = rand();
      return r < 0.25 ? SPLIT : r < 0.27 ? END : r < 0.28 ? THINK : 20 + Math.floor(rand() * 5);
    });
    const signals = accepted.map(() => sig(rand(), rand(), rand() * 100));
    specExitStep({ policy: rec, signals: () => signals }, queue, accepted, 20 + Math.floor(rand() * 5), () => feats);
  }
  return { events: rec.events, promptLength: prompt.length };
}

function randomRule(rand: () => number): ExitRule {
  const maybe = (x: number) => (rand() < 0.25 ? null : x);
  return {
    alpha: rand() < 0.2 ? 1 : 0.05 + 0.9 * rand(),
    seeding: rand() < 0.5 ? 'first' : 'debiased',
    minConfidence: maybe(rand()),
    minProgress: maybe(rand()),
    maxRemaining: maybe(rand() * 100),
    close: rand() < 0.5 ? 'after-split' : 'replace-split',
  };
}

test('offline simulation (exitAt on a compiled trace) exits where the live policy replayed over the trace does', () => {
  const rand = prng(7);
  let exits = 0;
  let none = 0;
  for (let t = 0; t < 60; t++) {
    const { events, promptLength } = randomTrace(100 + t);
    const steps = compileTrace(events, promptLength, IDS);
    for (let k = 0; k < 40; k++) {
      const rule = randomRule(rand);
      const live = replayExit(events, promptLength, { ...rule, ...IDS });
      assert.equal(exitAt(rule, steps), live, `trace ${t}, rule ${JSON.stringify(rule)}`);
      if (live === null) none++;
      else exits++;
    }
  }
  assert.ok(exits > 300 && none > 300, `both outcomes tried: ${exits} exits, ${none} not`);
});

// Scripted prompts: every verify pass accepts 3 tokens, the third a step split; the first output token
// comes from prefill, so pass k starts at output offset 1 + 3k. Prompt i derives its answer in pass
// answer[i]: confidence is 0.1 before it and 0.95 from it on (prompt 3 also has a false 0.85 in pass 1);
// progress and remaining carry no information. An exit in pass k keeps 1 + 3k + 2 tokens and closes with
// two tokens ("\n</think>" or "\n\n</think>"), so the answer has 1 + 3k + 4 reasoning tokens; it is right
// when k >= answer[i]. Full thinking: 8 passes, 1 + 24 + 2 = 27 reasoning tokens, every answer right.
const ANSWER = [3, 5, 2, 4];
const FULL = 27;
const confidence = (i: number, k: number) => (k >= ANSWER[i] ? 0.95 : i === 3 && k === 1 ? 0.85 : 0.1);
const cases: CalibrationCase[] = ANSWER.map((_, i) => ({
  steps: Array.from({ length: 8 }, (_, k): ThinkingStep => ({ at: 1 + 3 * k, mean: sig(confidence(i, k), 0.5, 10), split: 2, open: true })),
  full: { reasoning: FULL, correct: true },
}));
const outcome =
  (rule: ExitRule) =>
  (i: number, cut: number): Outcome => {
    const pass = (cut - (rule.close === 'after-split' ? 3 : 2) - 1) / 3;
    assert.ok(Number.isInteger(pass), `an exit point at a split: ${cut}`);
    return { reasoning: cut + (rule.close === 'after-split' ? 1 : 2), correct: pass >= ANSWER[i] };
  };

function sweep(budget: number) {
  const rules = ruleGrid();
  const cuts = exitPoints(rules, cases);
  const scores = rules.map((r, k) => scoreRule(r, cuts[k], cases, outcome(r)));
  const at = chooseRule(scores, budget);
  assert.ok(at !== null);
  return { score: scores[at], cuts: cuts[at] };
}

test('the sweep on scripted signals: within a budget of 0 the best rule exits right when each answer is derived', () => {
  const { score, cuts } = sweep(0);
  // By hand: exits in passes 3, 5, 2, 4 keep 1 + 3k + 4 = 14, 20, 11, 17 reasoning tokens of 27 each.
  const kept = ANSWER.map((k) => 1 + 3 * k + 4);
  assert.deepEqual(
    cuts.map((c) => (c === null ? null : (c - (score.rule.close === 'after-split' ? 3 : 2) - 1) / 3)),
    ANSWER,
  );
  assert.equal(score.accuracy, 1);
  assert.ok(Math.abs(score.saved - (1 - kept.reduce((a, b) => a + b, 0) / (4 * FULL))) < 1e-12);
  assert.ok(Math.abs(score.reasoning - kept.reduce((a, b) => a + b, 0) / 4) < 1e-12);
  // Only confidence tells, and prompt 3's false 0.85 in pass 1 did not fool the rule (its exit is in pass 4).
  assert.notEqual(score.rule.minConfidence, null);
});

test('the sweep on scripted signals: a budget of one prompt in four buys the early exit on the false confidence', () => {
  const { score, cuts } = sweep(0.25);
  const pass = cuts.map((c) => (c === null ? null : (c - (score.rule.close === 'after-split' ? 3 : 2) - 1) / 3));
  assert.deepEqual(pass, [3, 5, 2, 1]);
  assert.equal(score.accuracy, 0.75);
  const kept = [3, 5, 2, 1].map((k) => 1 + 3 * k + 4);
  assert.ok(Math.abs(score.saved - (1 - kept.reduce((a, b) => a + b, 0) / (4 * FULL))) < 1e-12);
});

test('chooseRule: the budget is against full thinking; ties go to accuracy, then to the earlier rule; none within: null', () => {
  const s = (saved: number, accuracy: number) => ({
    rule: REFERENCE_EXIT,
    prompts: 100,
    judged: 100,
    exits: 0,
    reasoning: 0,
    fullReasoning: 0,
    saved,
    accuracy,
    fullAccuracy: 0.9,
  });
  assert.equal(chooseRule([s(0.1, 0.9), s(0.3, 0.885), s(0.4, 0.88)], 0.015), 1);
  assert.equal(chooseRule([s(0.1, 0.9), s(0.3, 0.885), s(0.4, 0.88)], 0.02), 2, 'a drop of exactly the budget is within it');
  assert.equal(chooseRule([s(0.3, 0.89), s(0.3, 0.9), s(0.3, 0.9)], 0.01), 1);
  assert.equal(chooseRule([s(0.3, 0.7)], 0.01), null);
  assert.throws(() => chooseRule([{ ...s(0.1, 0.9), accuracy: null, fullAccuracy: null }], 0.01), /needs prompts with reference answers/);
});
