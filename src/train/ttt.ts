// EAGLE-3 training-time test: `ttt_length` unrolled draft steps over a batch, each predicting one token
// further ahead from the previous step's own output, with SpecForge's alignment, teacher, masks and loss
// normalisation (the semantics are restated in docs/usage.md, "The loss").
import * as tf from '@tensorflow/tfjs';
import { type Eagle3Draft, type StepKV, tttAttention } from '../draft/eagle3.ts';
import { MASKED, frozenGather, ropeTables } from '../nn/layers.ts';
import { softCrossEntropy } from './soft-cross-entropy.ts';
import { chunkedTttAttention } from './ttt-attention.ts';

export interface TttBatch {
  /** Raw token ids [B][T] (right-padded), not shifted. */
  inputIds: number[][];
  /** Raw loss mask [B][T], not shifted. */
  lossMask: number[][];
  /** Auxiliary hidden states [B, T, 3Ht]. */
  aux: tf.Tensor3D;
  /**
   * The teacher, in one of two forms. Target logits [B, T, V]: row t is the target's distribution for the
   * token after position t. Or what the loss reads of them (TeacherHead.draftLogits, nothing [B, T, V]
   * held): the logits at the draft vocabulary and each row's argmax over the whole vocabulary.
   */
  targetLogits?: tf.Tensor3D;
  targetDraft?: TargetDraftLogits;
}

/** Target logits restricted to the draft vocabulary, [B, T, Vd], and each row's argmax over all V, [B][T]. */
export interface TargetDraftLogits {
  logits: tf.Tensor3D;
  fullArgmax: number[][];
}

/** The frozen embedding: a [V, H] table, or a lookup (TeacherHead.embed: a tied model holds it once). */
export type FrozenEmbedding = tf.Tensor2D | { embed(ids: tf.Tensor2D): tf.Tensor3D };

export interface DraftVocabulary {
  /** Target ids of the draft vocabulary, ascending [Vd]. */
  used: Int32Array;
  /** [V] 1 where a target id is in the draft vocabulary. */
  t2d: Uint8Array;
}

/** Teacher side of a batch: fixed by the target, no gradient. */
export interface Teacher {
  /** Renormalised teacher over the draft vocabulary, shifted for step 0: [B, T, Vd]. */
  probs: tf.Tensor3D;
  /** argmax of probs per row, [B][T]. */
  argmax: number[][];
  /** Step-0 loss mask (not shifted, last column zeroed) and position mask, [B][T]. */
  lossMask: number[][];
  positionMask: number[][];
  /** Input ids shifted left by one (step 0's embedding input), [B][T]. */
  ids: number[][];
}

const shiftLeft = (rows: number[][], by: number, fill = 0) => rows.map((r) => r.map((_, t) => (t + by < r.length ? r[t + by] : fill)));

/** Alignment and teacher: ids and target logits shift left by one; the loss mask keeps its place, last column zeroed. */
export function prepareTeacher(batch: TttBatch, vocab: DraftVocabulary): Teacher {
  const B = batch.inputIds.length;
  const T = batch.inputIds[0].length;
  return tf.tidy(() => {
    // Row t takes the target's row t+1; the last row is zeros (uniform teacher, argmax 0; masked anyway).
    const shift = (x: tf.Tensor3D) =>
      tf.concat([x.slice([0, 1, 0], [B, T - 1, x.shape[2]]), tf.zeros([B, 1, x.shape[2]])], 1) as tf.Tensor3D;
    let fullArgmax: number[][];
    let draftLogits: tf.Tensor3D;
    if (batch.targetDraft) {
      fullArgmax = shiftLeft(batch.targetDraft.fullArgmax, 1);
      draftLogits = shift(batch.targetDraft.logits);
    } else if (batch.targetLogits) {
      const shifted = shift(batch.targetLogits);
      fullArgmax = tf.argMax(shifted, -1).arraySync() as number[][];
      draftLogits = tf.gather(shifted, tf.tensor1d(vocab.used, 'int32'), 2);
    } else throw new Error('prepareTeacher: the batch has neither targetLogits nor targetDraft');
    const probs = tf.softmax(draftLogits) as tf.Tensor3D;
    const argmax = tf.argMax(probs, -1).arraySync() as number[][];
    const lossMask = batch.lossMask.map((r) => r.map((m, t) => (t === T - 1 ? 0 : m)));
    const positionMask = lossMask.map((r, b) => r.map((m, t) => m * vocab.t2d[fullArgmax[b][t]]));
    return { probs: tf.keep(probs), argmax, lossMask, positionMask, ids: shiftLeft(batch.inputIds, 1) };
  });
}

