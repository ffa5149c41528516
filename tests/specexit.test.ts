// SpecExit labels on hand-written spans and the exit policy on scripted signal sequences.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { specExitLabels } from '../src/specexit/labels.ts';
import { REFERENCE_EXIT, ExitPolicy } from '../src/specexit/policy.ts';

const close = (a: ArrayLike<number>, b: number[]) => Array.from(a).every((x, i) => Math.abs(x - b[i]) < 1e-6);

test('labels: progress, log-remaining and confidence inside a span; nothing outside', () => {
  // T = 8; span [2, 6): positions 2..5; answer first stated at 4.
  const l = specExitLabels(8, [2, 6], [4], () => true);
  assert.deepEqual(Array.from(l.spanMask), [0, 0, 1, 1, 1, 1, 0, 0]);
  assert.ok(close(l.progress, [0, 0, 0.25, 0.5, 0.75, 1, 0, 0]));
  assert.ok(close(l.logRemaining, [0, 0, Math.log(4), Math.log(3), Math.log(2), 0, 0, 0]));
  assert.deepEqual(Array.from(l.confidence), [0, 0, 0, 0, 1, 1, 0, 0]);
  assert.deepEqual(Array.from(l.confidenceMask), [0, 0, 1, 1, 1, 1, 0, 0]);
});

test('labels: edge cases', () => {
  const none = specExitLabels(5, [], [], () => true);
  assert.equal(
    none.spanMask.reduce((a, b) => a + b, 0),
    0,
    'no thinking span: no labels',
  );
  const never = specExitLabels(6, [1, 4], [-1], () => true);
  assert.deepEqual(Array.from(never.confidence), [0, 0, 0, 0, 0, 0], 'answer never derived: confidence 0 throughout');
  assert.deepEqual(Array.from(never.confidenceMask), [0, 1, 1, 1, 0, 0]);
  const noAnswer = specExitLabels(6, [1, 4], [-1], () => false);
  assert.deepEqual(Array.from(noAnswer.confidenceMask), [0, 0, 0, 0, 0, 0], 'no extractable answer: confidence masked');
  assert.deepEqual(Array.from(noAnswer.spanMask), [0, 1, 1, 1, 0, 0], '... progress still labelled');
  const two = specExitLabels(10, [1, 3, 5, 9], [2, 6], (k) => k === 1);
  assert.deepEqual(Array.from(two.spanMask), [0, 1, 1, 0, 0, 1, 1, 1, 1, 0], 'several turns with thinking');
  assert.deepEqual(Array.from(two.confidence), [0, 0, 0, 0, 0, 0, 1, 1, 1, 0]);
  assert.deepEqual(Array.from(two.confidenceMask), [0, 0, 0, 0, 0, 1, 1, 1, 1, 0]);
  const cut = specExitLabels(4, [1, 9], [2], () => true);
  assert.equal(
    cut.spanMask.reduce((a, b) => a + b, 0),
    0,
    'a span reaching past a truncated end gets no labels',
  );
});

const THINK = 1;
const END = 2;
const SPLIT = 3;
const policy = () => {
  const p = new ExitPolicy({ ...REFERENCE_EXIT, splitIds: [SPLIT], thinkId: THINK, endThinkId: END, replaceIds: [END] });
  p.observe([THINK]);
  return p;
};
const sig = (confidence: number, progress: number, remaining: number) => ({ confidence, progress, remaining });

test('exit policy: EWMA of per-step means, seeded by the first value', () => {
  const p = policy();
  const d1 = p.step([5, 6], [sig(0.2, 0.1, 300), sig(0.4, 0.3, 100)]);
  assert.deepEqual(d1.smoothed, { confidence: 0.30000000000000004, progress: 0.2, remaining: 200 });
  const d2 = p.step([7], [sig(1, 1, 0)]);
  assert.ok(!d2.exit);
  assert.ok(Math.abs(d2.smoothed!.confidence - (0.1 * 1 + 0.9 * 0.3)) < 1e-12);
  assert.ok(Math.abs(d2.smoothed!.remaining - 180) < 1e-9);
});

