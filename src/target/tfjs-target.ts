// The target LM (Llama, Qwen2, Qwen3, MiniCPM) in tfjs: full forward over a right-padded batch, and
// incremental decoding through a KV cache. Inference only: nothing here is trained.
import * as tf from '@tensorflow/tfjs';
import { linear } from '../backend/matmul.ts';
import { type ModelConfig, loadModelConfig, ropeInverseFrequencies } from '../io/hf-config.ts';
import { SafetensorsFolder, type StoredTensor } from '../io/safetensors.ts';
import { MASKED, applyRope, embeddingLookup, groupedAttention, rmsNorm, ropeTables, silu } from '../nn/layers.ts';
import { TfjsKVCache } from './kv-cache.ts';
import { checkIds, type ForwardOptions, type TargetInput, type TargetModel, type TargetOutput } from './runtime.ts';

/** Where weights come from: a checkpoint folder, or an in-memory map in tests. */
export interface WeightSource {
  has(name: string): boolean;
  read(name: string): StoredTensor;
}

interface Layer {
  inputNorm: tf.Tensor1D;
  postNorm: tf.Tensor1D;
  // Linear weights held as [in, out] so the forward is a plain product.
  q: tf.Tensor2D;
  k: tf.Tensor2D;
  v: tf.Tensor2D;
  o: tf.Tensor2D;
  qBias?: tf.Tensor1D;
  kBias?: tf.Tensor1D;
  vBias?: tf.Tensor1D;
  oBias?: tf.Tensor1D;
  qNorm?: tf.Tensor1D;
  kNorm?: tf.Tensor1D;
  gate: tf.Tensor2D;
  up: tf.Tensor2D;
  down: tf.Tensor2D;
  gateBias?: tf.Tensor1D;
  upBias?: tf.Tensor1D;
  downBias?: tf.Tensor1D;
}

export class WeightError extends Error {}

let nextVariableId = 0;

export class TfjsTarget implements TargetModel {
  readonly config: ModelConfig;
  private readonly embed: tf.Tensor2D;
  private readonly layers: Layer[];
  private readonly finalNorm: tf.Tensor1D;
  private readonly head: tf.Tensor2D; // [H, V]
  private readonly invFreq: Float32Array;

  private constructor(config: ModelConfig, embed: tf.Tensor2D, layers: Layer[], finalNorm: tf.Tensor1D, head: tf.Tensor2D) {
    this.config = config;
    this.embed = embed;
    this.layers = layers;
    this.finalNorm = finalNorm;
    this.head = head;
    this.invFreq = ropeInverseFrequencies(config);
  }

  /** Loads a Hugging Face folder: config.json plus model.safetensors (or sharded with an index). */
  static load(dir: string): TfjsTarget {
    return TfjsTarget.fromWeights(loadModelConfig(dir), new SafetensorsFolder(dir), dir);
  }

