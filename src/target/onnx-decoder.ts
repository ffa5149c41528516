// The target LM (Llama, Qwen2, Qwen3, MiniCPM) as ONNX graphs for ONNX Runtime: the same computation as
// TfjsTarget.forward, in standard ops (opset 17, default domain), with every weight an external
// initializer in one shared float32 data file (see ort-weights.ts). Three graph kinds, because
// onnxruntime computes every node of a graph whatever outputs a run asks for:
//
//   capture  (no cache)  input_ids, position_ids int64 [batch, seq]; attention_bias float [batch, 1, seq, seq]
//                        -> layer_<l> [batch, seq, H] (residual stream after layer l, for the layers the
//                           graph was built for), final_normed [batch, seq, H]
//   decode   (KV cache)  the same inputs, attention_bias [batch, 1, seq, past + seq], and per layer
//                        past_key_<l>, past_value_<l> [batch, kv_heads, past, head_dim]
//                        -> layer_<l>, final_normed, and new_key_<l>, new_value_<l> [batch, kv_heads, seq, head_dim]:
//                           the keys/values of the new tokens only; the host appends them to its cache
//   head                 final_normed [batch, seq, H] -> logits [batch, seq, V] (MiniCPM's division included)
//
// attention_bias is additive (0 visible, MASKED hidden), built on the host, so right padding, cache slots
// the cache hides and tree masks all take the same path. final_normed is after the final RMSNorm, before
// the head (and before MiniCPM's division), as TargetOutput.finalNormed.
import { type ModelConfig, ropeInverseFrequencies } from '../io/hf-config.ts';
import {
  type AttributeValue,
  DataType,
  type DataTypeId,
  type ModelProto,
  type NodeProto,
  type TensorProto,
  type ValueInfo,
} from '../io/onnx-proto.ts';

export const DECODER_OPSET = 17;
/** IR version 8 goes with opset 17. */
const IR_VERSION = 8;
/** Bumped whenever a graph or the stored weight layout changes: part of the weight cache's key. */
export const GRAPH_FORMAT_VERSION = 1;

/** Where one stored weight lives in the data file, in the layout the graphs read. */
export interface StoredWeight {
  dims: number[];
  offset: number;
  length: number;
}

/** The data file (a name relative to the graphs) and its tensors, by Hugging Face name. */
export interface WeightTable {
  location: string;
  tensors: Record<string, StoredWeight>;
}

/**
 * How each checkpoint tensor is stored: linear weights of the decoder layers transposed to [in, out] (the
 * right operand of MatMul); the embedding table and lm_head stay [V, H] (Gather reads rows, Gemm reads
 * it with transB, so a tied head shares the one copy); vectors as they are.
 */
export function storedLayout(name: string): 'transpose' | 'as-is' {
  return /^model\.layers\.\d+\.(self_attn|mlp)\.\w+_proj\.weight$/.test(name) ? 'transpose' : 'as-is';
}

/** The checkpoint tensors the graphs need, with their Hugging Face shapes. */
export function requiredWeights(c: ModelConfig, hasLmHead: boolean): Map<string, number[]> {
  const H = c.hiddenSize;
  const qDim = c.numHeads * c.headDim;
  const kvDim = c.numKvHeads * c.headDim;
  const I = c.intermediateSize;
  const m = new Map<string, number[]>();
  m.set('model.embed_tokens.weight', [c.vocabSize, H]);
  for (let l = 0; l < c.numLayers; l++) {
    const p = `model.layers.${l}.`;
    m.set(p + 'input_layernorm.weight', [H]);
    m.set(p + 'post_attention_layernorm.weight', [H]);
    m.set(p + 'self_attn.q_proj.weight', [qDim, H]);
    m.set(p + 'self_attn.k_proj.weight', [kvDim, H]);
    m.set(p + 'self_attn.v_proj.weight', [kvDim, H]);
    m.set(p + 'self_attn.o_proj.weight', [H, qDim]);
    if (c.qkvBias) {
      m.set(p + 'self_attn.q_proj.bias', [qDim]);
      m.set(p + 'self_attn.k_proj.bias', [kvDim]);
      m.set(p + 'self_attn.v_proj.bias', [kvDim]);
    }
    if (c.oBias) m.set(p + 'self_attn.o_proj.bias', [H]);
    if (c.qkNorm) {
      m.set(p + 'self_attn.q_norm.weight', [c.headDim]);
      m.set(p + 'self_attn.k_norm.weight', [c.headDim]);
    }
    m.set(p + 'mlp.gate_proj.weight', [I, H]);
    m.set(p + 'mlp.up_proj.weight', [I, H]);
    m.set(p + 'mlp.down_proj.weight', [H, I]);
    if (c.mlpBias) {
      m.set(p + 'mlp.gate_proj.bias', [I]);
      m.set(p + 'mlp.up_proj.bias', [I]);
      m.set(p + 'mlp.down_proj.bias', [H]);
    }
  }
  m.set('model.norm.weight', [H]);
  // Tied models may still ship lm_head.weight (a copy); TfjsTarget uses it when present, and so do we.
  if (!c.tieWordEmbeddings || hasLmHead) m.set('lm_head.weight', [c.vocabSize, H]);
  return m;
}

