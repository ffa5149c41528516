// Held-out evaluation (rank 0, no gradients): the draft's TTT loss and accuracy per step on the first
// eval_samples samples of the eval split, the simulated acceptance length they imply, and with
// training.specexit each signal's loss and quality.
import * as tf from '@tensorflow/tfjs';
import type { Recipe } from '../recipe/recipe.ts';
import { SignalMetrics, signalBatch, signalLosses } from '../specexit/loss.ts';
import type { FeatureSource } from '../store/feature-source.ts';
import { collateFeatures, type TrainingModel } from './collate.ts';
import { prepareTeacher, simulatedAcceptanceLength, stepAccuracies, tttLosses } from './ttt.ts';

export interface EvalMetrics {
  loss: number[];
  acc: number[];
  tau: number;
  samples: number;
  /** With training.specexit: each signal's loss and the signal quality on held-out data. */
  specexit?: {
    loss: number[];
    confidence_auc: number | null;
    confidence_accuracy: number | null;
    progress_mae: number | null;
    remaining_mae_tokens: number | null;
  };
}

export async function evaluate(source: FeatureSource, m: TrainingModel, t: Recipe['training']): Promise<EvalMetrics> {
  const limit = Math.min(source.size, t.eval_samples ?? source.size);
  const lossSum = new Array(t.ttt_length).fill(0);
  const correct = new Array(t.ttt_length).fill(0);
  const counted = new Array(t.ttt_length).fill(0);
  let batches = 0;
  const signalSum = [0, 0, 0];
  const signalMetrics = new SignalMetrics();
  for (let i = 0; i < limit; i += t.batch_size) {
    const samples = await Promise.all(Array.from({ length: Math.min(t.batch_size, limit - i) }, (_, k) => source.get(i + k)));
    const batch = collateFeatures(samples, m);
    const teacher = prepareTeacher(batch, m.vocab);
    batch.targetDraft?.logits.dispose(); // the teacher holds what the loss reads
    const out = tttLosses(m.draft, m.head, batch.aux, teacher, t.ttt_length);
    const acc = stepAccuracies(teacher, out.draftArgmax);
    out.stepLosses.forEach((l, k) => (lossSum[k] += l));
    acc.correct.forEach((c, k) => {
      correct[k] += c;
      counted[k] += acc.counted[k];
    });
    if (t.specexit) {
      const sig = signalBatch(samples, batch.inputIds[0].length);
      const z = m.draft.signalLogits(batch.aux);
      const losses = signalLosses(z, sig);
      losses.forEach((l, k) => (signalSum[k] += l.dataSync()[0]));
      signalMetrics.add(z.dataSync() as Float32Array, sig.host);
      tf.dispose([z, ...losses, sig.targets, sig.masks]);
    }
    tf.dispose([teacher.probs, batch.aux, batch.targetDraft?.logits]);
    batches++;
  }
  const accs = correct.map((c, k) => (counted[k] ? c / counted[k] : 0));
  const result: EvalMetrics = { loss: lossSum.map((x) => x / batches), acc: accs, tau: simulatedAcceptanceLength(accs), samples: limit };
  if (t.specexit) result.specexit = { loss: signalSum.map((x) => x / batches), ...signalMetrics.result() };
  return result;
}