  /**
   * Builds the model from HF-named weights. With `trainable`, every weight is a tf.Variable, so that
   * tf.variableGrads over forward() trains it (used to train the shipped tiny target).
   */
  static fromWeights(c: ModelConfig, src: WeightSource, where = 'weights', opts: { trainable?: boolean } = {}): TfjsTarget {
    const made: tf.Tensor[] = [];
    const own = <T extends tf.Tensor>(t: T, name: string): T => {
      if (!opts.trainable) return t;
      const v = tf.variable(t, true, `${name}#${nextVariableId++}`) as unknown as T;
      t.dispose();
      return v;
    };
    const get = (name: string, shape: number[]): StoredTensor => {
      if (!src.has(name)) throw new WeightError(`${where}: missing tensor '${name}' (expected shape [${shape}]) for ${c.architecture}`);
      const t = src.read(name);
      if (!(t.data instanceof Float32Array))
        throw new WeightError(`${where}: tensor '${name}' has dtype ${t.dtype}; expected a float type`);
      if (t.shape.length !== shape.length || t.shape.some((d, i) => d !== shape[i])) {
        throw new WeightError(`${where}: tensor '${name}' has shape [${t.shape}], expected [${shape}] from config.json`);
      }
      return t;
    };
    const vec = (name: string, n: number): tf.Tensor1D => {
      const t = own(tf.tensor1d(get(name, [n]).data as Float32Array), name);
      made.push(t);
      return t;
    };
    // PyTorch stores Linear weights as [out, in]; transpose once here.
    const lin = (name: string, out: number, inp: number): tf.Tensor2D => {
      const t = own(
        tf.tidy(() => tf.transpose(tf.tensor2d(get(name, [out, inp]).data as Float32Array, [out, inp]))),
        name,
      );
      made.push(t);
      return t;
    };
    try {
      const H = c.hiddenSize;
      const qDim = c.numHeads * c.headDim;
      const kvDim = c.numKvHeads * c.headDim;
      const I = c.intermediateSize;
      const embedData = get('model.embed_tokens.weight', [c.vocabSize, H]).data as Float32Array;
      const embed = own(tf.tensor2d(embedData, [c.vocabSize, H]), 'model.embed_tokens.weight');
      made.push(embed);
      const layers: Layer[] = [];
      for (let l = 0; l < c.numLayers; l++) {
        const p = `model.layers.${l}.`;
        const layer: Layer = {
          inputNorm: vec(p + 'input_layernorm.weight', H),
          postNorm: vec(p + 'post_attention_layernorm.weight', H),
          q: lin(p + 'self_attn.q_proj.weight', qDim, H),
          k: lin(p + 'self_attn.k_proj.weight', kvDim, H),
          v: lin(p + 'self_attn.v_proj.weight', kvDim, H),
          o: lin(p + 'self_attn.o_proj.weight', H, qDim),
          gate: lin(p + 'mlp.gate_proj.weight', I, H),
          up: lin(p + 'mlp.up_proj.weight', I, H),
          down: lin(p + 'mlp.down_proj.weight', H, I),
        };
        if (c.qkvBias) {
          layer.qBias = vec(p + 'self_attn.q_proj.bias', qDim);
          layer.kBias = vec(p + 'self_attn.k_proj.bias', kvDim);
          layer.vBias = vec(p + 'self_attn.v_proj.bias', kvDim);
        }
        if (c.oBias) layer.oBias = vec(p + 'self_attn.o_proj.bias', H);
        if (c.qkNorm) {
          layer.qNorm = vec(p + 'self_attn.q_norm.weight', c.headDim);
          layer.kNorm = vec(p + 'self_attn.k_norm.weight', c.headDim);
        }
        if (c.mlpBias) {
          layer.gateBias = vec(p + 'mlp.gate_proj.bias', I);
          layer.upBias = vec(p + 'mlp.up_proj.bias', I);
          layer.downBias = vec(p + 'mlp.down_proj.bias', H);
        }
        layers.push(layer);
      }
      const finalNorm = vec('model.norm.weight', H);
      // Tied models may still ship lm_head.weight (a copy); use it when present.
      if (c.tieWordEmbeddings && opts.trainable) throw new WeightError(`${where}: training a tied-embedding model is not supported`);
      const head = !c.tieWordEmbeddings || src.has('lm_head.weight') ? lin('lm_head.weight', c.vocabSize, H) : tf.transpose(embed);
      made.push(head);
      return new TfjsTarget(c, embed, layers, finalNorm, head);
    } catch (e) {
      for (const t of made) t.dispose();
      throw e;
    }
  }