/** Additive bias of a hidden attention slot: the same finite value as tfjs' MASKED (no NaN on a fully hidden row). */
export const MASKED = -1e9;

export type BodyKind = 'capture' | 'decode';

/** Node and initializer collector with generated intermediate names. */
class Graph {
  readonly nodes: NodeProto[] = [];
  readonly initializers: TensorProto[] = [];
  private counter = 0;
  private readonly consts = new Map<string, string>();

  constructor(private readonly weights: WeightTable) {}

  o(opType: string, inputs: string[], attributes?: Record<string, AttributeValue>): string {
    const out = `${opType.toLowerCase()}_${this.counter}`;
    this.nodes.push({ opType, inputs, outputs: [out], name: `${opType}_${this.counter++}`, attributes });
    return out;
  }

  /** An op whose output is a graph output. */
  named(name: string, opType: string, inputs: string[], attributes?: Record<string, AttributeValue>): string {
    this.nodes.push({ opType, inputs, outputs: [name], name: `${opType}_${name}`, attributes });
    return name;
  }

  /** A stored weight, as an external initializer (added once). */
  w(name: string): string {
    const t = this.weights.tensors[name];
    if (!t) throw new Error(`ONNX target graph: weight '${name}' is not in the weight table (${this.weights.location})`);
    if (!this.initializers.some((i) => i.name === name)) {
      this.initializers.push({
        name,
        dataType: DataType.FLOAT,
        dims: t.dims,
        external: { location: this.weights.location, offset: t.offset, length: t.length },
      });
    }
    return name;
  }

  private constant(key: string, dataType: DataTypeId, dims: number[], raw: Uint8Array): string {
    let name = this.consts.get(key);
    if (!name) {
      name = `const_${this.consts.size}`;
      this.consts.set(key, name);
      this.initializers.push({ name, dataType, dims, raw });
    }
    return name;
  }

  f32(values: number[] | Float32Array, dims: number[] = values.length === 1 ? [] : [values.length]): string {
    const a = Float32Array.from(values);
    return this.constant(`f32:${dims}:${Array.from(a)}`, DataType.FLOAT, dims, new Uint8Array(a.buffer));
  }

  i64(values: number[]): string {
    const a = BigInt64Array.from(values, (v) => BigInt(v));
    return this.constant(`i64:${values}`, DataType.INT64, [values.length], new Uint8Array(a.buffer));
  }
}

interface Shared {
  /** RoPE tables [B, T, 1, hd]; the query's carry the 1/sqrt(hd) attention scale. */
  cosQ: string;
  sinQ: string;
  cosK: string;
  sinK: string;
  /** attention_bias as [B, 1, 1, T, S], broadcast over kv heads and their query groups. */
  bias5: string;
  /** Decode: the number of past slots, as a 1-element int64 tensor. */
  past?: string;
}

/**
 * Query blocks of the capture graph's attention: block i of n (rows [ceil(iT/n), ceil((i+1)T/n))) scores only
 * the keys up to its last row, skipping most of the causally hidden upper triangle (n = 4: 10/16 of the
 * full products). Valid only when no token sees a later one; forward() falls back to 1 otherwise.
 */
export const CAPTURE_BLOCKS = 4;

/**
 * The capture or decode graph. `layers`: the decoder layers whose outputs it returns (sorted, unique).
 * `blocks`: capture only, see CAPTURE_BLOCKS (1 scores every key for every query).
 */
