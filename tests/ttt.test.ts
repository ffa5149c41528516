// The tfjs EAGLE-3 draft and TTT loss against the PyTorch golden vectors (losses, accuracies, gradients)
// and against the plain loop reference on other shapes (padding, GQA, longer TTT than the sequence).
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { before, describe, test } from 'node:test';
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../src/backend/backend.ts';
import { stopOrtGemm, useOrtGemm } from '../src/backend/matmul.ts';
import type { DraftConfig } from '../src/draft/config.ts';
import { Eagle3Draft, draftTensorShapes } from '../src/draft/eagle3.ts';
import { SafetensorsFile } from '../src/io/safetensors.ts';
import { softCrossEntropy } from '../src/train/soft-cross-entropy.ts';
import { prepareTeacher, tttGradients, tttLosses, simulatedAcceptanceLength, stepAccuracies, tttForward } from '../src/train/ttt.ts';
import { Rng } from '../src/util/random.ts';
import { fixture, maxAbs, maxAbsDiff } from './helpers.ts';
import { finiteDifference, plainEagle3Forward } from './reference/plain-eagle3.ts';

before(async () => {
  await initBackend('wasm');
});

const golden = JSON.parse(fs.readFileSync(fixture('golden/eagle3-ttt.json'), 'utf8'));
const file = new SafetensorsFile(fixture('golden/eagle3-ttt.safetensors'));
const f32 = (n: string) => file.read(n).data as Float32Array;
const ints = (n: string) => Array.from(file.read(n).data as BigInt64Array, Number);

function goldenSetup() {
  const c: DraftConfig = {
    hiddenSize: golden.hidden_size,
    targetHiddenSize: golden.target_hidden_size,
    intermediateSize: golden.intermediate_size,
    numHeads: golden.num_attention_heads,
    numKvHeads: golden.num_key_value_heads,
    headDim: golden.head_dim,
    vocabSize: golden.vocab_size,
    draftVocabSize: golden.draft_vocab_size,
    rmsNormEps: golden.rms_norm_eps,
    ropeTheta: golden.rope_theta,
    ropeScaling: null,
    maxPositionEmbeddings: 256,
    auxLayerIds: [1, 2, 3],
  };
  const weights = new Map(
    file
      .names()
      .filter((n) => n.startsWith('weight.') && !/\.(t2d|d2t)$/.test(n))
      .map((n) => [n.slice(7), f32(n)]),
  );
  const draft = new Eagle3Draft(c, weights);
  const { B, T } = golden;
  const d2t = ints('weight.d2t');
  const vocab = { used: Int32Array.from(d2t, (o, i) => i + o), t2d: file.read('weight.t2d').data as Uint8Array };
  const rows = (flat: number[]) => Array.from({ length: B }, (_, b) => flat.slice(b * T, (b + 1) * T));
  const batch = {
    inputIds: rows(ints('input.input_ids')),
    lossMask: rows(ints('input.loss_mask')),
    aux: tf.tensor3d(f32('input.aux_hidden_states'), [B, T, 3 * c.targetHiddenSize]),
    targetLogits: tf.tensor3d(f32('input.target_logits'), [B, T, c.vocabSize]),
  };
  const embed = tf.tensor2d(f32('input.embed_tokens'), [c.vocabSize, c.hiddenSize]);
  return { c, draft, vocab, batch, embed };
}

