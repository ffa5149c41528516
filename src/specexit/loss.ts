// SpecExit's multi-task loss on the draft's three signal logits z (from the widened fc):
// confidence = sigmoid(z0) and progress = sigmoid(z1) trained with binary cross-entropy, and z2 regressing
// log(remaining tokens) with mean squared error; each averaged over the positions its mask selects.
import * as tf from '@tensorflow/tfjs';
import type { FeatureSample } from '../store/schema.ts';
import { specExitLabels } from './labels.ts';

export interface SignalBatch {
  /** [B, T, 3]: confidence, progress, log-remaining targets. */
  targets: tf.Tensor3D;
  /** [B, T, 3]: where each target applies. */
  masks: tf.Tensor3D;
  /** The same on the host, for metrics. */
  host: { targets: Float32Array; masks: Uint8Array };
}

/** Labels of a right-padded batch of samples (padding positions carry no loss). */
export function signalBatch(samples: FeatureSample[], T: number): SignalBatch {
  const B = samples.length;
  const targets = new Float32Array(B * T * 3);
  const masks = new Uint8Array(B * T * 3);
  samples.forEach((s, b) => {
    const l = specExitLabels(s.inputIds.length, s.thinkSpans, s.answerPositions, () => s.answer !== '');
    for (let t = 0; t < s.inputIds.length; t++) {
      const o = (b * T + t) * 3;
      targets[o] = l.confidence[t];
      targets[o + 1] = l.progress[t];
      targets[o + 2] = l.logRemaining[t];
      masks[o] = l.confidenceMask[t];
      masks[o + 1] = masks[o + 2] = l.spanMask[t];
    }
  });
  return { targets: tf.tensor3d(targets, [B, T, 3]), masks: tf.tensor3d(Float32Array.from(masks), [B, T, 3]), host: { targets, masks } };
}

/** Positions each signal's mask selects over these samples, [conf, prog, remain]: the masked means' divisors. */
export function signalMaskCounts(samples: FeatureSample[]): [number, number, number] {
  const counts: [number, number, number] = [0, 0, 0];
  for (const s of samples) {
    const l = specExitLabels(s.inputIds.length, s.thinkSpans, s.answerPositions, () => s.answer !== '');
    for (let t = 0; t < s.inputIds.length; t++) {
      counts[0] += l.confidenceMask[t];
      counts[1] += l.spanMask[t];
      counts[2] += l.spanMask[t];
    }
  }
  return counts;
}

/**
 * BCE-with-logits for channels 0 and 1, MSE for channel 2; each a masked mean. Returns [conf, prog, remain].
 * `divisors` (positive) replace each mask's own count: a chunk of a batch passes the whole batch's counts.
 */
export function signalLosses(z: tf.Tensor3D, batch: SignalBatch, divisors?: [number, number, number]): tf.Scalar[] {
  return tf.tidy(() => {
    const [zc, zp, zr] = tf.split(z, 3, -1);
    const [yc, yp, yr] = tf.split(batch.targets, 3, -1);
    const [mc, mp, mr] = tf.split(batch.masks, 3, -1);
    // max(z, 0) - z*y + log(1 + exp(-|z|)): stable binary cross-entropy on logits.
    const bce = (x: tf.Tensor, y: tf.Tensor) => tf.add(tf.sub(tf.relu(x), tf.mul(x, y)), tf.log1p(tf.exp(tf.neg(tf.abs(x)))));
    const mean = (v: tf.Tensor, m: tf.Tensor, k: number) =>
      tf.div(tf.sum(tf.mul(v, m)), divisors ? divisors[k] : tf.maximum(tf.sum(m), 1)) as tf.Scalar;
    return [mean(bce(zc, yc), mc, 0), mean(bce(zp, yp), mp, 1), mean(tf.square(tf.sub(zr, yr)), mr, 2)];
  });
}

/** Running held-out metrics of the signals. */
export class SignalMetrics {
  private conf: { p: number; y: number }[] = [];
  private progErr = 0;
  private remainErr = 0;
  private n = 0;

  add(z: Float32Array, host: SignalBatch['host']): void {
    const sigmoid = (x: number) => 1 / (1 + Math.exp(-x));
    for (let i = 0; i < host.masks.length / 3; i++) {
      if (host.masks[3 * i]) this.conf.push({ p: sigmoid(z[3 * i]), y: host.targets[3 * i] });
      if (host.masks[3 * i + 1]) {
        this.progErr += Math.abs(sigmoid(z[3 * i + 1]) - host.targets[3 * i + 1]);
        this.remainErr += Math.abs(Math.exp(z[3 * i + 2]) - Math.exp(host.targets[3 * i + 2]));
        this.n++;
      }
    }
  }

  /** Confidence AUC (Mann-Whitney, ties counted half) and accuracy at 0.5; progress MAE; remaining MAE in tokens. */
  result(): {
    confidence_auc: number | null;
    confidence_accuracy: number | null;
    progress_mae: number | null;
    remaining_mae_tokens: number | null;
  } {
    const pos = this.conf.filter((c) => c.y === 1).map((c) => c.p);
    const neg = this.conf.filter((c) => c.y === 0).map((c) => c.p);
    let auc: number | null = null;
    if (pos.length && neg.length) {
      const all = [...pos.map((p) => ({ p, pos: true })), ...neg.map((p) => ({ p, pos: false }))].sort((a, b) => a.p - b.p);
      let rankSum = 0;
      for (let i = 0; i < all.length; ) {
        let j = i;
        while (j < all.length && all[j].p === all[i].p) j++;
        const avgRank = (i + 1 + j) / 2;
        for (let k = i; k < j; k++) if (all[k].pos) rankSum += avgRank;
        i = j;
      }
      auc = (rankSum - (pos.length * (pos.length + 1)) / 2) / (pos.length * neg.length);
    }
    const acc = this.conf.length ? this.conf.filter((c) => (c.p > 0.5 ? 1 : 0) === c.y).length / this.conf.length : null;
    return {
      confidence_auc: auc,
      confidence_accuracy: acc,
      progress_mae: this.n ? this.progErr / this.n : null,
      remaining_mae_tokens: this.n ? this.remainErr / this.n : null,
    };
  }
}