export function buildBodyGraph(c: ModelConfig, weights: WeightTable, kind: BodyKind, layers: number[], blocks = 1): ModelProto {
  if (!Number.isInteger(blocks) || blocks < 1 || (kind === 'decode' && blocks !== 1))
    throw new Error(`ONNX target graph: blocks ${blocks}: expected a positive integer (1 for decode)`);
  for (const l of layers)
    if (!Number.isInteger(l) || l < 0 || l >= c.numLayers) throw new Error(`ONNX target graph: layer ${l} outside [0, ${c.numLayers})`);
  const g = new Graph(weights);
  const H = c.hiddenSize;
  const hd = c.headDim;
  const nH = c.numHeads;
  const kvH = c.numKvHeads;
  const group = nH / kvH;
  const eps = g.f32([c.rmsNormEps]);
  const lastAxis = g.i64([-1]);

  // RMSNorm in the form onnxruntime fuses into one SimplifiedLayerNormalization kernel.
  const rms = (x: string, weight: string): string => {
    const ms = g.o('ReduceMean', [g.o('Pow', [x, g.f32([2])])], { axes: [-1], keepdims: 1 });
    return g.o('Mul', [g.o('Div', [x, g.o('Sqrt', [g.o('Add', [ms, eps])])]), g.w(weight)]);
  };
  const linear = (x: string, name: string, bias: boolean): string => {
    const y = g.o('MatMul', [x, g.w(`${name}.weight`)]);
    return bias ? g.o('Add', [y, g.w(`${name}.bias`)]) : y;
  };
  const scaled = (x: string, s: number) => (s === 1 ? x : g.o('Mul', [x, g.f32([s])]));

  // RoPE tables from the positions (rotate_half layout: the two halves repeat). The angle is a float32
  // product, as ropeTables computes it; the sine carries rotate_half's sign: [-sin, sin].
  const invFreq = ropeInverseFrequencies(c);
  const angle = g.o('Mul', [
    g.o('Unsqueeze', [g.o('Cast', ['position_ids'], { to: DataType.FLOAT }), lastAxis]),
    g.f32(invFreq, [invFreq.length]),
  ]);
  const cosHalf = g.o('Cos', [angle]);
  const sinHalf = g.o('Sin', [angle]);
  const heads = g.i64([2]);
  const cosK = g.o('Unsqueeze', [g.o('Concat', [cosHalf, cosHalf], { axis: -1 }), heads]);
  const sinK = g.o('Unsqueeze', [g.o('Concat', [g.o('Neg', [sinHalf]), sinHalf], { axis: -1 }), heads]);
  const scale = g.f32([1 / Math.sqrt(hd)]);
  const shared: Shared = {
    cosK,
    sinK,
    cosQ: g.o('Mul', [cosK, scale]),
    sinQ: g.o('Mul', [sinK, scale]),
    bias5: g.o('Unsqueeze', ['attention_bias', g.i64([1])]),
  };
  if (kind === 'decode') shared.past = g.o('Shape', ['past_key_0'], { start: 2, end: 3 });
  // Block bounds e_i = ceil(i T / n) as 1-element int64 tensors (blocks may be empty when T < n).
  const bounds: string[] = [];
  if (blocks > 1) {
    const T = g.o('Shape', ['input_ids'], { start: 1, end: 2 });
    for (let i = 0; i <= blocks; i++)
      bounds.push(
        i === 0
          ? g.i64([0])
          : i === blocks
            ? T
            : g.o('Div', [g.o('Add', [g.o('Mul', [T, g.i64([i])]), g.i64([blocks - 1])]), g.i64([blocks])]),
      );
  }
  const halfStart = g.i64([0]);
  const halfMid = g.i64([hd / 2]);
  const halfEnd = g.i64([hd]);
  // x*cos + rotate_half(x)*sin with rotate_half(x) = [-x2, x1]: the sign lives in the sine table.
  const rope = (x: string, cos: string, sin: string): string => {
    const swapped = g.o('Concat', [g.o('Slice', [x, halfMid, halfEnd, lastAxis]), g.o('Slice', [x, halfStart, halfMid, lastAxis])], {
      axis: -1,
    });
    return g.o('Add', [g.o('Mul', [x, cos]), g.o('Mul', [swapped, sin])]);
  };

  let h = g.o('Gather', [g.w('model.embed_tokens.weight'), 'input_ids'], { axis: 0 });
  h = scaled(h, c.embedScale);
  const wanted = new Set(layers);
  const outputs: ValueInfo[] = [];
  const f = DataType.FLOAT;
  for (let l = 0; l < c.numLayers; l++) {
    const p = `model.layers.${l}.`;
    const x = rms(h, p + 'input_layernorm.weight');
    const split = (name: string, n: number, norm: string | null) => {
      const t = g.o('Reshape', [linear(x, p + `self_attn.${name}_proj`, c.qkvBias), g.i64([0, 0, n, hd])]); // [B, T, n, hd]
      return norm ? rms(t, p + `self_attn.${norm}.weight`) : t;
    };
    const q = rope(split('q', nH, c.qkNorm ? 'q_norm' : null), shared.cosQ, shared.sinQ);
    const k = g.o('Transpose', [rope(split('k', kvH, c.qkNorm ? 'k_norm' : null), shared.cosK, shared.sinK)], { perm: [0, 2, 1, 3] }); // [B, kvH, T, hd]
    const v = g.o('Transpose', [split('v', kvH, null)], { perm: [0, 2, 1, 3] });
    // GQA without copying keys: query head h = kv * group + j becomes row (kv, j) of [B, kvH, group, T, hd],
    // and keys/values broadcast over the group axis.
    const q5 = g.o('Transpose', [g.o('Reshape', [q, g.i64([0, 0, kvH, group, hd])])], { perm: [0, 2, 3, 1, 4] });
    const keysT = (keys: string) => g.o('Transpose', [g.o('Unsqueeze', [keys, heads])], { perm: [0, 1, 2, 4, 3] }); // [B, kvH, 1, hd, S]
    const scoresOf = (keys: string) => g.o('MatMul', [q5, keysT(keys)]);
    const mix = (probs: string, values: string) => g.o('MatMul', [probs, g.o('Unsqueeze', [values, heads])]);
    let attn5: string; // [B, kvH, group, T, hd]
    if (kind === 'capture' && blocks === 1) {
      const probs = g.o('Softmax', [g.o('Add', [scoresOf(k), shared.bias5])], { axis: -1 });
      attn5 = mix(probs, v);
    } else if (kind === 'capture') {
      const kT = keysT(k);
      const v5 = g.o('Unsqueeze', [v, heads]); // [B, kvH, 1, T, hd]
      const zero = bounds[0];
      const parts: string[] = [];
      for (let i = 0; i < blocks; i++) {
        const [from, to] = [bounds[i], bounds[i + 1]];
        const rows = g.o('Slice', [q5, from, to, g.i64([3])]);
        const keys = g.o('Slice', [kT, zero, to, g.i64([4])]);
        const bias = g.o('Slice', [
          shared.bias5,
          g.o('Concat', [from, zero], { axis: 0 }),
          g.o('Concat', [to, to], { axis: 0 }),
          g.i64([3, 4]),
        ]);
        const probs = g.o('Softmax', [g.o('Add', [g.o('MatMul', [rows, keys]), bias])], { axis: -1 });
        parts.push(g.o('MatMul', [probs, g.o('Slice', [v5, zero, to, g.i64([3])])]));
      }
      attn5 = g.o('Concat', parts, { axis: 3 });
    } else {
      // Past and new slots are scored separately and joined only as scores, so the cache is never copied.
      const pk = `past_key_${l}`;
      const pv = `past_value_${l}`;
      const scores = g.o('Concat', [scoresOf(pk), scoresOf(k)], { axis: -1 });
      const probs = g.o('Softmax', [g.o('Add', [scores, shared.bias5])], { axis: -1 });
      const probsPast = g.o('Slice', [probs, halfStart, shared.past!, lastAxis]);
      const probsNew = g.o('Slice', [probs, shared.past!, g.i64([Number.MAX_SAFE_INTEGER]), lastAxis]);
      attn5 = g.o('Add', [mix(probsPast, pv), mix(probsNew, v)]);
      g.named(`new_key_${l}`, 'Identity', [k]);
      g.named(`new_value_${l}`, 'Identity', [v]);
      outputs.push(
        { name: `new_key_${l}`, elemType: f, shape: ['batch', kvH, 'seq', hd] },
        { name: `new_value_${l}`, elemType: f, shape: ['batch', kvH, 'seq', hd] },
      );
    }
    const attn = g.o('Reshape', [g.o('Transpose', [attn5], { perm: [0, 3, 1, 2, 4] }), g.i64([0, 0, nH * hd])]);
    h = g.o('Add', [h, scaled(linear(attn, p + 'self_attn.o_proj', c.oBias), c.residualScale)]);
    const y = rms(h, p + 'post_attention_layernorm.weight');
    const gate = linear(y, p + 'mlp.gate_proj', c.mlpBias);
    const act = g.o('Mul', [gate, g.o('Sigmoid', [gate])]);
    const mlp = linear(g.o('Mul', [act, linear(y, p + 'mlp.up_proj', c.mlpBias)]), p + 'mlp.down_proj', c.mlpBias);
    h = g.o('Add', [h, scaled(mlp, c.residualScale)]);
    if (wanted.has(l)) {
      g.named(`layer_${l}`, 'Identity', [h]);
      outputs.push({ name: `layer_${l}`, elemType: f, shape: ['batch', 'seq', H] });
    }
  }
  g.named('final_normed', 'Identity', [rms(h, 'model.norm.weight')]);
  outputs.push({ name: 'final_normed', elemType: f, shape: ['batch', 'seq', H] });

  const inputs: ValueInfo[] = [
    { name: 'input_ids', elemType: DataType.INT64, shape: ['batch', 'seq'] },
    { name: 'position_ids', elemType: DataType.INT64, shape: ['batch', 'seq'] },
    {
      name: 'attention_bias',
      elemType: f,
      shape: ['batch', 1, 'seq', kind === 'decode' ? 'total' : 'seq'],
      doc: `additive: 0 visible, ${MASKED} hidden`,
    },
  ];
  if (kind === 'decode') {
    for (let l = 0; l < c.numLayers; l++) {
      inputs.push(
        { name: `past_key_${l}`, elemType: f, shape: ['batch', kvH, 'past', hd] },
        { name: `past_value_${l}`, elemType: f, shape: ['batch', kvH, 'past', hd] },
      );
    }
  }
  return model(c, `target_${kind}`, g, inputs, outputs, { kind, layers: JSON.stringify(layers), attention_blocks: String(blocks) });
}