describe('EAGLE-3 TTT vs PyTorch golden vectors', () => {
  test('per-step losses, accuracies and the total', () => {
    const { draft, vocab, batch, embed } = goldenSetup();
    const teacher = prepareTeacher(batch, vocab);
    const out = tttForward(draft, embed, batch.aux, teacher, golden.ttt_length, { stepWeight: golden.step_weight });
    const losses = out.stepLosses.map((l) => l.dataSync()[0]);
    assert.ok(maxAbsDiff(losses, f32('expect.step_losses')) < 1e-5, `losses ${losses} vs ${f32('expect.step_losses')}`);
    const { acc } = stepAccuracies(teacher, out.draftArgmax);
    assert.ok(maxAbsDiff(acc, f32('expect.step_accs')) < 1e-6, `accs ${acc} vs ${f32('expect.step_accs')}`);
    assert.ok(Math.abs(out.total.dataSync()[0] - golden.total_loss) < 1e-5);
    tf.dispose([out.total, ...out.stepLosses, teacher.probs]);
    draft.dispose();
  });

  test('gradients of every trainable tensor', () => {
    const { draft, vocab, batch, embed } = goldenSetup();
    const teacher = prepareTeacher(batch, vocab);
    const kept: tf.Tensor[] = [];
    const { grads } = tf.variableGrads(() => {
      const out = tttForward(draft, embed, batch.aux, teacher, golden.ttt_length, { stepWeight: golden.step_weight });
      kept.push(...out.stepLosses);
      return out.total;
    }, draft.variables());
    const before = tf.memory().numTensors;
    for (const [name, v] of draft.params) {
      const g = v.rank === 2 ? tf.transpose(grads[v.name]) : grads[v.name]; // back to [out, in]
      const expected = f32(`grad.${name}`);
      const err = maxAbsDiff(g.dataSync(), expected);
      assert.ok(err <= 1e-4 * Math.max(1e-2, maxAbs(expected)), `${name}: max abs diff ${err}, grad scale ${maxAbs(expected)}`);
      if (g !== grads[v.name]) g.dispose();
    }
    assert.equal(tf.memory().numTensors, before);
    tf.dispose([...Object.values(grads), ...kept, teacher.probs]);
    draft.dispose();
  });

  test('simulated acceptance length', () => {
    assert.equal(simulatedAcceptanceLength([0.5, 0.5, 0]), 1 + 0.5 + 0.25 + 0);
    assert.equal(simulatedAcceptanceLength([]), 1);
  });
});

/** A small GQA draft (3 query heads per kv head) over a 30-token vocabulary, 12 of it in the draft's. */
const GQA_CONFIG: DraftConfig = {
  hiddenSize: 24,
  targetHiddenSize: 20,
  intermediateSize: 40,
  numHeads: 6,
  numKvHeads: 2,
  headDim: 4,
  vocabSize: 30,
  draftVocabSize: 12,
  rmsNormEps: 1e-6,
  ropeTheta: 500,
  ropeScaling: null,
  maxPositionEmbeddings: 64,
  auxLayerIds: [1, 2, 3],
};
const GQA_USED = Int32Array.from([0, 2, 3, 5, 8, 9, 13, 17, 20, 21, 26, 29]);

/** Random draft weights (norms near 1), drawn in the draft's tensor order from `normal`. */
function draftWeights(c: DraftConfig, normal: (n: number, s?: number) => Float32Array): Map<string, Float32Array> {
  const weights = new Map<string, Float32Array>();
  for (const [name, shape] of draftTensorShapes(c))
    weights.set(name, shape.length === 1 ? Float32Array.from(normal(shape[0], 0.1), (x) => 1 + x) : normal(shape[0] * shape[1], 0.3));
  return weights;
}

