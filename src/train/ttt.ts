// EAGLE-3 training-time test: `ttt_length` unrolled draft steps over a batch, each predicting one token
// further ahead from the previous step's own output, with SpecForge's alignment, teacher, masks and loss
// normalisation (the semantics are restated in docs/usage.md, "The loss").
import * as tf from '@tensorflow/tfjs';
import { type Eagle3Draft, type StepKV, tttAttention } from '../draft/eagle3.ts';
import { MASKED, frozenGather, ropeTables } from '../nn/layers.ts';
import { softCrossEntropy } from './soft-cross-entropy.ts';
import type { PhaseTimes } from './phases.ts';
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

/** Each row shifted left by `by`, `fill` past the end (step i's view of a per-position row). */
export const shiftLeft = (rows: number[][], by: number, fill = 0) =>
  rows.map((r) => r.map((_, t) => (t + by < r.length ? r[t + by] : fill)));

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

/** What every step of one TTT pass shares. */
interface StepSetup {
  B: number;
  T: number;
  normaliser: number;
  stepWeight: number;
  /** Rows per chunk of the fused loss (0: the plain loss, which can keep logits). */
  lossRows: number;
  keepLogits: boolean;
  /** Query rows per chunk of the chunked attention (0: plain attention). */
  attentionRows: number;
  /** [1, 1, T, T] causal bias. */
  causal: tf.Tensor4D;
}

function stepSetup(draft: Eagle3Draft, teacher: Teacher, opts: TttOptions): StepSetup {
  const { stepWeight = 0.8, keepLogits = false } = opts;
  const B = teacher.ids.length;
  const T = teacher.ids[0].length;
  const Vd = draft.config.draftVocabSize;
  const scoreRows = Math.floor(ATTENTION_CHUNK_FLOATS / (B * draft.config.numHeads * T));
  return {
    B,
    T,
    normaliser: opts.normaliser ?? B * T,
    stepWeight,
    keepLogits,
    lossRows: keepLogits ? 0 : (opts.lossChunkRows ?? Math.max(1, Math.floor(LOSS_CHUNK_FLOATS / Vd))),
    attentionRows: opts.attentionChunkRows ?? (scoreRows >= T ? 0 : Math.max(1, scoreRows)),
    causal: tf.tensor4d(causalBias(T), [1, 1, T, T]),
  };
}

/** [T, T] row-major: 0 on and below the diagonal, MASKED above (query t sees keys 0..t). */
export function causalBias(T: number): Float32Array {
  const data = new Float32Array(T * T);
  for (let i = 0; i < T; i++) data.fill(MASKED, i * T + i + 1, (i + 1) * T);
  return data;
}

/**
 * The layer of TTT step i: embeds ids'[t+i], RoPE at position t+i, attends causally to step 0's keys and
 * diagonally to each later step's key at the same position (`prev` holds steps 0..i-1). Returns the
 * pre-norm output (the next step's hidden) and this step's keys and values.
 */
function stepLayer(
  draft: Eagle3Draft,
  embedding: FrozenEmbedding,
  teacher: Teacher,
  s: StepSetup,
  i: number,
  hidden: tf.Tensor3D,
  prev: StepKV[],
): { out: tf.Tensor3D; kv: StepKV } {
  const idsT = tf.tensor2d(shiftLeft(teacher.ids, i).flat(), [s.B, s.T], 'int32');
  const embeds = 'embed' in embedding ? embedding.embed(idsT) : (frozenGather(embedding, idsT) as tf.Tensor3D);
  const { cos, sin } = ropeTables([Array.from({ length: s.T }, (_, t) => t + i)], draft.invFreq);
  const { q, k, v } = draft.qkv(embeds, hidden, cos, sin);
  const kvs = [...prev, { k, v }];
  const attention = s.attentionRows > 0 ? chunkedTttAttention(q, kvs, s.causal, s.attentionRows) : tttAttention(q, kvs, s.causal);
  return { out: draft.finishLayer(hidden, attention), kv: { k, v } };
}

