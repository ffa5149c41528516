// The EAGLE-3 draft: fc (3*Ht -> H), one Llama decoder layer whose attention reads the 2H-wide
// concat(input_layernorm(embedding), hidden_norm(hidden)), a final norm and an lm_head over the draft
// vocabulary. Weights are tf.Variables under their SGLang names; linear weights are held as [in, out]
// (transposed from PyTorch's [out, in] on load and back on save) so every product is a plain matmul.
import * as tf from '@tensorflow/tfjs';
import { linear, matmul } from '../backend/matmul.ts';
import { ropeInverseFrequencies } from '../io/hf-config.ts';
import { MASKED as MASKED_BIAS, groupedAttention, rmsNorm, ropeTables, silu } from '../nn/layers.ts';
import { Rng } from '../util/random.ts';
import type { DraftConfig } from './config.ts';

/** SGLang tensor name -> [out, in] (linear) or [n] (norm) shape. */
export function draftTensorShapes(c: DraftConfig): Map<string, number[]> {
  const H = c.hiddenSize;
  const q = c.numHeads * c.headDim;
  const kv = c.numKvHeads * c.headDim;
  return new Map([
    ['fc.weight', [H, 3 * c.targetHiddenSize]],
    ['midlayer.input_layernorm.weight', [H]],
    ['midlayer.hidden_norm.weight', [H]],
    ['midlayer.self_attn.q_proj.weight', [q, 2 * H]],
    ['midlayer.self_attn.k_proj.weight', [kv, 2 * H]],
    ['midlayer.self_attn.v_proj.weight', [kv, 2 * H]],
    ['midlayer.self_attn.o_proj.weight', [H, q]],
    ['midlayer.post_attention_layernorm.weight', [H]],
    ['midlayer.mlp.gate_proj.weight', [c.intermediateSize, H]],
    ['midlayer.mlp.up_proj.weight', [c.intermediateSize, H]],
    ['midlayer.mlp.down_proj.weight', [H, c.intermediateSize]],
    ['norm.weight', [H]],
    ['lm_head.weight', [c.draftVocabSize, H]],
    // SpecExit: the three extra output rows of the widened fc, kept apart so fc.weight stays [H, 3Ht].
    ...(c.specExit ? ([['specexit.signals.weight', [3, 3 * c.targetHiddenSize]]] as [string, number[]][]) : []),
  ]);
}

/** Names of the tensors serving engines load as a plain EAGLE-3 draft (SpecExit rows excluded). */
export function isServingTensor(name: string): boolean {
  return !name.startsWith('specexit.');
}

/** Keys and values of one draft step, [B, kvH, T, hd], kept so that later TTT steps can attend to them. */
export interface StepKV {
  k: tf.Tensor4D;
  v: tf.Tensor4D;
}

let nextId = 0;

export class Eagle3Draft {
  readonly config: DraftConfig;
  /** By SGLang name; 2-D weights are [in, out]. */
  readonly params: Map<string, tf.Variable>;
  readonly invFreq: Float32Array;

  /** `weights`: SGLang names in PyTorch layout ([out, in]). */
  constructor(config: DraftConfig, weights: Map<string, Float32Array>) {
    this.config = config;
    this.invFreq = ropeInverseFrequencies(config);
    this.params = new Map();
    const id = nextId++;
    for (const [name, shape] of draftTensorShapes(config)) {
      const data = weights.get(name);
      if (!data) throw new Error(`draft weights: missing '${name}' (shape [${shape}])`);
      if (data.length !== shape.reduce((a, b) => a * b, 1))
        throw new Error(`draft weights: '${name}' has ${data.length} values, expected shape [${shape}]`);
      const t = tf.tidy(() => (shape.length === 2 ? tf.transpose(tf.tensor2d(data, shape as [number, number])) : tf.tensor1d(data)));
      this.params.set(name, tf.variable(t, true, `draft${id}/${name}`));
      t.dispose();
    }
  }

  /**
   * Seeded initialisation as PyTorch's defaults: linear weights U(-1/sqrt(in), 1/sqrt(in)), norms at 1.
   */
  static init(config: DraftConfig, seed: number): Eagle3Draft {
    const rng = new Rng(seed);
    const w = new Map<string, Float32Array>();
    for (const [name, shape] of draftTensorShapes(config)) {
      if (shape.length === 1) w.set(name, new Float32Array(shape[0]).fill(1));
      else {
        const bound = 1 / Math.sqrt(shape[1]);
        w.set(
          name,
          Float32Array.from({ length: shape[0] * shape[1] }, () => (2 * rng.next() - 1) * bound),
        );
      }
    }
    return new Eagle3Draft(config, w);
  }

  p(name: string): tf.Tensor {
    return this.params.get(name)!;
  }

  variables(): tf.Variable[] {
    return [...this.params.values()];
  }