describe('EAGLE-3 TTT vs the plain loop reference (other shapes)', () => {
  // GQA with 3 query heads per kv head, a padded row, and more TTT steps than positions.
  const c = GQA_CONFIG;
  const B = 3;
  const T = 9;
  const ttt = 10;
  const rng = new Rng(11);
  const normal = (n: number, s = 1) => rng.normalArray(n, s);
  const weights = draftWeights(c, normal);
  const used = GQA_USED;
  const t2d = new Uint8Array(30);
  used.forEach((u) => (t2d[u] = 1));
  const lengths = [9, 9, 6];
  const inputIds = lengths.map((n) => Array.from({ length: T }, (_, t) => (t < n ? 1 + rng.int(29) : 0)));
  const lossMask = lengths.map((n, b) => Array.from({ length: T }, (_, t) => (t < n && t >= 2 + b ? 1 : 0)));
  const aux = normal(B * T * 3 * c.targetHiddenSize);
  // Target logits peaked on draft-vocabulary ids most of the time, so the position mask is mixed.
  const logits = normal(B * T * 30);
  for (let r = 0; r < B * T; r++) if (rng.next() < 0.7) logits[r * 30 + used[rng.int(12)]] += 4;
  const embed = normal(30 * c.hiddenSize, 0.5);
  const plainCfg = { ...c, tttLength: ttt, stepWeight: 0.8 };
  const plainIn = { embed, aux, inputIds, lossMask, targetLogits: logits, t2d, d2t: Array.from(used, (u, i) => u - i) };

  test('losses and accuracies within 1e-4; gradients match finite differences of the reference', () => {
    const ref = plainEagle3Forward(plainCfg, weights, plainIn);
    const draft = new Eagle3Draft(c, weights);
    const batch = {
      inputIds,
      lossMask,
      aux: tf.tensor3d(aux, [B, T, 3 * c.targetHiddenSize]),
      targetLogits: tf.tensor3d(logits, [B, T, 30]),
    };
    const teacher = prepareTeacher(batch, { used, t2d });
    const kept: tf.Tensor[] = [];
    let argmax: number[][][] = [];
    const emb = tf.tensor2d(embed, [30, c.hiddenSize]);
    const { value, grads } = tf.variableGrads(() => {
      const out = tttForward(draft, emb, batch.aux, teacher, ttt);
      kept.push(...out.stepLosses);
      argmax = out.draftArgmax;
      return out.total;
    }, draft.variables());
    const losses = kept.map((l) => l.dataSync()[0]);
    assert.ok(maxAbsDiff(losses, ref.stepLosses) <= 1e-4, `${losses} vs ${ref.stepLosses}`);
    assert.ok(Math.abs(value.dataSync()[0] - ref.totalLoss) <= 1e-4);
    assert.ok(maxAbsDiff(stepAccuracies(teacher, argmax).acc, ref.stepAccs) <= 1e-6);
    assert.ok(ref.stepLosses[0] > 0 && ref.stepLosses[ttt - 1] === 0, 'positions run out before the last step'); // t + 9 >= T everywhere
    for (const [name, index] of [
      ['fc.weight', 17],
      ['midlayer.self_attn.k_proj.weight', 40],
      ['midlayer.hidden_norm.weight', 3],
      ['lm_head.weight', 100],
      ['midlayer.mlp.down_proj.weight', 7],
    ] as const) {
      const v = draft.params.get(name)!;
      const g = (v.rank === 2 ? tf.transpose(grads[v.name]) : grads[v.name]).dataSync()[index];
      const fd = finiteDifference(plainCfg, weights, plainIn, name, index);
      assert.ok(Math.abs(g - fd) <= 1e-3 * Math.abs(fd) + 1e-5, `${name}[${index}]: autodiff ${g} vs finite difference ${fd}`);
    }
    tf.dispose([value, ...Object.values(grads), ...kept, teacher.probs, batch.aux, batch.targetLogits, emb]);
    draft.dispose();
  });

  test('the fused chunked lm_head + loss and the chunked attention equal the plain ones: losses, argmax and every gradient', () => {
    const draft = new Eagle3Draft(c, weights);
    const batch = {
      inputIds,
      lossMask,
      aux: tf.tensor3d(aux, [B, T, 3 * c.targetHiddenSize]),
      targetLogits: tf.tensor3d(logits, [B, T, 30]),
    };
    const teacher = prepareTeacher(batch, { used, t2d });
    const emb = tf.tensor2d(embed, [30, c.hiddenSize]);
    const run = (lossChunkRows: number, attentionChunkRows = 0) => {
      const kept: tf.Tensor[] = [];
      let argmax: number[][][] = [];
      const { value, grads } = tf.variableGrads(() => {
        const out = tttForward(draft, emb, batch.aux, teacher, ttt, { lossChunkRows, attentionChunkRows });
        kept.push(...out.stepLosses);
        argmax = out.draftArgmax;
        return out.total;
      }, draft.variables());
      const res = {
        total: value.dataSync()[0],
        losses: kept.map((l) => l.dataSync()[0]),
        argmax,
        grads: Object.fromEntries(Object.entries(grads).map(([k, g]) => [k, g.dataSync() as Float32Array])),
      };
      tf.dispose([value, ...Object.values(grads), ...kept]);
      return res;
    };
    const plain = run(0);
    for (const [rows, attentionRows] of [
      [1, 0],
      [2, 0],
      [4, 0],
      [0, 2],
      [3, 4],
    ]) {
      const fused = run(rows, attentionRows);
      assert.ok(Math.abs(fused.total - plain.total) <= 1e-5, `rows ${rows}: total ${fused.total} vs ${plain.total}`);
      assert.ok(maxAbsDiff(fused.losses, plain.losses) <= 1e-5);
      assert.deepEqual(fused.argmax, plain.argmax);
      for (const [k, g] of Object.entries(plain.grads)) assert.ok(maxAbsDiff(fused.grads[k], g) <= 1e-5, `rows ${rows}: gradient of ${k}`);
    }
    tf.dispose([teacher.probs, batch.aux, batch.targetLogits, emb]);
    draft.dispose();
  });

  test('with every product on ONNX Runtime GEMM: losses, argmax and every gradient as with tfjs products', async () => {
    const draft = new Eagle3Draft(c, weights);
    const batch = {
      inputIds,
      lossMask,
      aux: tf.tensor3d(aux, [B, T, 3 * c.targetHiddenSize]),
      targetLogits: tf.tensor3d(logits, [B, T, 30]),
    };
    const teacher = prepareTeacher(batch, { used, t2d });
    const emb = tf.tensor2d(embed, [30, c.hiddenSize]);
    const run = () => {
      const re = tttGradients(draft, emb, batch.aux, teacher, 4, { lossChunkRows: 4, attentionChunkRows: 3 });
      const grads = Object.fromEntries(Object.entries(re.grads).map(([k, g]) => [k, g.dataSync() as Float32Array]));
      tf.dispose(Object.values(re.grads));
      return { ...re, grads };
    };
    const plain = run();
    await useOrtGemm(1, 0);
    let ort: ReturnType<typeof run>;
    try {
      ort = run();
    } finally {
      stopOrtGemm();
    }
    assert.ok(maxAbsDiff(ort.stepLosses, plain.stepLosses) <= 1e-5);
    assert.deepEqual(ort.draftArgmax, plain.draftArgmax);
    for (const [k, g] of Object.entries(plain.grads)) assert.ok(maxAbsDiff(ort.grads[k], g) <= 1e-5, `gradient of ${k}`);
    tf.dispose([teacher.probs, batch.aux, batch.targetLogits, emb]);
    draft.dispose();
  });

  test('held-out losses (tttLosses, one scope per step) equal the taped forward and hold nothing after', () => {
    const draft = new Eagle3Draft(c, weights);
    const batch = {
      inputIds,
      lossMask,
      aux: tf.tensor3d(aux, [B, T, 3 * c.targetHiddenSize]),
      targetLogits: tf.tensor3d(logits, [B, T, 30]),
    };
    const teacher = prepareTeacher(batch, { used, t2d });
    const emb = tf.tensor2d(embed, [30, c.hiddenSize]);
    const out = tttForward(draft, emb, batch.aux, teacher, ttt, { lossChunkRows: 4 });
    const before = tf.memory().numTensors;
    const eval_ = tttLosses(draft, emb, batch.aux, teacher, ttt, { lossChunkRows: 4 });
    assert.equal(tf.memory().numTensors, before);
    assert.ok(
      maxAbsDiff(
        eval_.stepLosses,
        out.stepLosses.map((l) => l.dataSync()[0]),
      ) <= 1e-6,
    );
    assert.deepEqual(eval_.draftArgmax, out.draftArgmax);
    tf.dispose([out.total, ...out.stepLosses, teacher.probs, batch.aux, batch.targetLogits, emb]);
    draft.dispose();
  });

  test('recomputing each TTT step in the backward pass (activation checkpointing) gives the taped losses, argmax and every gradient', () => {
    const draft = new Eagle3Draft(c, weights);
    const batch = {
      inputIds,
      lossMask,
      aux: tf.tensor3d(aux, [B, T, 3 * c.targetHiddenSize]),
      targetLogits: tf.tensor3d(logits, [B, T, 30]),
    };
    const teacher = prepareTeacher(batch, { used, t2d });
    const emb = tf.tensor2d(embed, [30, c.hiddenSize]);
    for (const [lossChunkRows, attentionChunkRows, steps] of [
      [0, 0, ttt],
      [4, 3, ttt],
      [2, 0, 1],
      [0, 2, 3],
    ]) {
      const kept: tf.Tensor[] = [];
      let argmax: number[][][] = [];
      const taped = tf.variableGrads(() => {
        const out = tttForward(draft, emb, batch.aux, teacher, steps, { lossChunkRows, attentionChunkRows });
        kept.push(...out.stepLosses);
        argmax = out.draftArgmax;
        return tf.mul(out.total, 0.5) as tf.Scalar;
      }, draft.variables());
      const before = tf.memory().numTensors;
      const re = tttGradients(draft, emb, batch.aux, teacher, steps, { lossChunkRows, attentionChunkRows, scale: 0.5 });
      const what = `loss rows ${lossChunkRows}, attention rows ${attentionChunkRows}, ${steps} steps`;
      assert.equal(tf.memory().numTensors, before + Object.keys(re.grads).length, `${what}: only the gradients stay held`);
      assert.ok(Math.abs(re.total * 0.5 - taped.value.dataSync()[0]) <= 1e-5, what);
      assert.ok(
        maxAbsDiff(
          re.stepLosses,
          kept.map((l) => l.dataSync()[0]),
        ) <= 1e-5,
        what,
      );
      assert.deepEqual(re.draftArgmax, argmax, what);
      assert.deepEqual(Object.keys(re.grads).sort(), Object.keys(taped.grads).sort(), what);
      for (const [k, g] of Object.entries(taped.grads)) {
        const d = maxAbsDiff(re.grads[k].dataSync() as Float32Array, g.dataSync() as Float32Array);
        assert.ok(d <= 1e-5, `${what}: gradient of ${k} differs by ${d}`);
      }
      tf.dispose([taped.value, ...Object.values(taped.grads), ...Object.values(re.grads), ...kept]);
    }
    // And against finite differences of the independent reference, on the weights that only later steps' keys reach.
    const re = tttGradients(draft, emb, batch.aux, teacher, ttt);
    for (const [name, index] of [
      ['fc.weight', 5],
      ['midlayer.self_attn.k_proj.weight', 11],
      ['midlayer.self_attn.v_proj.weight', 23],
    ] as const) {
      const v = draft.params.get(name)!;
      const g = (v.rank === 2 ? tf.transpose(re.grads[v.name]) : re.grads[v.name]).dataSync()[index];
      const fd = finiteDifference(plainCfg, weights, plainIn, name, index);
      assert.ok(Math.abs(g - fd) <= 1e-3 * Math.abs(fd) + 1e-5, `${name}[${index}]: recomputed ${g} vs finite difference ${fd}`);
    }
    tf.dispose([...Object.values(re.grads), teacher.probs, batch.aux, batch.targetLogits, emb]);
    draft.dispose();
  });
});