/** loss_i of a step's output against the teacher rows t+i, and the draft's argmax; the logits when kept. */
function stepLoss(draft: Eagle3Draft, teacher: Teacher, s: StepSetup, i: number, out: tf.Tensor3D) {
  const { B, T } = s;
  const Vd = draft.config.draftVocabSize;
  const pmask2 = tf.tensor2d(shiftLeft(teacher.positionMask, i).flat(), [B, T]);
  if (s.lossRows > 0) {
    const fused = softCrossEntropy(draft.normed(out), draft.lmHead, teacher.probs, i, pmask2, s.normaliser, s.lossRows);
    return { loss: fused.loss, argmax: fused.argmax };
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
  // Per row first: one float32 sum over every B*T*Vd term drifts.
  const loss = tf.div(tf.neg(tf.sum(tf.mul(pmask, tf.sum(tf.mul(p, tf.logSoftmax(logits)), -1, true)))), s.normaliser) as tf.Scalar;
  return { loss, argmax: tf.argMax(logits, -1).arraySync() as number[][], logits };
}

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
  const stepLosses: tf.Scalar[] = [];
  const draftArgmax: number[][][] = [];
  const stepLogits: tf.Tensor3D[] = [];
  const s = stepSetup(draft, teacher, opts);
  const total = tf.tidy(() => {
    let hidden = draft.projectFeatures(aux);
    const kvs: StepKV[] = [];
    let total = tf.scalar(0);
    for (let i = 0; i < tttLength; i++) {
      const { out, kv } = stepLayer(draft, embedding, teacher, s, i, hidden, kvs);
      kvs.push(kv);
      const { loss, argmax, logits } = stepLoss(draft, teacher, s, i, out);
      stepLosses.push(tf.keep(loss));
      draftArgmax.push(argmax);
      if (s.keepLogits && logits) stepLogits.push(tf.keep(logits));
      total = tf.add(total, tf.mul(loss, s.stepWeight ** i));
      hidden = out;
    }
    return total;
  });
  s.causal.dispose();
  return { total, stepLosses, draftArgmax, ...(s.keepLogits ? { stepLogits } : {}) };
}

/**
 * The TTT steps forward without a tape, each in its own scope, carrying only each step's input hidden
 * (fc(aux) at step 0) and its keys and values; `each` sees step i's output inside that step's scope.
 */
function scopedForward(
  draft: Eagle3Draft,
  embedding: FrozenEmbedding,
  aux: tf.Tensor3D,
  teacher: Teacher,
  s: StepSetup,
  tttLength: number,
  each?: (i: number, out: tf.Tensor3D) => void,
): { hiddens: tf.Tensor3D[]; kvs: StepKV[] } {
  const hiddens: tf.Tensor3D[] = [];
  const kvs: StepKV[] = [];
  let hidden = tf.tidy(() => draft.projectFeatures(aux));
  for (let i = 0; i < tttLength; i++) {
    hiddens.push(hidden);
    const step = tf.tidy(() => {
      const { out, kv } = stepLayer(draft, embedding, teacher, s, i, hidden, kvs);
      each?.(i, out);
      return { out, k: kv.k, v: kv.v };
    });
    kvs.push({ k: step.k, v: step.v });
    hidden = step.out;
  }
  hidden.dispose();
  return { hiddens, kvs };
}

/**
 * tttForward's losses and argmax without gradients (held-out evaluation), each step in its own scope: a
 * single tidy over the unrolled loop would hold every step's activations until the end (about 1 GiB a
 * step at T = 2048 with a 0.6B target's draft). Only each step's output, keys and values are carried.
 */
export function tttLosses(
  draft: Eagle3Draft,
  embedding: FrozenEmbedding,
  aux: tf.Tensor3D,
  teacher: Teacher,
  tttLength: number,
  opts: TttOptions = {},
): { stepLosses: number[]; draftArgmax: number[][][] } {
  const s = stepSetup(draft, teacher, { ...opts, keepLogits: false });
  const stepLosses: number[] = [];
  const draftArgmax: number[][][] = [];
  const { hiddens, kvs } = scopedForward(draft, embedding, aux, teacher, s, tttLength, (i, out) => {
    const { loss, argmax } = stepLoss(draft, teacher, s, i, out);
    stepLosses.push(loss.dataSync()[0]);
    draftArgmax.push(argmax);
  });
  tf.dispose([...hiddens, ...kvs.flatMap(({ k, v }) => [k, v]), s.causal]);
  return { stepLosses, draftArgmax };
}

export interface TttGradients {
  /** sum_i weight^i * loss_i (unscaled). */
  total: number;
  stepLosses: number[];
  draftArgmax: number[][][];
  /** Gradients of scale * total by variable name (trainable variables that get one). */
  grads: Record<string, tf.Tensor>;
}