test('exit policy: exits only with every threshold passed, while thinking, at a split; cuts after the split', () => {
  const p = policy();
  const good = sig(0.95, 0.6, 50);
  assert.ok(!p.step([5, 6], [good, good]).exit, 'no split token in the accepted tokens');
  const d = p.step([5, SPLIT, 6], [good, good, good]);
  assert.ok(d.exit);
  if (d.exit) {
    assert.equal(d.keep, 2, 'keep through the split');
    assert.deepEqual(d.emit, [END]);
  }
  assert.ok(!p.isThinking);
  assert.ok(!p.step([SPLIT], [good]).exit, 'not thinking any more');
  assert.equal(p.exits, 1);

  for (const bad of [sig(0.8, 0.6, 50), sig(0.95, 0.3, 50), sig(0.95, 0.6, 200)]) {
    const q = policy();
    assert.ok(!q.step([SPLIT], [bad]).exit, `thresholds are strict: ${JSON.stringify(bad)}`);
  }
  const outside = new ExitPolicy({ ...REFERENCE_EXIT, splitIds: [SPLIT], thinkId: THINK, endThinkId: END, replaceIds: [END] });
  assert.ok(!outside.step([SPLIT], [good]).exit, 'never outside <think>');
  const ending = policy();
  assert.ok(!ending.step([SPLIT, END], [good, good]).exit, 'the model closes thinking itself in this step');
  assert.ok(!ending.isThinking);
});

test('signal losses: masked BCE on logits and MSE on log-remaining, against plain formulas', async () => {
  const tf = await import('@tensorflow/tfjs');
  const { initBackend } = await import('../src/backend/backend.ts');
  const { signalLosses, SignalMetrics } = await import('../src/specexit/loss.ts');
  await initBackend('cpu');
  const z = [2, -1, 0.5, -3, 0.2, 1.5, 0.7, 0.1, -0.4]; // 3 positions x 3 channels
  const y = [1, 0.5, 1, 0, 0.25, 0.2, 1, 1, 2];
  const m = [1, 1, 1, 1, 0, 0, 0, 1, 1];
  const batch = {
    targets: tf.tensor3d(y, [1, 3, 3]),
    masks: tf.tensor3d(m, [1, 3, 3]),
    host: { targets: Float32Array.from(y), masks: Uint8Array.from(m) },
  };
  const got = signalLosses(tf.tensor3d(z, [1, 3, 3]), batch).map((l) => l.dataSync()[0]);
  const sig = (x: number) => 1 / (1 + Math.exp(-x));
  const bce = (x: number, t: number) => -(t * Math.log(sig(x)) + (1 - t) * Math.log(1 - sig(x)));
  const expConf = (bce(2, 1) + bce(-3, 0)) / 2; // positions 0 and 1 carry confidence
  const expProg = (bce(-1, 0.5) + bce(0.1, 1)) / 2; // positions 0 and 2
  const expRem = ((0.5 - 1) ** 2 + (-0.4 - 2) ** 2) / 2;
  assert.ok(Math.abs(got[0] - expConf) < 1e-5 && Math.abs(got[1] - expProg) < 1e-5 && Math.abs(got[2] - expRem) < 1e-5, `${got}`);
  const metrics = new SignalMetrics();
  metrics.add(Float32Array.from(z), batch.host);
  const r = metrics.result();
  assert.equal(r.confidence_auc, 1, 'the positive outscores the negative');
  assert.equal(r.confidence_accuracy, 1);
  assert.ok(Math.abs(r.progress_mae! - (Math.abs(sig(-1) - 0.5) + Math.abs(sig(0.1) - 1)) / 2) < 1e-6);
  assert.ok(
    Math.abs(r.remaining_mae_tokens! - (Math.abs(Math.exp(0.5) - Math.exp(1)) + Math.abs(Math.exp(-0.4) - Math.exp(2))) / 2) < 1e-4,
  );
});