describe('the whole TTT step as one ONNX Runtime graph (ort-step.ts)', () => {
  // The same shapes as above: GQA 3:1, a padded row, more TTT steps than positions.
  const c = GQA_CONFIG;
  const rng = new Rng(12);
  const normal = (n: number, s = 1) => rng.normalArray(n, s);
  const weights = draftWeights(c, normal);
  const used = GQA_USED;
  const t2d = new Uint8Array(30);
  used.forEach((u) => (t2d[u] = 1));
  const embed = normal(30 * c.hiddenSize, 0.5);
  const batchOf = (lengths: number[], T: number) => {
    const inputIds = lengths.map((n) => Array.from({ length: T }, (_, t) => (t < n ? 1 + rng.int(29) : 0)));
    const lossMask = lengths.map((n, b) => Array.from({ length: T }, (_, t) => (t < n && t >= 1 + b ? 1 : 0)));
    const aux = normal(lengths.length * T * 3 * c.targetHiddenSize);
    const logits = normal(lengths.length * T * 30);
    for (let r = 0; r < lengths.length * T; r++) if (rng.next() < 0.7) logits[r * 30 + used[rng.int(12)]] += 4;
    return { inputIds, lossMask, aux, logits };
  };

  test('losses, argmax and every gradient equal tttGradients (tfjs) for several batch shapes and step counts, and finite differences of the reference', async () => {
    const { OrtTttStep } = await import('../src/train/ort-step.ts');
    const { ortWorker } = await import('../src/backend/matmul.ts');
    const draft = new Eagle3Draft(c, weights);
    const emb = tf.tensor2d(embed, [30, c.hiddenSize]);
    await useOrtGemm(1);
    try {
      // The 7-step case recomputes logits and attention probabilities in the backward pass.
      for (const [lengths, T, steps] of [
        [[9, 9, 6], 9, 10],
        [[5, 3], 5, 3],
        [[12], 12, 1],
        [[7, 7, 2, 4], 7, 7],
        [[6, 6, 3], 6, 2],
      ] as [number[], number, number][]) {
        const b = batchOf(lengths, T);
        const B = lengths.length;
        const batch = {
          inputIds: b.inputIds,
          lossMask: b.lossMask,
          aux: tf.tensor3d(b.aux, [B, T, 3 * c.targetHiddenSize]),
          targetLogits: tf.tensor3d(b.logits, [B, T, 30]),
        };
        const teacher = prepareTeacher(batch, { used, t2d });
        const what = `B ${B}, T ${T}, ${steps} steps`;
        const opts = { normaliser: 2 * B * T, scale: 0.5 };
        const plain = tttGradients(draft, emb, batch.aux, teacher, steps, opts);
        const ort = new OrtTttStep(ortWorker()!, draft, steps).gradients(emb, batch.aux, teacher, {
          ...opts,
          recompute: steps === 7 || steps === 2,
        });
        assert.ok(Math.abs(ort.total - plain.total) <= 1e-5, `${what}: total ${ort.total} vs ${plain.total}`);
        assert.ok(maxAbsDiff(ort.stepLosses, plain.stepLosses) <= 1e-5, `${what}: ${ort.stepLosses} vs ${plain.stepLosses}`);
        assert.deepEqual(ort.draftArgmax, plain.draftArgmax, what);
        assert.deepEqual(Object.keys(ort.grads).sort(), Object.keys(plain.grads).sort(), what);
        for (const [k, g] of Object.entries(plain.grads)) {
          const d = maxAbsDiff(ort.grads[k], g.dataSync() as Float32Array);
          assert.ok(d <= 1e-5 * Math.max(1, maxAbs(g.dataSync() as Float32Array)), `${what}: gradient of ${k} differs by ${d}`);
        }
        if (steps === 10) {
          // Independent of tfjs: finite differences of the plain reference, on weights later steps' keys reach.
          const plainCfg = { ...c, tttLength: steps, stepWeight: 0.8 };
          const plainIn = {
            embed,
            aux: b.aux,
            inputIds: b.inputIds,
            lossMask: b.lossMask,
            targetLogits: b.logits,
            t2d,
            d2t: Array.from(used, (u, i) => u - i),
          };
          for (const [name, index] of [
            ['fc.weight', 5],
            ['midlayer.self_attn.k_proj.weight', 11],
            ['midlayer.self_attn.v_proj.weight', 23],
            ['midlayer.input_layernorm.weight', 2],
            ['lm_head.weight', 40],
          ] as const) {
            const v = draft.params.get(name)!;
            // The graph's gradient is of 0.5 * total / 2 (scale and a doubled normaliser).
            const graph = tf.tensor(ort.grads[v.name], v.shape);
            const g = 4 * (v.rank === 2 ? tf.transpose(graph) : graph).dataSync()[index];
            const fd = finiteDifference(plainCfg, weights, plainIn, name, index);
            assert.ok(Math.abs(g - fd) <= 1e-3 * Math.abs(fd) + 1e-5, `${name}[${index}]: ORT ${g} vs finite difference ${fd}`);
          }
        }
        tf.dispose([...Object.values(plain.grads), ...Object.values(ort.grads), teacher.probs, batch.aux, batch.targetLogits]);
      }
    } finally {
      stopOrtGemm();
      emb.dispose();
      draft.dispose();
    }
  });
});