/**
 * tttForward's loss and its gradients with each TTT step recomputed in the backward pass (activation
 * checkpointing). Taped whole, the unrolled loop keeps every step's activations until the backward pass:
 * at T = 2048 with a 0.6B target's draft that is about 1 GiB a step, seven steps, past the wasm heap. Here
 * the forward pass keeps only each step's input hidden, keys and values; the backward pass then runs the
 * steps last to first, each recomputed under its own tape and differentiated with the gradients that
 * reach its outputs from later steps (its hidden output feeds step i+1, its keys and values every later
 * step's attention). One step's activations are held at a time, for about a third more compute.
 */
export function tttGradients(
  draft: Eagle3Draft,
  embedding: FrozenEmbedding,
  aux: tf.Tensor3D,
  teacher: Teacher,
  tttLength: number,
  opts: TttOptions & { scale?: number; phases?: PhaseTimes } = {},
): TttGradients {
  const scale = opts.scale ?? 1;
  const t0 = performance.now();
  const s = stepSetup(draft, teacher, { ...opts, keepLogits: false });
  const vars = draft.variables().filter((v) => v.trainable);
  // Forward, untaped: each step's input hidden, keys and values.
  const { hiddens, kvs } = scopedForward(draft, embedding, aux, teacher, s, tttLength);
  const t1 = performance.now();
  opts.phases?.add('forward', t1 - t0);
  // Backward, last step first. dK[j], dV[j]: gradients reaching step j's keys and values from later steps.
  const dK: (tf.Tensor | null)[] = kvs.map(() => null);
  const dV: (tf.Tensor | null)[] = kvs.map(() => null);
  let dHidden: tf.Tensor | null = null; // reaching step i's output from step i+1
  const grads: Record<string, tf.Tensor> = {};
  const stepLosses: number[] = new Array(tttLength).fill(0);
  const draftArgmax: number[][][] = new Array(tttLength);
  for (let i = tttLength - 1; i >= 0; i--) {
    const prev = kvs.slice(0, i);
    // Step 0 recomputes fc(aux) inside its tape, so that fc gets its gradient there.
    const inputs: tf.Tensor[] = [...(i > 0 ? [hiddens[i]] : []), ...prev.flatMap(({ k, v }) => [k, v])];
    const g = tf.tidy(() => {
      const { grads: g } = tf.engine().gradients(
        () => {
          const h = i > 0 ? hiddens[i] : draft.projectFeatures(aux);
          const { out, kv } = stepLayer(draft, embedding, teacher, s, i, h, prev);
          const { loss, argmax } = stepLoss(draft, teacher, s, i, out);
          stepLosses[i] = loss.dataSync()[0];
          draftArgmax[i] = argmax;
          // A scalar whose gradient is this step's vector-Jacobian product with the incoming gradients.
          let surrogate = tf.mul(loss, scale * s.stepWeight ** i) as tf.Scalar;
          const dot = (x: tf.Tensor, dx: tf.Tensor | null) => {
            if (dx) surrogate = tf.add(surrogate, tf.sum(tf.mul(x, dx)));
          };
          dot(out, dHidden);
          dot(kv.k, dK[i]);
          dot(kv.v, dV[i]);
          return surrogate;
        },
        [...inputs, ...vars],
        undefined,
        true,
      );
      return g.map((x) => x ?? tf.scalar(0));
    });
    tf.dispose([dHidden, dK[i], dV[i]].filter((x): x is tf.Tensor => x !== null));
    dK[i] = dV[i] = null;
    let at = 0;
    dHidden = i > 0 ? g[at++] : null;
    for (let j = 0; j < i; j++) {
      for (const d of [dK, dV]) {
        const x = g[at++];
        const sum = d[j] ? tf.add(d[j]!, x) : x;
        if (d[j]) tf.dispose([d[j]!, x]);
        d[j] = sum;
      }
    }
    vars.forEach((v, k) => {
      const x = g[at + k];
      if (x.rank === 0) return x.dispose(); // no gradient reached it
      const sum = grads[v.name] ? tf.add(grads[v.name], x) : x;
      if (grads[v.name]) tf.dispose([grads[v.name], x]);
      grads[v.name] = sum;
    });
  }
  tf.dispose([...hiddens, ...kvs.flatMap(({ k, v }) => [k, v]), s.causal]);
  opts.phases?.add('backward', performance.now() - t1); // with each step's recomputed forward
  const total = stepLosses.reduce((sum, l, i) => sum + l * s.stepWeight ** i, 0);
  return { total, stepLosses, draftArgmax, grads };
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