  /** SGLang name -> PyTorch-layout float32 data. */
  exportWeights(): Map<string, { shape: number[]; data: Float32Array }> {
    const out = new Map<string, { shape: number[]; data: Float32Array }>();
    for (const [name, v] of this.params) {
      const t = v.rank === 2 ? tf.transpose(v) : v;
      out.set(name, { shape: [...t.shape], data: t.dataSync() as Float32Array });
      if (t !== v) t.dispose();
    }
    return out;
  }

  /** fc over the concatenated auxiliary hidden states: [B, T, 3Ht] -> [B, T, H]. */
  projectFeatures(aux: tf.Tensor3D): tf.Tensor3D {
    return linear(aux, this.p('fc.weight') as tf.Tensor2D);
  }

  /** q, k, v of one step: [B, heads, T, hd] with RoPE applied to q and k. */
  qkv(embeds: tf.Tensor3D, hidden: tf.Tensor3D, cos: tf.Tensor4D, sin: tf.Tensor4D): { q: tf.Tensor4D; k: tf.Tensor4D; v: tf.Tensor4D } {
    const c = this.config;
    const [B, T] = embeds.shape;
    const x = tf.concat(
      [
        rmsNorm(embeds, this.p('midlayer.input_layernorm.weight') as tf.Tensor1D, c.rmsNormEps),
        rmsNorm(hidden, this.p('midlayer.hidden_norm.weight') as tf.Tensor1D, c.rmsNormEps),
      ],
      -1,
    );
    const heads = (name: string, n: number) =>
      tf.transpose(linear(x, this.p(name) as tf.Tensor2D).reshape([B, T, n, c.headDim]), [0, 2, 1, 3]) as tf.Tensor4D;
    const rope = (t: tf.Tensor4D) => {
      const half = c.headDim / 2;
      const [a, b] = tf.split(t, [half, half], 3);
      return tf.add(tf.mul(t, cos), tf.mul(tf.concat([tf.neg(b), a], 3), sin)) as tf.Tensor4D;
    };
    return {
      q: rope(heads('midlayer.self_attn.q_proj.weight', c.numHeads)),
      k: rope(heads('midlayer.self_attn.k_proj.weight', c.numKvHeads)),
      v: heads('midlayer.self_attn.v_proj.weight', c.numKvHeads),
    };
  }

  /** Everything after attention: o_proj, residual on the hidden input, MLP, residual. Returns the pre-norm output. */
  finishLayer(hidden: tf.Tensor3D, attn: tf.Tensor3D): tf.Tensor3D {
    const c = this.config;
    const r = tf.add(hidden, linear(attn, this.p('midlayer.self_attn.o_proj.weight') as tf.Tensor2D)) as tf.Tensor3D;
    const y = rmsNorm(r, this.p('midlayer.post_attention_layernorm.weight') as tf.Tensor1D, c.rmsNormEps);
    const mlp = linear(
      tf.mul(
        silu(linear(y, this.p('midlayer.mlp.gate_proj.weight') as tf.Tensor2D)),
        linear(y, this.p('midlayer.mlp.up_proj.weight') as tf.Tensor2D),
      ),
      this.p('midlayer.mlp.down_proj.weight') as tf.Tensor2D,
    );
    return tf.add(r, mlp) as tf.Tensor3D;
  }

  /** SpecExit signal logits [B, T, 3] from the auxiliary features: z0 -> confidence, z1 -> progress, z2 -> log(remaining). */
  signalLogits(aux: tf.Tensor3D): tf.Tensor3D {
    const w = this.params.get('specexit.signals.weight');
    if (!w) throw new Error('this draft has no SpecExit signal heads (train with training.specexit: true)');
    return linear(aux, w as tf.Tensor2D);
  }

  /** Draft-vocabulary logits of a pre-norm output. */
  logits(o: tf.Tensor3D): tf.Tensor3D {
    return linear(this.normed(o), this.lmHead);
  }

  /** The final norm of the layer's output (what lm_head reads). */
  normed(o: tf.Tensor3D): tf.Tensor3D {
    return rmsNorm(o, this.p('norm.weight') as tf.Tensor1D, this.config.rmsNormEps);
  }

  /** lm_head over the draft vocabulary, [H, Vd]. */
  get lmHead(): tf.Tensor2D {
    return this.p('lm_head.weight') as tf.Tensor2D;
  }

  dispose(): void {
    for (const v of this.params.values()) v.dispose();
  }
}

/**
 * Training-time-test attention of step i: queries q [B, H, T, hd] attend causally to step 0's keys and,
 * for each later step j = 1..i, to step j's key at the same position (a diagonal); one softmax over all.
 * `causalBias` is [1, 1, T, T] (0 on and below the diagonal, a large negative number above).
 */
