// The TTT loss and gradients of a batch in one ONNX Runtime run (graph/ttt-graph.ts): the same result as
// ttt.ts's tttGradients, without tfjs' per-kernel dispatch. On the wasm backend a training step is
// thousands of small kernels, each a dispatch and a pass over memory, and its products run through
// single-threaded wasm SIMD; ORT runs the whole forward and backward pass natively (MLAS GEMM, vectorised
// elementwise kernels) in the rank's ORT worker thread. The host prepares the inputs (embeddings, teacher,
// RoPE and causal tables, the per-position loss seeds) and sums the loss in float64 from per-row values.
import * as tf from '@tensorflow/tfjs';
import type { OrtGemm, WireTensor } from '../backend/ort-gemm.ts';
import type { Eagle3Draft } from '../draft/eagle3.ts';
import { frozenGather, ropeTables } from '../nn/layers.ts';
import { buildTttGraph, TTT_WEIGHTS } from './graph/ttt-graph.ts';
import { HostWeights } from './host-weights.ts';
import { causalBias, type FrozenEmbedding, shiftLeft, type Teacher, type TttGradients } from './ttt.ts';

/** tttGradients' result with the gradients left on the host, where the all-reduce and AdamW read them. */
export type HostTttGradients = Omit<TttGradients, 'grads'> & { grads: Record<string, Float32Array> };

const f32 = (data: Float32Array, dims: number[]): WireTensor => ({ type: 'float32', data, dims });

/** A copy that owns its buffer whole, so it can be transferred to the worker without touching tfjs' memory. */
const own = (t: tf.Tensor) => Float32Array.from(t.dataSync() as Float32Array);

export class OrtTttStep {
  private readonly key: string;
  private bias: { T: number; data: Float32Array } | null = null;

  constructor(
    private readonly ort: OrtGemm,
    private readonly draft: Eagle3Draft,
    private readonly ttt: number,
    /** The weights the graph reads (lent to the worker and back each run); the optimizer updates the same. */
    private readonly weights = new HostWeights(),
  ) {
    const c = draft.config;
    this.key = `ttt:${ttt}:${c.hiddenSize}:${c.targetHiddenSize}:${c.intermediateSize}:${c.numHeads}:${c.numKvHeads}:${c.headDim}:${c.draftVocabSize}:${c.rmsNormEps}`;
  }

  /** tttGradients' result: the loss, per-step losses and argmax, and the gradients of scale * total. */
  gradients(
    embedding: FrozenEmbedding,
    aux: tf.Tensor3D,
    teacher: Teacher,
    opts: { normaliser: number; scale: number; stepWeight?: number; recompute?: boolean; arena?: boolean },
  ): HostTttGradients {
    const { draft, ttt } = this;
    const c = draft.config;
    const B = teacher.ids.length;
    const T = teacher.ids[0].length;
    const Tn = T + ttt - 1;
    const stepWeight = opts.stepWeight ?? 0.8;
    // Step i embeds ids'[t + i]; positions past the end read id 0 (masked, as in ttt.ts).
    const ids = tf.tensor2d(
      teacher.ids.flatMap((r) => Array.from({ length: Tn }, (_, t) => (t < T ? r[t] : 0))),
      [B, Tn],
      'int32',
    );
    const emb = tf.tidy(() => ('embed' in embedding ? embedding.embed(ids) : (frozenGather(embedding, ids) as tf.Tensor3D)));
    ids.dispose();
    const { cos, sin } = ropeTables([Array.from({ length: Tn }, (_, t) => t)], draft.invFreq);
    const feeds: Record<string, WireTensor> = {
      aux: f32(own(aux), [B, T, aux.shape[2]]),
      emb: f32(own(emb), [B, Tn, c.hiddenSize]),
      probs: f32(own(teacher.probs), [B, T, c.draftVocabSize]),
      cos: f32(own(cos), [Tn, c.headDim]),
      sin: f32(own(sin), [Tn, c.headDim]),
      bias: f32(this.causalBias(T), [T, T]),
    };
    tf.dispose([emb, cos, sin]);
    for (const name of TTT_WEIGHTS) {
      const v = draft.params.get(name)!;
      feeds[`w:${name}`] = f32(this.weights.get(v), [...v.shape]);
    }
    // d total / d row_i: the row's masked share of loss_i = -(1/N) sum_t pmask_i[t] row_i[t], weighted.
    const masks = Array.from({ length: ttt }, (_, i) => shiftLeft(teacher.positionMask, i).flat());
    masks.forEach((m, i) => {
      const coef = (-(stepWeight ** i) * opts.scale) / opts.normaliser;
      feeds[`seed${i}`] = f32(
        Float32Array.from(m, (x) => x * coef),
        [B, T, 1],
      );
    });
    const recompute = opts.recompute ?? false;
    const arena = opts.arena ?? false;
    const lend = TTT_WEIGHTS.map((name) => `w:${name}`);
    const run = this.ort.runGraph(`${this.key}:${recompute}:${arena}`, () => buildTttGraph(c, ttt, recompute).model, feeds, {
      arena,
      lend,
    });
    for (const name of TTT_WEIGHTS) this.weights.returned(draft.params.get(name)!, run.lent[`w:${name}`].data as Float32Array);
    const out = run.outputs;
    const stepLosses = masks.map((m, i) => {
      const row = out[`row${i}`].data as Float32Array;
      let sum = 0;
      for (let k = 0; k < m.length; k++) if (m[k]) sum += m[k] * row[k];
      return -sum / opts.normaliser;
    });
    const draftArgmax = Array.from({ length: ttt }, (_, i) => {
      const a = out[`arg${i}`].data as BigInt64Array;
      return Array.from({ length: B }, (_, b) => Array.from({ length: T }, (_, t) => Number(a[b * T + t])));
    });
    const grads: Record<string, Float32Array> = {};
    for (const name of TTT_WEIGHTS) grads[draft.params.get(name)!.name] = out[`g:${name}`].data as Float32Array;
    const total = stepLosses.reduce((s, l, i) => s + l * stepWeight ** i, 0);
    return { total, stepLosses, draftArgmax, grads };
  }

  /** The causal bias of length T (one table per length, kept for the next batch). */
  private causalBias(T: number): Float32Array {
    if (this.bias?.T !== T) this.bias = { T, data: causalBias(T) };
    return this.bias.data.slice(); // a copy: the feed's buffer is transferred
  }
}