/** final_normed [batch, seq, H] -> logits [batch, seq, V]. */
export function buildHeadGraph(c: ModelConfig, weights: WeightTable): ModelProto {
  const g = new Graph(weights);
  const H = c.hiddenSize;
  const x = c.logitDivisor === 1 ? 'final_normed' : g.o('Div', ['final_normed', g.f32([c.logitDivisor])]);
  // Gemm with transB reads the [V, H] table directly (packed once at session start), so a tied head shares
  // the embedding's single stored copy.
  const table = weights.tensors['lm_head.weight'] ? 'lm_head.weight' : 'model.embed_tokens.weight';
  const flat = g.o('Reshape', [x, g.i64([-1, H])]);
  const logits2 = g.o('Gemm', [flat, g.w(table)], { transB: 1 });
  const shape = g.o('Concat', [g.o('Shape', ['final_normed'], { start: 0, end: 2 }), g.i64([c.vocabSize])], { axis: 0 });
  g.named('logits', 'Reshape', [logits2, shape]);
  const f = DataType.FLOAT;
  return model(
    c,
    'target_head',
    g,
    [{ name: 'final_normed', elemType: f, shape: ['batch', 'seq', H] }],
    [{ name: 'logits', elemType: f, shape: ['batch', 'seq', c.vocabSize] }],
    { kind: 'head' },
  );
}

function model(
  c: ModelConfig,
  name: string,
  g: Graph,
  inputs: ValueInfo[],
  outputs: ValueInfo[],
  meta: Record<string, string>,
): ModelProto {
  return {
    irVersion: IR_VERSION,
    opset: DECODER_OPSET,
    producerName: 'specforge',
    producerVersion: '0.1.0',
    doc: `${c.architecture} target (specforge ort-target, graph format ${GRAPH_FORMAT_VERSION})`,
    graph: { name, nodes: g.nodes, initializers: g.initializers, inputs, outputs },
    metadata: { architecture: c.architecture, graph_format: String(GRAPH_FORMAT_VERSION), ...meta },
  };
}
