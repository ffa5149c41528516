// What a training or evaluation forward pass works on: the draft with the target's lm_head (the teacher)
// and the draft vocabulary, and a batch of stored features collated into the TTT loss's inputs.
import * as tf from '@tensorflow/tfjs';
import type { Eagle3Draft } from '../draft/eagle3.ts';
import type { FeatureSample } from '../store/feature-source.ts';
import type { TeacherHead } from './teacher-head.ts';
import type { DraftVocabulary, TttBatch } from './ttt.ts';

export interface TrainingModel {
  draft: Eagle3Draft;
  /** The target's embedding (the draft's, frozen) and lm_head (rebuilds the teacher logits from the stored final hidden states). */
  head: TeacherHead;
  vocab: DraftVocabulary;
  /** Floats per token of the aux features (K * Ht) and of the final hidden state (Ht). */
  auxWidth: number;
  hidden: number;
}

/** Right-pads samples into TTT inputs (padding: id 0, mask 0, zero features), to `padTo` when it is longer. */
export function collateFeatures(samples: FeatureSample[], m: TrainingModel, padTo = 0): TttBatch {
  const { auxWidth, hidden } = m;
  const B = samples.length;
  const T = Math.max(padTo, ...samples.map((s) => s.inputIds.length));
  const aux = new Float32Array(B * T * auxWidth);
  const fin = new Float32Array(B * T * hidden);
  samples.forEach((s, b) => {
    aux.set(s.aux, b * T * auxWidth);
    fin.set(s.finalHidden, b * T * hidden);
  });
  const inputIds = samples.map((s) => Array.from({ length: T }, (_, t) => (t < s.inputIds.length ? s.inputIds[t] : 0)));
  const lossMask = samples.map((s) => Array.from({ length: T }, (_, t) => (t < s.lossMask.length ? s.lossMask[t] : 0)));
  const finT = tf.tensor3d(fin, [B, T, hidden]);
  const batch = { inputIds, lossMask, aux: tf.tensor3d(aux, [B, T, auxWidth]), targetDraft: m.head.draftLogits(finT, m.vocab.used) };
  finT.dispose();
  return batch;
}
