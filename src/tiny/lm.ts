// Causal language-model training pieces (used to train the shipped tiny target): batching by length
// and the masked next-token cross-entropy.
import * as tf from '@tensorflow/tfjs';
import type { Tokenized } from '../data/chat.ts';
import type { TargetModel } from '../target/runtime.ts';
import type { Rng } from '../util/random.ts';

export interface LmBatch {
  ids: number[][];
  attentionMask: number[][];
  /** lossMask[b][t] = 1 when token t is learned (predicted from position t - 1). */
  lossMask: number[][];
  /** Learned tokens in the batch. */
  tokens: number;
}

/** Rows rank, rank + N, ... of a batch: batches are sorted by length, so interleaving balances the ranks. */
export function shardBatch(batch: LmBatch, rank: number, worldSize: number): LmBatch {
  if (batch.ids.length % worldSize !== 0) throw new Error(`batch of ${batch.ids.length} does not split over ${worldSize} ranks`);
  const pick = <X>(rows: X[]) => rows.filter((_, i) => i % worldSize === rank);
  const lossMask = pick(batch.lossMask);
  // Trim padding that no row of this shard needs.
  const T = Math.max(...pick(batch.attentionMask).map((r) => r.reduce((a, b) => a + b, 0)));
  return {
    ids: pick(batch.ids).map((r) => r.slice(0, T)),
    attentionMask: pick(batch.attentionMask).map((r) => r.slice(0, T)),
    lossMask: lossMask.map((r) => r.slice(0, T)),
    tokens: lossMask.reduce((n, r) => n + r.slice(1).reduce((a, b) => a + b, 0), 0),
  };
}

/** Right-pads samples to their longest. */
export function collate(samples: Tokenized[], padId: number): LmBatch {
  const T = Math.max(...samples.map((s) => s.ids.length));
  const pad = <X>(xs: X[], v: X) => [...xs, ...new Array<X>(T - xs.length).fill(v)];
  return {
    ids: samples.map((s) => pad(s.ids, padId)),
    attentionMask: samples.map((s) =>
      pad(
        s.ids.map(() => 1),
        0,
      ),
    ),
    lossMask: samples.map((s) => pad(s.lossMask, 0)),
    tokens: samples.reduce((n, s) => n + s.lossMask.slice(1).reduce((a, b) => a + b, 0), 0), // position 0 is never predicted
  };
}

/**
 * One epoch of batches: shuffled, then sorted by length within windows of 50 batches so that padding
 * stays small (attention cost grows with the padded length), then the batches shuffled again.
 */
export function lengthBucketedBatches(samples: Tokenized[], batchSize: number, padId: number, rng: Rng): LmBatch[] {
  const order = rng.shuffle(samples.map((_, i) => i));
  const window = batchSize * 50;
  const batches: LmBatch[] = [];
  for (let w = 0; w < order.length; w += window) {
    const chunk = order.slice(w, w + window).sort((a, b) => samples[a].ids.length - samples[b].ids.length);
    for (let i = 0; i + batchSize <= chunk.length; i += batchSize)
      batches.push(
        collate(
          chunk.slice(i, i + batchSize).map((j) => samples[j]),
          padId,
        ),
      );
  }
  return rng.shuffle(batches);
}

/**
 * Next-token cross-entropy summed over the learned tokens of the batch, divided by `denominator`
 * (default: this batch's learned tokens, i.e. the mean). Data-parallel ranks pass the global count so
 * that the summed gradients equal those of the whole batch on one rank.
 */
export function lmLoss(model: TargetModel, batch: LmBatch, denominator?: number): tf.Scalar {
  return tf.tidy(() => {
    const B = batch.ids.length;
    const T = batch.ids[0].length;
    const V = model.config.vocabSize;
    const out = model.forward({ ids: batch.ids, attentionMask: batch.attentionMask });
    const logits = out.logits!.slice([0, 0, 0], [B, T - 1, V]); // position t predicts token t + 1
    const labels = tf.tensor2d(
      batch.ids.flatMap((r) => r.slice(1)),
      [B, T - 1],
      'int32',
    );
    const weights = tf.tensor2d(
      batch.lossMask.flatMap((r) => r.slice(1)),
      [B, T - 1],
    );
    const nll = tf.neg(tf.sum(tf.mul(tf.oneHot(labels, V), tf.logSoftmax(logits)), -1));
    return tf.div(tf.sum(tf.mul(nll, weights)), denominator ?? Math.max(batch.tokens, 1)) as tf.Scalar;
  });
}