  /** Every weight under its Hugging Face name and layout ([out, in] for linear layers), as float32. */
  exportWeights(): Map<string, { shape: number[]; data: Float32Array }> {
    const c = this.config;
    const out = new Map<string, { shape: number[]; data: Float32Array }>();
    const put = (name: string, t: tf.Tensor, transpose = false) => {
      const x = transpose ? tf.transpose(t) : t;
      out.set(name, { shape: [...x.shape], data: x.dataSync() as Float32Array });
      if (transpose) x.dispose();
    };
    put('model.embed_tokens.weight', this.embed);
    this.layers.forEach((L, l) => {
      const p = `model.layers.${l}.`;
      put(p + 'input_layernorm.weight', L.inputNorm);
      put(p + 'post_attention_layernorm.weight', L.postNorm);
      for (const [key, w] of [
        ['q', L.q],
        ['k', L.k],
        ['v', L.v],
        ['o', L.o],
      ] as const)
        put(`${p}self_attn.${key}_proj.weight`, w, true);
      for (const [key, b] of [
        ['q', L.qBias],
        ['k', L.kBias],
        ['v', L.vBias],
        ['o', L.oBias],
      ] as const)
        if (b) put(`${p}self_attn.${key}_proj.bias`, b);
      if (L.qNorm) put(p + 'self_attn.q_norm.weight', L.qNorm);
      if (L.kNorm) put(p + 'self_attn.k_norm.weight', L.kNorm);
      for (const [key, w] of [
        ['gate', L.gate],
        ['up', L.up],
        ['down', L.down],
      ] as const)
        put(`${p}mlp.${key}_proj.weight`, w, true);
      for (const [key, b] of [
        ['gate', L.gateBias],
        ['up', L.upBias],
        ['down', L.downBias],
      ] as const)
        if (b) put(`${p}mlp.${key}_proj.bias`, b);
    });
    put('model.norm.weight', this.finalNorm);
    if (!c.tieWordEmbeddings) put('lm_head.weight', this.head, true);
    return out;
  }

  /** The tf.Variables of a model built with `trainable` (empty otherwise). */
  variables(): tf.Variable[] {
    const all: tf.Tensor[] = [this.embed, this.finalNorm, this.head];
    for (const L of this.layers) for (const t of Object.values(L)) if (t) all.push(t);
    return all.filter((t): t is tf.Variable => t instanceof tf.Variable);
  }

  newCache(batch: number): TfjsKVCache {
    return new TfjsKVCache(batch, this.config.numLayers);
  }

  embeddings(): tf.Tensor2D {
    return this.embed;
  }

  lmHead(finalNormed: tf.Tensor): tf.Tensor {
    return tf.tidy(() => {
      const x = this.config.logitDivisor === 1 ? finalNormed : tf.div(finalNormed, this.config.logitDivisor);
      return linear(x, this.head);
    });
  }

