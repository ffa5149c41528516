// A micro-batch run in chunks (src/train/chunks.ts) equals the whole padded batch: the chunk plan, and the
// summed TTT losses, accuracies, gradients and SpecExit losses against the whole batch and against the
// plain loop reference.
import assert from 'node:assert/strict';
import { before, describe, test } from 'node:test';
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../src/backend/backend.ts';
import type { DraftConfig } from '../src/draft/config.ts';
import { Eagle3Draft, draftTensorShapes } from '../src/draft/eagle3.ts';
import { signalBatch, signalLosses, signalMaskCounts } from '../src/specexit/loss.ts';
import type { FeatureSample } from '../src/store/schema.ts';
import { planChunks } from '../src/train/chunks.ts';
import { prepareTeacher, stepAccuracies, tttForward } from '../src/train/ttt.ts';
import { Rng } from '../src/util/random.ts';
import { maxAbsDiff } from './helpers.ts';
import { plainEagle3Forward } from './reference/plain-eagle3.ts';

before(async () => {
  await initBackend('wasm');
});

describe('chunk plan', () => {
  test('budget 0 is the whole batch padded to T', () => {
    assert.deepEqual(planChunks([3, 7, 5], 0, 7), [{ indices: [0, 1, 2], padTo: 7 }]);
  });

  test('longest first, one position of padding past the longest, at most T, within the budget', () => {
    // lengths 9 9 6 4 2 with T = 9: padded lengths 9, 7, 5, 3.
    assert.deepEqual(planChunks([4, 9, 2, 9, 6], 18, 9), [
      { indices: [1, 3], padTo: 9 },
      { indices: [4, 0], padTo: 7 },
      { indices: [2], padTo: 3 },
    ]);
    assert.deepEqual(
      planChunks([4, 9, 2, 9, 6], 1, 9).map((c) => c.indices),
      [[1], [3], [4], [0], [2]],
    );
  });

  test('random batches: every sample in exactly one chunk, each chunk within its budget or alone', () => {
    const rng = new Rng(5);
    for (let trial = 0; trial < 200; trial++) {
      const lengths = Array.from({ length: 1 + rng.int(12) }, () => 1 + rng.int(40));
      const T = Math.max(...lengths) + rng.int(3);
      const budget = rng.int(200);
      const chunks = planChunks(lengths, budget, T);
      assert.deepEqual(
        chunks.flatMap((c) => c.indices).sort((a, b) => a - b),
        lengths.map((_, i) => i),
      );
      for (const c of chunks) {
        const longest = Math.max(...c.indices.map((i) => lengths[i]));
        assert.equal(c.padTo, budget > 0 ? Math.min(T, longest + 1) : T);
        assert.ok(budget === 0 || c.indices.length === 1 || c.indices.length * c.padTo <= budget);
      }
    }
  });

  test('a sample longer than the batch length is an error', () => {
    assert.throws(() => planChunks([3, 12], 16, 10), /longer than the batch length 10/);
  });
});