export interface TttOutput {
  /** sum_i weight^i * loss_i, the quantity to minimise. */
  total: tf.Scalar;
  /** loss_i per step, kept outside any tidy scope (the caller disposes them). */
  stepLosses: tf.Scalar[];
  /** Draft argmax per step [B][T] (for accuracies). */
  draftArgmax: number[][][];
  /** Per-step draft logits [B, T, Vd], only when asked for (tests compare decoding against them). */
  stepLogits?: tf.Tensor3D[];
}

export interface TttOptions {
  /** Weight of step i is stepWeight^i (0.8). */
  stepWeight?: number;
  /** Return each step's logits (tests). */
  keepLogits?: boolean;
  /**
   * Divisor of the summed loss, B*T of this batch by default; a chunk of a larger batch passes the
   * whole batch's B*T so that the chunks' losses add up to the batch's (src/train/chunks.ts).
   */
  normaliser?: number;
  /**
   * Rows of draft logits per chunk of the fused lm_head + loss (soft-cross-entropy.ts), which keeps no
   * [B, T, Vd] tensor for the backward pass; 0 computes the loss plainly (as keepLogits does). Default:
   * 4M logits per chunk.
   */
  lossChunkRows?: number;
  /**
   * Query positions per chunk of the TTT attention with its written-out gradient (ttt-attention.ts), which
   * keeps no [B, H, T, T] scores for the backward pass; 0 runs it plainly. Default: plainly while the
   * scores stay under 4M floats, else chunks of that size.
   */
  attentionChunkRows?: number;
}

/** Draft logits computed at once by the fused loss, and attention scores at once: 16 MiB of float32 each. */
const LOSS_CHUNK_FLOATS = 1 << 22;
const ATTENTION_CHUNK_FLOATS = 1 << 22;

/**
 * The unrolled TTT forward. Step i embeds ids'[t+i], uses the previous step's output as hidden (fc(aux)
 * at step 0), RoPE position t+i, attends causally to step 0's keys and diagonally to each later step's
 * key at the same position; loss_i = -(1/(B*T)) sum pmask_i * sum_v p_i log q_i.
 */
