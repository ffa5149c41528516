// The tfjs EAGLE-3 draft and TTT loss against the PyTorch golden vectors (losses, accuracies, gradients)
// and against the plain loop reference on other shapes (padding, GQA, longer TTT than the sequence).
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { before, describe, test } from 'node:test';
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../src/backend/backend.ts';
import type { DraftConfig } from '../src/draft/config.ts';
import { Eagle3Draft } from '../src/draft/eagle3.ts';
import { SafetensorsFile } from '../src/io/safetensors.ts';
import { prepareTeacher, simulatedAcceptanceLength, stepAccuracies, tttForward } from '../src/train/ttt.ts';
import { fixture, maxAbs, maxAbsDiff } from './helpers.ts';

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
  const weights = new Map(file.names().filter((n) => n.startsWith('weight.') && !/\.(t2d|d2t)$/.test(n)).map((n) => [n.slice(7), f32(n)]));
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
    const out = tttForward(draft, embed, batch.aux, teacher, golden.ttt_length, golden.step_weight);
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
      const out = tttForward(draft, embed, batch.aux, teacher, golden.ttt_length, golden.step_weight);
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
