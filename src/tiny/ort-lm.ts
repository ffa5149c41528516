// lm.ts's lmLoss and its gradients in one ONNX Runtime run (lm-graph.ts) rather than through tfjs' taped
// kernels: what makes a target of tens of millions of parameters trainable on a CPU. The host gathers the
// embeddings, builds the labels, RoPE tables, causal bias and loss seeds, sums the loss in float64 and
// scatters the embeddings' gradient back into the table's rows.
import * as tf from '@tensorflow/tfjs';
import type { OrtGemm, WireTensor } from '../backend/ort-gemm.ts';
import { type ModelConfig, ropeInverseFrequencies } from '../io/hf-config.ts';
import { ropeTables } from '../nn/layers.ts';
import type { TfjsTarget } from '../target/tfjs-target.ts';
import { causalBias } from '../train/ttt.ts';
import type { LmBatch } from './lm.ts';
import { buildLmGraph, checkLmGraphSupports, lmWeightShapes } from './lm-graph.ts';

const f32 = (data: Float32Array, dims: number[]): WireTensor => ({ type: 'float32', data, dims });

/** The Hugging Face name of a trainable TfjsTarget variable ("name#id"). */
export const hfName = (v: tf.Variable) => v.name.split('#')[0];

export class OrtLmStep {
  private readonly key: string;
  private readonly invFreq: Float32Array;
  private readonly vars = new Map<string, tf.Variable>();

  constructor(
    private readonly ort: OrtGemm,
    private readonly model: TfjsTarget,
  ) {
    const c = model.config;
    checkLmGraphSupports(c);
    this.key = `lm:${JSON.stringify([c.numLayers, c.hiddenSize, c.intermediateSize, c.numHeads, c.numKvHeads, c.headDim, c.vocabSize, c.rmsNormEps])}`;
    this.invFreq = ropeInverseFrequencies(c);
    for (const v of model.variables()) this.vars.set(hfName(v), v);
    for (const name of [...lmWeightShapes(c).keys(), 'model.embed_tokens.weight'])
      if (!this.vars.has(name)) throw new Error(`ONNX Runtime LM training: the model has no trainable '${name}'`);
  }

  private get config(): ModelConfig {
    return this.model.config;
  }

  /** lmLoss(model, batch, denominator) and the gradient of that loss, keyed by variable name. */
  gradients(batch: LmBatch, denominator?: number): { loss: number; grads: Record<string, tf.Tensor> } {
    const c = this.config;
    const B = batch.ids.length;
    const T = batch.ids[0].length;
    const H = c.hiddenSize;
    const V = c.vocabSize;
    const N = denominator ?? Math.max(batch.tokens, 1);
    const embedVar = this.vars.get('model.embed_tokens.weight')!;
    const table = embedVar.dataSync() as Float32Array;
    const emb = new Float32Array(B * T * H);
    const labels = new Float32Array(B * T * V);
    const seed = new Float32Array(B * T);
    for (let b = 0; b < B; b++)
      for (let t = 0; t < T; t++) {
        const id = batch.ids[b][t];
        emb.set(table.subarray(id * H, (id + 1) * H), (b * T + t) * H);
        // Position t predicts token t + 1, learned where lossMask[t + 1] is set.
        if (t + 1 < T && batch.lossMask[b][t + 1]) {
          labels[(b * T + t) * V + batch.ids[b][t + 1]] = 1;
          seed[b * T + t] = -1 / N;
        }
      }
    const { cos, sin } = ropeTables([Array.from({ length: T }, (_, t) => t)], this.invFreq);
    const feeds: Record<string, WireTensor> = {
      emb: f32(emb, [B, T, H]),
      labels: f32(labels, [B, T, V]),
      cos: f32(Float32Array.from(cos.dataSync() as Float32Array), [T, c.headDim]),
      sin: f32(Float32Array.from(sin.dataSync() as Float32Array), [T, c.headDim]),
      bias: f32(causalBias(T), [T, T]),
      seed: f32(seed.slice(), [B, T, 1]),
    };
    tf.dispose([cos, sin]);
    for (const [name, shape] of lmWeightShapes(c)) {
      feeds[`w:${name}`] = f32(Float32Array.from(this.vars.get(name)!.dataSync() as Float32Array), shape);
    }
    const { outputs: out } = this.ort.runGraph(this.key, () => buildLmGraph(c).model, feeds);
    const row = out.row.data as Float32Array;
    let sum = 0;
    for (let k = 0; k < seed.length; k++) if (seed[k]) sum += seed[k] * row[k];
    const grads: Record<string, tf.Tensor> = {};
    for (const [name, shape] of lmWeightShapes(c))
      grads[this.vars.get(name)!.name] = tf.tensor(out[`g:${name}`].data as Float32Array, shape);
    // The embedding's gradient: each position's row added into its id's row.
    const gEmb = out['g:emb'].data as Float32Array;
    const dTable = new Float32Array(V * H);
    for (let b = 0; b < B; b++)
      for (let t = 0; t < T; t++) {
        const dst = batch.ids[b][t] * H;
        const src = (b * T + t) * H;
        for (let k = 0; k < H; k++) dTable[dst + k] += gEmb[src + k];
      }
    grads[embedVar.name] = tf.tensor(dTable, [V, H]);
    return { loss: sum, grads };
  }
}