describe('draft decoding with a KV cache', () => {
  test('prefill and a draft chain reproduce the TTT steps (causal + diagonal attention)', async () => {
    const { draftDecode, DraftKVCache } = await import('../src/draft/eagle3.ts');
    const { draft, vocab, batch, embed } = goldenSetup();
    const teacher = prepareTeacher(batch, vocab);
    const out = tttForward(draft, embed, batch.aux, teacher, 4, { keepLogits: true });
    const T = golden.T;
    const Vd = golden.draft_vocab_size;
    const ids = teacher.ids[1]; // shifted ids of row 1: ids[t] = x[t+1]
    const g = draft.projectFeatures(batch.aux.slice([1, 0, 0], [1, T, -1]) as tf.Tensor3D);
    for (const t of [0, 5, 8]) {
      const cache = new DraftKVCache();
      // Context: positions 0..t with hidden fc(aux) -> TTT step 0 at those positions.
      const pre = draftDecode(draft, embed, cache, {
        ids: ids.slice(0, t + 1),
        hidden: g.slice([0, 0, 0], [1, t + 1, -1]) as tf.Tensor3D,
        positions: Array.from({ length: t + 1 }, (_, i) => i),
      });
      const step0 = out.stepLogits![0].slice([1, 0, 0], [1, t + 1, Vd]);
      assert.ok(maxAbsDiff(pre.logits.dataSync(), step0.dataSync()) < 1e-4, `prefill up to ${t}`);
      // Chain: step i at position t + i, hidden = previous output, token ids[t + i].
      let hidden = pre.out.slice([0, t, 0], [1, 1, -1]) as tf.Tensor3D;
      for (let i = 1; i < 4 && t + i < T; i++) {
        const d = draftDecode(draft, embed, cache, { ids: [ids[t + i]], hidden, positions: [t + i] });
        const expected = out.stepLogits![i].slice([1, t, 0], [1, 1, Vd]);
        assert.ok(maxAbsDiff(d.logits.dataSync(), expected.dataSync()) < 1e-4, `chain step ${i} at ${t}`);
        hidden = d.out;
      }
      cache.dispose();
    }
  });
});