export function tttAttention(q: tf.Tensor4D, kvs: StepKV[], causalBias: tf.Tensor4D): tf.Tensor3D {
  const [B, H, T, hd] = q.shape;
  const kvH = kvs[0].k.shape[1];
  const g = H / kvH;
  const scale = 1 / Math.sqrt(hd);
  const q5 = q.reshape([B, kvH, g, T, hd]);
  const k0T = tf.transpose(kvs[0].k.reshape([B * kvH, T, hd]), [0, 2, 1]);
  const causal = tf.add(tf.mul(matmul(q.reshape([B * kvH, g * T, hd]), k0T), scale).reshape([B, H, T, T]), causalBias);
  // Diagonal scores: q_t . k_j,t for each later step j, one column each.
  const diag = kvs.slice(1).map(({ k }) => tf.mul(tf.sum(tf.mul(q5, k.reshape([B, kvH, 1, T, hd])), -1), scale).reshape([B, H, T, 1]));
  const probs = tf.softmax(diag.length ? tf.concat([causal, ...diag], -1) : causal);
  const parts = diag.length ? tf.split(probs, [T, ...diag.map(() => 1)], -1) : [probs];
  let out = matmul(parts[0].reshape([B * kvH, g * T, T]), kvs[0].v.reshape([B * kvH, T, hd])).reshape([B, kvH, g, T, hd]);
  kvs.slice(1).forEach(({ v }, j) => {
    out = tf.add(out, tf.mul(parts[j + 1].reshape([B, kvH, g, T, 1]), v.reshape([B, kvH, 1, T, hd])));
  });
  return tf.transpose(out.reshape([B, H, T, hd]), [0, 2, 1, 3]).reshape([B, T, H * hd]) as tf.Tensor3D;
}

/** The draft's own KV cache during decoding (batch 1): keys/values [1, kvH, S, hd] and each slot's position. */
export class DraftKVCache {
  k: tf.Tensor4D | null = null;
  v: tf.Tensor4D | null = null;
  positions: number[] = [];

  get length(): number {
    return this.positions.length;
  }

  append(k: tf.Tensor4D, v: tf.Tensor4D, positions: number[]): void {
    const [ok, ov] = [this.k, this.v];
    this.k = tf.keep(ok ? tf.concat([ok, k], 2) : tf.clone(k));
    this.v = tf.keep(ov ? tf.concat([ov, v], 2) : tf.clone(v));
    ok?.dispose();
    ov?.dispose();
    this.positions.push(...positions);
  }

  /** Keep only these slots, in this order. */
  select(slots: number[]): void {
    if (!this.k || !this.v) return;
    const idx = tf.tensor1d(slots, 'int32');
    const [k, v] = [this.k, this.v];
    this.k = tf.keep(tf.gather(k, idx, 2));
    this.v = tf.keep(tf.gather(v, idx, 2));
    k.dispose();
    v.dispose();
    idx.dispose();
    this.positions = slots.map((s) => this.positions[s]);
  }

  truncate(n: number): void {
    if (n < this.length) this.select(Array.from({ length: n }, (_, i) => i));
  }

  dispose(): void {
    this.k?.dispose();
    this.v?.dispose();
    this.k = this.v = null;
    this.positions = [];
  }
}

export interface DraftDecodeInput {
  /** Token ids whose embeddings enter (the token after each hidden's position), [n]. */
  ids: number[];
  /** Hidden inputs [1, n, H]: fc(aux) for positions the target has seen, or the draft's own previous outputs. */
  hidden: tf.Tensor3D;
  /** RoPE positions [n]. */
  positions: number[];
  /**
   * visible[i][s] = 1 when new token i may attend to slot s of (cache + new tokens), [n][S + n]. Default:
   * every cached slot, and causal among the new tokens.
   */
  visible?: number[][];
}

/**
 * One draft forward with a KV cache (inference, batch 1): appends the new tokens' keys/values and returns
 * the pre-norm outputs (the next step's hidden) and the draft-vocabulary logits. In training terms, a
 * token's cached key is step 0's when its hidden came from fc(aux), and a later step's otherwise; the
 * visibility mask reproduces TTT's causal-plus-diagonal pattern along a draft chain or tree.
 */
export function draftDecode(
  draft: Eagle3Draft,
  embedTable: tf.Tensor2D,
  cache: DraftKVCache,
  x: DraftDecodeInput,
): { out: tf.Tensor3D; logits: tf.Tensor3D } {
  const n = x.ids.length;
  const S = cache.length;
  const bias = new Float32Array(n * (S + n)).fill(MASKED_BIAS);
  for (let i = 0; i < n; i++) {
    for (let s = 0; s < S + n; s++) {
      const ok = x.visible ? x.visible[i][s] === 1 : s < S || s - S <= i;
      if (ok) bias[i * (S + n) + s] = 0;
    }
  }
  const { cos, sin } = ropeTables([x.positions], draft.invFreq);
  const result = tf.tidy(() => {
    const embeds = tf.gather(embedTable, tf.tensor2d([x.ids], [1, n], 'int32')) as unknown as tf.Tensor3D;
    const { q, k, v } = draft.qkv(embeds, x.hidden, cos, sin);
    cache.append(k, v, x.positions);
    const attn = groupedAttention(q, cache.k!, cache.v!, tf.tensor4d(bias, [1, 1, n, S + n]));
    const out = draft.finishLayer(x.hidden, attn);
    return { out, logits: draft.logits(out) };
  });
  cos.dispose();
  sin.dispose();
  return result;
}