  forward(input: TargetInput, opts: ForwardOptions = {}): TargetOutput {
    const c = this.config;
    const { ids } = input;
    const [B, T] = checkIds(ids, c.vocabSize);
    const mask = input.attentionMask ?? ids.map((row) => row.map(() => 1));
    const cache = opts.cache as TfjsKVCache | undefined;
    if (cache && !(cache instanceof TfjsKVCache)) throw new Error('target forward: cache was not made by this model');
    if (cache && cache.batch !== B) throw new Error(`target forward: cache holds ${cache.batch} rows, input has ${B}`);
    const past = cache?.length ?? 0;
    const start = cache ? cache.nextPositions() : new Array(B).fill(0);
    const positions = input.positionIds ?? ids.map((row, b) => row.map((_, t) => start[b] + t));
    const bias = this.attentionBias(mask, past, cache?.keyMask, input.treeMask);
    const wanted = new Set(opts.layers ?? []);
    for (const l of wanted)
      if (!Number.isInteger(l) || l < 0 || l >= c.numLayers) throw new Error(`target forward: layer ${l} outside [0, ${c.numLayers})`);

    const { cos, sin } = ropeTables(positions, this.invFreq);
    const { captured, finalNormed, logits } = tf.tidy(() => {
      const idT = tf.tensor2d(ids.flat(), [B, T], 'int32');
      let h = embeddingLookup(this.embed, idT) as tf.Tensor3D;
      if (c.embedScale !== 1) h = tf.mul(h, c.embedScale);
      const keep: tf.Tensor3D[] = [];
      this.layers.forEach((L, l) => {
        const x = rmsNorm(h, L.inputNorm, c.rmsNormEps);
        const heads = (w: tf.Tensor2D, bias: tf.Tensor1D | undefined, n: number, norm?: tf.Tensor1D): tf.Tensor4D => {
          let t = linear(x, w, bias).reshape([B, T, n, c.headDim]) as tf.Tensor4D;
          if (norm) t = rmsNorm(t, norm, c.rmsNormEps);
          return tf.transpose(t, [0, 2, 1, 3]);
        };
        const q = applyRope(heads(L.q, L.qBias, c.numHeads, L.qNorm), cos, sin);
        let k = applyRope(heads(L.k, L.kBias, c.numKvHeads, L.kNorm), cos, sin);
        let v = heads(L.v, L.vBias, c.numKvHeads);
        if (cache) {
          cache.append(l, k, v);
          k = cache.keys[l]!;
          v = cache.values[l]!;
        }
        const attn = linear(groupedAttention(q, k, v, bias), L.o, L.oBias);
        h = tf.add(h, c.residualScale === 1 ? attn : tf.mul(attn, c.residualScale));
        const y = rmsNorm(h, L.postNorm, c.rmsNormEps);
        const mlp = linear(tf.mul(silu(linear(y, L.gate, L.gateBias)), linear(y, L.up, L.upBias)), L.down, L.downBias);
        h = tf.add(h, c.residualScale === 1 ? mlp : tf.mul(mlp, c.residualScale));
        if (wanted.has(l)) keep.push(h);
      });
      const fin = rmsNorm(h, this.finalNorm, c.rmsNormEps);
      const lg = opts.logits === false ? null : (this.lmHead(fin) as tf.Tensor3D);
      return { captured: keep, finalNormed: fin, logits: lg } as unknown as tf.TensorContainerObject;
    }) as unknown as { captured: tf.Tensor3D[]; finalNormed: tf.Tensor3D; logits: tf.Tensor3D | null };
    cos.dispose();
    sin.dispose();
    bias.dispose();
    if (cache) cache.recordSlots(mask, positions);
    const layers = new Map<number, tf.Tensor3D>();
    [...wanted].sort((a, b) => a - b).forEach((l, i) => layers.set(l, captured[i]));
    return { finalNormed, layers, ...(logits ? { logits } : {}) };
  }

  /**
   * Additive attention bias [B, 1, T, past + T]: cached slots are visible where they hold real tokens;
   * among the new tokens the causal rule (or the tree mask) applies, and padding is never attended to.
   */
  private attentionBias(mask: number[][], past: number, pastMask: number[][] | undefined, tree: number[][] | undefined): tf.Tensor4D {
    const B = mask.length;
    const T = mask[0].length;
    const S = past + T;
    if (tree && (tree.length !== T || tree.some((r) => r.length !== T))) throw new Error(`target forward: treeMask must be [${T}][${T}]`);
    const bias = new Float32Array(B * T * S).fill(MASKED);
    for (let b = 0; b < B; b++) {
      for (let i = 0; i < T; i++) {
        const row = (b * T + i) * S;
        for (let j = 0; j < past; j++) if (pastMask![b][j]) bias[row + j] = 0;
        for (let j = 0; j < T; j++) {
          const visible = tree ? tree[i][j] === 1 : j <= i;
          if (visible && mask[b][j]) bias[row + past + j] = 0;
        }
      }
    }
    return tf.tensor4d(bias, [B, 1, T, S]);
  }

  dispose(): void {
    const all: tf.Tensor[] = [this.embed, this.finalNorm, this.head];
    for (const L of this.layers) for (const t of Object.values(L)) if (t) all.push(t);
    for (const t of new Set(all)) t.dispose();
  }
}