test('the fused loss value is summed accurately: 600k terms within 1e-6 relative of a float64 sum', () => {
  const [T, H, Vd] = [1500, 8, 400];
  const rng = new Rng(21);
  const h = rng.normalArray(T * H);
  const w = rng.normalArray(H * Vd, 0.5);
  const z = rng.normalArray(T * Vd);
  const mask = Float32Array.from({ length: T }, (_, t) => (t % 7 === 3 ? 0 : 1));
  // Teacher rows: a softmax per row, so that every term is small and of one sign (the drift case).
  const probs = new Float32Array(T * Vd);
  for (let t = 0; t < T; t++) {
    let sum = 0;
    for (let v = 0; v < Vd; v++) sum += Math.exp(z[t * Vd + v]);
    for (let v = 0; v < Vd; v++) probs[t * Vd + v] = Math.exp(z[t * Vd + v]) / sum;
  }
  // float64 reference: -(1/T) sum_t m_t sum_v p_tv log softmax(h_t W)_v.
  let ref = 0;
  for (let t = 0; t < T; t++) {
    const logits = Array.from({ length: Vd }, (_, v) => {
      let s = 0;
      for (let k = 0; k < H; k++) s += h[t * H + k] * w[k * Vd + v];
      return s;
    });
    const max = Math.max(...logits);
    const lse = max + Math.log(logits.reduce((a, x) => a + Math.exp(x - max), 0));
    let row = 0;
    for (let v = 0; v < Vd; v++) row += probs[t * Vd + v] * (logits[v] - lse);
    ref -= (mask[t] * row) / T;
  }
  const out = softCrossEntropy(
    tf.tensor3d(h, [1, T, H]),
    tf.tensor2d(w, [H, Vd]),
    tf.tensor3d(probs, [1, T, Vd]),
    0,
    tf.tensor2d(mask, [1, T]),
    T,
    512,
  );
  const got = out.loss.dataSync()[0];
  assert.ok(Math.abs(got - ref) <= 1e-6 * Math.abs(ref), `loss ${got} vs float64 ${ref}`);
});