describe('chunked TTT equals the whole batch', () => {
  const c: DraftConfig = {
    hiddenSize: 24,
    targetHiddenSize: 20,
    intermediateSize: 40,
    numHeads: 4,
    numKvHeads: 2,
    headDim: 6,
    vocabSize: 30,
    draftVocabSize: 12,
    rmsNormEps: 1e-6,
    ropeTheta: 500,
    ropeScaling: null,
    maxPositionEmbeddings: 64,
    auxLayerIds: [1, 2, 3],
  };
  const V = 30;
  const W = 3 * c.targetHiddenSize;
  const T = 9;
  const ttt = 4;
  // Every sample's loss mask reaches its last real token, so a chunk must show that token the padding
  // row that follows it in the whole batch (the +1 of the plan).
  const lengths = [4, 9, 6, 2, 9, 7];
  const B = lengths.length;
  const rng = new Rng(23);
  const weights = new Map<string, Float32Array>();
  for (const [name, shape] of draftTensorShapes(c))
    weights.set(
      name,
      shape.length === 1 ? Float32Array.from(rng.normalArray(shape[0], 0.1), (x) => 1 + x) : rng.normalArray(shape[0] * shape[1], 0.3),
    );
  const used = Int32Array.from([0, 2, 3, 5, 8, 9, 13, 17, 20, 21, 26, 29]);
  const t2d = new Uint8Array(V);
  used.forEach((u) => (t2d[u] = 1));
  const embed = rng.normalArray(V * c.hiddenSize, 0.5);
  // Per sample: ids, mask, features and target logits of its real positions; the padding row's target
  // logits are those of zero features (what the teacher head gives there), here a fixed row whose argmax
  // is in the draft vocabulary, so that the last real tokens count.
  const padLogits = rng.normalArray(V, 1);
  padLogits[used[3]] += 5;
  const samples = lengths.map((n, b) => {
    const logits = rng.normalArray(n * V);
    for (let t = 0; t < n; t++) if (rng.next() < 0.7) logits[t * V + used[rng.int(12)]] += 4;
    return {
      ids: Array.from({ length: n }, () => 1 + rng.int(V - 1)),
      mask: Array.from({ length: n }, (_, t) => (t >= b % 2 ? 1 : 0)),
      aux: rng.normalArray(n * W),
      logits,
    };
  });

  function collate(idx: number[], padTo: number) {
    const aux = new Float32Array(idx.length * padTo * W);
    const logits = new Float32Array(idx.length * padTo * V);
    idx.forEach((i, r) => {
      aux.set(samples[i].aux, r * padTo * W);
      logits.set(samples[i].logits, r * padTo * V);
      for (let t = lengths[i]; t < padTo; t++) logits.set(padLogits, (r * padTo + t) * V);
    });
    const pad = (xs: number[]) => Array.from({ length: padTo }, (_, t) => (t < xs.length ? xs[t] : 0));
    return {
      inputIds: idx.map((i) => pad(samples[i].ids)),
      lossMask: idx.map((i) => pad(samples[i].mask)),
      aux: tf.tensor3d(aux, [idx.length, padTo, W]),
      targetLogits: tf.tensor3d(logits, [idx.length, padTo, V]),
      host: { aux, logits },
    };
  }

  const draft = new Eagle3Draft(c, weights);
  const emb = tf.tensor2d(embed, [V, c.hiddenSize]);
  /** Step losses, accuracy counts and gradients of `idx` padded to `padTo`, normalised by `normaliser`. */
  function run(idx: number[], padTo: number, normaliser: number) {
    const batch = collate(idx, padTo);
    const teacher = prepareTeacher(batch, { used, t2d });
    const kept: tf.Scalar[] = [];
    let argmax: number[][][] = [];
    const { value, grads } = tf.variableGrads(() => {
      const out = tttForward(draft, emb, batch.aux, teacher, ttt, { normaliser });
      kept.push(...out.stepLosses);
      argmax = out.draftArgmax;
      return out.total;
    }, draft.variables());
    const acc = stepAccuracies(teacher, argmax);
    const res = {
      losses: kept.map((l) => l.dataSync()[0]),
      correct: acc.correct,
      counted: acc.counted,
      grads: new Map(Object.entries(grads).map(([k, g]) => [k, g.dataSync() as Float32Array])),
    };
    tf.dispose([value, ...kept, ...Object.values(grads), teacher.probs, batch.aux, batch.targetLogits]);
    return res;
  }
  const all = lengths.map((_, i) => i);
  const whole = run(all, T, B * T);

  test('the whole batch matches the plain loop reference', () => {
    const batch = collate(all, T);
    const ref = plainEagle3Forward({ ...c, tttLength: ttt, stepWeight: 0.8 }, weights, {
      embed,
      aux: batch.host.aux,
      inputIds: batch.inputIds,
      lossMask: batch.lossMask,
      targetLogits: batch.host.logits,
      t2d,
      d2t: Array.from(used, (u, i) => u - i),
    });
    tf.dispose([batch.aux, batch.targetLogits]);
    assert.ok(maxAbsDiff(whole.losses, ref.stepLosses) <= 1e-4, `${whole.losses} vs ${ref.stepLosses}`);
  });

  for (const budget of [1, 12, 18, 30]) {
    test(`chunks of at most ${budget} positions: losses within 1e-6, same accuracy counts, gradients within 1e-5`, () => {
      const chunks = planChunks(lengths, budget, T);
      assert.ok(chunks.length > 1);
      const losses = new Array(ttt).fill(0);
      const correct = new Array(ttt).fill(0);
      const counted = new Array(ttt).fill(0);
      const grads = new Map<string, Float32Array>();
      for (const ch of chunks) {
        const part = run(ch.indices, ch.padTo, B * T);
        part.losses.forEach((l, k) => (losses[k] += l));
        part.correct.forEach((x, k) => {
          correct[k] += x;
          counted[k] += part.counted[k];
        });
        for (const [k, g] of part.grads) grads.set(k, grads.has(k) ? grads.get(k)!.map((x, i) => x + g[i]) : g);
      }
      assert.ok(maxAbsDiff(losses, whole.losses) <= 1e-6, `${losses} vs ${whole.losses}`);
      assert.deepEqual(correct, whole.correct);
      assert.deepEqual(counted, whole.counted);
      for (const [k, g] of whole.grads) assert.ok(maxAbsDiff(grads.get(k)!, g) <= 1e-5, k);
    });
  }

  test('without the padding row after its longest sample a chunk computes something else', () => {
    // The check above can fail: padding chunk [0] (length 4) to exactly 4 drops its last token's target.
    const exact = run([0], 4, B * T);
    const padded = run([0], 5, B * T);
    assert.ok(Math.abs(exact.losses[0] - padded.losses[0]) > 1e-4);
  });

  test('SpecExit losses with the batch divisors add up over chunks', () => {
    const feature = (n: number, b: number): FeatureSample => ({
      id: `s${b}`,
      inputIds: new Int32Array(n),
      lossMask: new Uint8Array(n),
      aux: new Float32Array(0),
      finalHidden: new Float32Array(0),
      thinkSpans: Int32Array.from(n > 3 ? [1, n - 2] : []),
      answerPositions: Int32Array.from(n > 3 ? [b % 2 ? 2 : -1] : []),
      answer: b % 3 ? '12' : '',
    });
    const fs = lengths.map(feature);
    const z = rng.normalArray(B * T * 3);
    const zOf = (idx: number[], padTo: number) => {
      const out = new Float32Array(idx.length * padTo * 3);
      idx.forEach((i, r) => out.set(z.subarray(i * T * 3, i * T * 3 + lengths[i] * 3), r * padTo * 3));
      return tf.tensor3d(out, [idx.length, padTo, 3]);
    };
    const lossesOf = (idx: number[], padTo: number, divisors?: [number, number, number]) => {
      const sig = signalBatch(
        idx.map((i) => fs[i]),
        padTo,
      );
      const zt = zOf(idx, padTo);
      const ls = signalLosses(zt, sig, divisors).map((l) => l.dataSync()[0]);
      tf.dispose([zt, sig.targets, sig.masks]);
      return ls;
    };
    const wholeLosses = lossesOf(all, T);
    const divisors = signalMaskCounts(fs);
    assert.ok(divisors.every((d) => d > 0));
    const sum = [0, 0, 0];
    for (const ch of planChunks(lengths, 10, T)) lossesOf(ch.indices, ch.padTo, divisors).forEach((l, k) => (sum[k] += l));
    assert.ok(maxAbsDiff(sum, wholeLosses) <= 1e-5, `${sum} vs ${wholeLosses}`);
  });
});