export function tttForward(
  draft: Eagle3Draft,
  embedding: FrozenEmbedding,
  aux: tf.Tensor3D,
  teacher: Teacher,
  tttLength: number,
  opts: TttOptions = {},
): TttOutput {
  const { stepWeight = 0.8, keepLogits = false } = opts;
  const B = teacher.ids.length;
  const T = teacher.ids[0].length;
  const normaliser = opts.normaliser ?? B * T;
  const Vd = draft.config.draftVocabSize;
  const chunkRows = keepLogits ? 0 : (opts.lossChunkRows ?? Math.max(1, Math.floor(LOSS_CHUNK_FLOATS / Vd)));
  const scoreRows = Math.floor(ATTENTION_CHUNK_FLOATS / (B * draft.config.numHeads * T));
  const attentionRows = opts.attentionChunkRows ?? (scoreRows >= T ? 0 : Math.max(1, scoreRows));
  const stepLosses: tf.Scalar[] = [];
  const draftArgmax: number[][][] = [];
  const stepLogits: tf.Tensor3D[] = [];
  const causalData = new Float32Array(T * T);
  for (let i = 0; i < T; i++) for (let j = i + 1; j < T; j++) causalData[i * T + j] = MASKED;
  const total = tf.tidy(() => {
    const causal = tf.tensor4d(causalData, [1, 1, T, T]);
    let hidden = draft.projectFeatures(aux);
    const kvs: StepKV[] = [];
    let total = tf.scalar(0);
    for (let i = 0; i < tttLength; i++) {
      const ids = shiftLeft(teacher.ids, i);
      const idsT = tf.tensor2d(ids.flat(), [B, T], 'int32');
      const embeds = 'embed' in embedding ? embedding.embed(idsT) : (frozenGather(embedding, idsT) as tf.Tensor3D);
      const { cos, sin } = ropeTables([Array.from({ length: T }, (_, t) => t + i)], draft.invFreq);
      const { q, k, v } = draft.qkv(embeds, hidden, cos, sin);
      kvs.push({ k, v });
      const attention = attentionRows > 0 ? chunkedTttAttention(q, kvs, causal, attentionRows) : tttAttention(q, kvs, causal);
      const out = draft.finishLayer(hidden, attention);
      const pmask2 = tf.tensor2d(shiftLeft(teacher.positionMask, i).flat(), [B, T]);
      if (chunkRows > 0) {
        const fused = softCrossEntropy(draft.normed(out), draft.lmHead, teacher.probs, i, pmask2, normaliser, chunkRows);
        stepLosses.push(tf.keep(fused.loss));
        draftArgmax.push(fused.argmax);
        total = tf.add(total, tf.mul(fused.loss, stepWeight ** i));
        hidden = out;
        continue;
      }
      const logits = draft.logits(out);
      // Teacher rows t+i, padded past the end with the uniform distribution (masked there anyway).
      const p =
        i === 0
          ? teacher.probs
          : i >= T
            ? tf.fill([B, T, Vd], 1 / Vd)
            : tf.concat([teacher.probs.slice([0, i, 0], [B, T - i, Vd]), tf.fill([B, i, Vd], 1 / Vd)], 1);
      const pmask = pmask2.reshape([B, T, 1]);
      const loss = tf.div(tf.neg(tf.sum(tf.mul(pmask, tf.mul(p, tf.logSoftmax(logits))))), normaliser) as tf.Scalar;
      stepLosses.push(tf.keep(loss));
      draftArgmax.push(tf.argMax(logits, -1).arraySync() as number[][]);
      if (keepLogits) stepLogits.push(tf.keep(logits));
      total = tf.add(total, tf.mul(loss, stepWeight ** i));
      hidden = out;
    }
    return total;
  });
  return { total, stepLosses, draftArgmax, ...(keepLogits ? { stepLogits } : {}) };
}

/** acc_i = sum(pmask_i * [argmax q == argmax p_i]) / sum(lossMask_i), masks shifted for step i. */
export function stepAccuracies(teacher: Teacher, draftArgmax: number[][][]): { correct: number[]; counted: number[]; acc: number[] } {
  const correct: number[] = [];
  const counted: number[] = [];
  draftArgmax.forEach((arg, i) => {
    const pm = shiftLeft(teacher.positionMask, i);
    const lm = shiftLeft(teacher.lossMask, i);
    const tArg = shiftLeft(teacher.argmax, i, -1);
    let c = 0;
    let n = 0;
    arg.forEach((row, b) =>
      row.forEach((a, t) => {
        if (pm[b][t] && a === tArg[b][t]) c++;
        n += lm[b][t];
      }),
    );
    correct.push(c);
    counted.push(n);
  });
  return { correct, counted, acc: correct.map((c, i) => (counted[i] ? c / counted[i] : 0)) };
}

/** EAGLE's simulated acceptance length from per-step accuracies: 1 + sum_k prod_{i<=k} acc_i. */
export function simulatedAcceptanceLength(acc: number[]): number {
  let prod = 1;
  let tau = 1;
  for (const a of acc) {
    prod *= a;
    tau += prod;
  }
  return tau;
}
