// The EAGLE-3 draft as an ONNX graph (opset 17, default domain only): one cached draft step, the same
// computation as draftDecode (src/draft/eagle3.ts) with the default visibility (every past slot, causal
// among the new tokens).
//
// Inputs (batch, seq, aux_seq, hidden_seq and past_seq are dynamic; seq = aux_seq + hidden_seq):
//   aux_hidden_states  float32 [batch, aux_seq, 3*Ht]   target features; the first aux_seq tokens take fc(aux)
//   hidden_states      float32 [batch, hidden_seq, H]   previous draft outputs; the remaining tokens take them
//                      (pass a [batch, 0, *] tensor for whichever kind a step does not have)
//   input_ids          int64   [batch, seq]             target token ids (embedding table in the file), or
//   inputs_embeds      float32 [batch, seq, H]          when exported without the target's embedding table
//   position_ids       int64   [batch, seq]             RoPE positions
//   past_key, past_value float32 [batch, kv_heads, past_seq, head_dim]  (past_seq may be 0)
// Outputs:
//   logits             float32 [batch, seq, Vd]         draft-vocabulary logits
//   next_hidden        float32 [batch, seq, H]          pre-norm outputs: the hidden_states of the next step
//   present_key, present_value [batch, kv_heads, past_seq + seq, head_dim]  past followed by the new tokens
//   specexit_signals   float32 [batch, aux_seq, 3]      (SpecExit drafts) confidence, progress, remaining
//                      = sigmoid(z0), sigmoid(z1), exp(z2) of the signal rows over the aux features
//   topk_token_ids     int64   [batch, seq, k]          (topk > 0) best draft ids mapped to target ids (d2t)
// Attention: token i of the step sees every past slot and new tokens 0..i; the mask is derived from the
// shapes of past_key and input_ids inside the graph, so a tree is drafted by giving each node its own batch
// row whose past holds the context and its ancestors.
import { ropeInverseFrequencies } from '../io/hf-config.ts';
import type { DraftConfig } from '../draft/config.ts';
import {
  type AttributeValue,
  DataType,
  type DataTypeId,
  type ModelProto,
  type NodeProto,
  type TensorProto,
  type ValueInfo,
} from '../io/onnx-proto.ts';

export const ONNX_OPSET = 17;
/** IR version 8 goes with opset 17. */
export const ONNX_IR_VERSION = 8;
/** Additive bias of a hidden attention slot, as tfjs' MASKED (finite: a fully masked row cannot be NaN). */
const MASKED = -1e9;

export interface DraftGraphOptions {
  /** Weight-only int8: symmetric, one scale per output channel (per row for the embedding table). */
  quantize?: 'int8' | null;
  /** Also output the k best draft tokens as target ids; 0 for none. */
  topk?: number;
  /** The target's input embedding table [V, H] (input_ids in the graph); null: inputs_embeds instead. */
  embed?: Float32Array | null;
}

/** Graph input and output names, in order, for a given export (see the header). */
export function draftGraphNames(c: DraftConfig, o: DraftGraphOptions): { inputs: string[]; outputs: string[] } {
  return {
    inputs: ['aux_hidden_states', 'hidden_states', o.embed ? 'input_ids' : 'inputs_embeds', 'position_ids', 'past_key', 'past_value'],
    outputs: [
      'logits',
      'next_hidden',
      'present_key',
      'present_value',
      ...(c.specExit ? ['specexit_signals'] : []),
      ...((o.topk ?? 0) > 0 ? ['topk_token_ids'] : []),
    ],
  };
}

const bytesOf = (a: Float32Array | Int8Array | BigInt64Array): Uint8Array => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);

/** Per-row symmetric int8 of a row-major [rows, cols] matrix: q = round(w / s), s = max|row| / 127. */
export function quantizeRows(w: Float32Array, rows: number, cols: number): { q: Int8Array; scale: Float32Array } {
  const q = new Int8Array(rows * cols);
  const scale = new Float32Array(rows);
  for (let r = 0; r < rows; r++) {
    let m = 0;
    for (let j = 0; j < cols; j++) m = Math.max(m, Math.abs(w[r * cols + j]));
    const s = m > 0 ? m / 127 : 1;
    scale[r] = s;
    for (let j = 0; j < cols; j++) q[r * cols + j] = Math.max(-127, Math.min(127, Math.round(w[r * cols + j] / s)));
  }
  return { q, scale };
}

function transpose(w: Float32Array, rows: number, cols: number): Float32Array {
  const t = new Float32Array(w.length);
  for (let r = 0; r < rows; r++) for (let j = 0; j < cols; j++) t[j * rows + r] = w[r * cols + j];
  return t;
}

/** Collects nodes and initializers with generated intermediate names. */
class GraphBuilder {
  readonly nodes: NodeProto[] = [];
  readonly initializers: TensorProto[] = [];
  private counter = 0;

  op(opType: string, inputs: string[], attributes?: Record<string, AttributeValue>, outputs = 1): string[] {
    const names = Array.from({ length: outputs }, (_, i) => `${opType.toLowerCase()}_${this.counter}${outputs > 1 ? `_${i}` : ''}`);
    this.nodes.push({ opType, inputs, outputs: names, name: `${opType}_${this.counter++}`, attributes });
    return names;
  }

  /** One-output op. */
  o(opType: string, inputs: string[], attributes?: Record<string, AttributeValue>): string {
    return this.op(opType, inputs, attributes)[0];
  }

  /** An op whose output gets a fixed (graph output) name. */
  named(name: string, opType: string, inputs: string[], attributes?: Record<string, AttributeValue>): string {
    this.nodes.push({ opType, inputs, outputs: [name], name: `${opType}_${name}`, attributes });
    return name;
  }

  init(name: string, dataType: DataTypeId, dims: number[], data: Float32Array | Int8Array | BigInt64Array): string {
    this.initializers.push({ name, dataType, dims, raw: bytesOf(data) });
    return name;
  }

  f32(name: string, dims: number[], data: ArrayLike<number>): string {
    return this.init(name, DataType.FLOAT, dims, Float32Array.from(data));
  }

  i64(name: string, values: number[]): string {
    return this.init(
      name,
      DataType.INT64,
      [values.length],
      BigInt64Array.from(values, (v) => BigInt(v)),
    );
  }
}

/**
 * The ModelProto of one draft step. `weights`: SGLang names in PyTorch layout ([out, in]) as
 * Eagle3Draft.exportWeights gives them; `used`: target id of each draft id (i + d2t[i]).
 */
export function buildDraftModel(
  c: DraftConfig,
  weights: Map<string, { shape: number[]; data: Float32Array }>,
  used: Int32Array,
  o: DraftGraphOptions = {},
): ModelProto {
  const g = new GraphBuilder();
  const H = c.hiddenSize;
  const F = c.auxLayerIds.length * c.targetHiddenSize;
  const hd = c.headDim;
  const nH = c.numHeads;
  const kvH = c.numKvHeads;
  const group = nH / kvH;
  const topk = o.topk ?? 0;
  const int8 = o.quantize === 'int8';
  const w = (name: string) => {
    const t = weights.get(name);
    if (!t) throw new Error(`ONNX export: the draft has no '${name}'`);
    return t;
  };
  if (w('fc.weight').shape[1] !== F)
    throw new Error(
      `ONNX export: fc.weight is [${w('fc.weight').shape}]; ${c.auxLayerIds.length} aux layers of ${c.targetHiddenSize} need ${F} inputs`,
    );

  // Linear layers: the weight as [in, out] for MatMul; int8 keeps one scale per output channel and
  // dequantizes in the graph (DequantizeLinear along axis 1), so the file holds one byte per weight.
  const linear = (x: string, name: string): string => {
    const { shape, data } = w(name);
    const [out, inp] = shape;
    if (!int8) return g.o('MatMul', [x, g.f32(name, [inp, out], transpose(data, out, inp))]);
    const { q, scale } = quantizeRows(data, out, inp);
    const qT = new Int8Array(q.length);
    for (let r = 0; r < out; r++) for (let j = 0; j < inp; j++) qT[j * out + r] = q[r * inp + j];
    const deq = g.o('DequantizeLinear', [g.init(`${name}.int8`, DataType.INT8, [inp, out], qT), g.f32(`${name}.scale`, [out], scale)], {
      axis: 1,
    });
    return g.o('MatMul', [x, deq]);
  };
  const rms = (x: string, name: string): string => {
    const ms = g.o('ReduceMean', [g.o('Mul', [x, x])], { axes: [-1], keepdims: 1 });
    const inv = g.o('Reciprocal', [g.o('Sqrt', [g.o('Add', [ms, eps])])]);
    return g.o('Mul', [g.o('Mul', [x, inv]), g.f32(name, [H], w(name).data)]);
  };
  const eps = g.f32('rms_norm_eps', [], [c.rmsNormEps]);
  const axes = (...a: number[]) => g.i64(`axes_${a.join('_').replace(/-/g, 'm')}_${g.initializers.length}`, a);

  // Hidden inputs: fc over the aux features for the first aux_seq tokens, the given hiddens after them.
  const hidden = g.o('Concat', [linear('aux_hidden_states', 'fc.weight'), 'hidden_states'], { axis: 1 });

  // Token embeddings.
  let embeds: string;
  if (!o.embed) embeds = 'inputs_embeds';
  else if (!int8) embeds = g.o('Gather', [g.f32('embed_tokens.weight', [c.vocabSize, H], o.embed), 'input_ids'], { axis: 0 });
  else {
    // Per-row int8 table: gather the rows and their scales, widen, scale.
    const { q, scale } = quantizeRows(o.embed, c.vocabSize, H);
    const rowsQ = g.o('Gather', [g.init('embed_tokens.weight.int8', DataType.INT8, [c.vocabSize, H], q), 'input_ids'], { axis: 0 });
    const rowScale = g.o('Unsqueeze', [
      g.o('Gather', [g.f32('embed_tokens.weight.scale', [c.vocabSize], scale), 'input_ids'], { axis: 0 }),
      axes(-1),
    ]);
    embeds = g.o('Mul', [g.o('Cast', [rowsQ], { to: DataType.FLOAT }), rowScale]);
  }

  // RoPE tables from the positions, [batch, seq, 1, hd] (rotate_half layout: the two halves repeat).
  const invFreq = ropeInverseFrequencies(c);
  const angle = g.o('Mul', [
    g.o('Unsqueeze', [g.o('Cast', ['position_ids'], { to: DataType.FLOAT }), axes(-1)]),
    g.f32('rope_inv_freq', [invFreq.length], invFreq),
  ]);
  const table = (fn: 'Cos' | 'Sin') => {
    const half = g.o(fn, [angle]);
    return g.o('Unsqueeze', [g.o('Concat', [half, half], { axis: -1 }), axes(2)]);
  };
  const cos = table('Cos');
  const sin = table('Sin');
  const halfStart = g.i64('rope_half_start', [0]);
  const halfMid = g.i64('rope_half_mid', [hd / 2]);
  const halfEnd = g.i64('rope_half_end', [hd]);
  const lastAxis = g.i64('rope_axis', [-1]);
  const rope = (x: string) => {
    const x1 = g.o('Slice', [x, halfStart, halfMid, lastAxis]);
    const x2 = g.o('Slice', [x, halfMid, halfEnd, lastAxis]);
    return g.o('Add', [g.o('Mul', [x, cos]), g.o('Mul', [g.o('Concat', [g.o('Neg', [x2]), x1], { axis: -1 }), sin])]);
  };

  // Attention input: concat(input_layernorm(embedding), hidden_norm(hidden)), embedding first.
  const x = g.o('Concat', [rms(embeds, 'midlayer.input_layernorm.weight'), rms(hidden, 'midlayer.hidden_norm.weight')], { axis: -1 });
  const heads = (name: string, n: number) => g.o('Reshape', [linear(x, name), g.i64(`${name}.heads`, [0, 0, n, hd])]);
  const q = rope(heads('midlayer.self_attn.q_proj.weight', nH)); // [B, T, nH, hd]
  const k = g.o('Transpose', [rope(heads('midlayer.self_attn.k_proj.weight', kvH))], { perm: [0, 2, 1, 3] }); // [B, kvH, T, hd]
  const v = g.o('Transpose', [heads('midlayer.self_attn.v_proj.weight', kvH)], { perm: [0, 2, 1, 3] });
  const presentK = g.named('present_key', 'Concat', ['past_key', k], { axis: 2 });
  const presentV = g.named('present_value', 'Concat', ['past_value', v], { axis: 2 });

  // GQA without copying keys: query head h = kv * group + j becomes row (kv, j) of [B, kvH, group, T, hd].
  const q5 = g.o('Transpose', [g.o('Reshape', [q, g.i64('q_groups', [0, 0, kvH, group, hd])])], { perm: [0, 2, 3, 1, 4] });
  const kT = g.o('Transpose', [g.o('Unsqueeze', [presentK, axes(2)])], { perm: [0, 1, 2, 4, 3] }); // [B, kvH, 1, hd, S]
  const scores = g.o('Mul', [g.o('MatMul', [q5, kT]), g.f32('attn_scale', [], [1 / Math.sqrt(hd)])]); // [B, kvH, group, T, S]

  // Mask [T, S]: new token i (slot past_seq + i) sees slots s <= past_seq + i.
  const scalar = (shape1: string) => g.o('Squeeze', [shape1, axes(0)]);
  const P = scalar(g.o('Shape', ['past_key'], { start: 2, end: 3 }));
  const S = scalar(g.o('Shape', [presentK], { start: 2, end: 3 }));
  const zero = g.init('zero_i64', DataType.INT64, [], BigInt64Array.of(0n));
  const one = g.init('one_i64', DataType.INT64, [], BigInt64Array.of(1n));
  const slots = g.o('Range', [zero, S, one]);
  const rowsSlot = g.o('Unsqueeze', [g.o('Range', [P, S, one]), axes(1)]);
  const bias = g.o('Where', [g.o('Greater', [slots, rowsSlot]), g.f32('masked_bias', [], [MASKED]), g.f32('zero_f32', [], [0])]);
  const probs = g.o('Softmax', [g.o('Add', [scores, bias])], { axis: -1 });
  const v5 = g.o('Unsqueeze', [presentV, axes(2)]); // [B, kvH, 1, S, hd]
  const attn5 = g.o('MatMul', [probs, v5]); // [B, kvH, group, T, hd]
  const attn = g.o('Reshape', [g.o('Transpose', [attn5], { perm: [0, 3, 1, 2, 4] }), g.i64('attn_flat', [0, 0, nH * hd])]);

  // o_proj with the residual on the hidden input (not the 2H concat), then the SwiGLU MLP and residual.
  const r = g.o('Add', [hidden, linear(attn, 'midlayer.self_attn.o_proj.weight')]);
  const y = rms(r, 'midlayer.post_attention_layernorm.weight');
  const gate = linear(y, 'midlayer.mlp.gate_proj.weight');
  const act = g.o('Mul', [gate, g.o('Sigmoid', [gate])]);
  const mlp = linear(g.o('Mul', [act, linear(y, 'midlayer.mlp.up_proj.weight')]), 'midlayer.mlp.down_proj.weight');
  const out = g.named('next_hidden', 'Add', [r, mlp]);
  const logitsRaw = linear(rms(out, 'norm.weight'), 'lm_head.weight');
  g.named('logits', 'Identity', [logitsRaw]);

  if (c.specExit) {
    // Signal rows kept in float32 (three rows; their scale matters more than their size).
    const sw = w('specexit.signals.weight');
    const z = g.o('MatMul', ['aux_hidden_states', g.f32('specexit.signals.weight', [F, 3], transpose(sw.data, 3, F))]);
    const sig = g.o('Slice', [g.o('Sigmoid', [z]), g.i64('sig_start', [0]), g.i64('sig_end', [2]), lastAxis]);
    const rem = g.o('Slice', [g.o('Exp', [z]), g.i64('rem_start', [2]), g.i64('rem_end', [3]), lastAxis]);
    g.named('specexit_signals', 'Concat', [sig, rem], { axis: -1 });
  }
  if (topk > 0) {
    if (topk > c.draftVocabSize) throw new Error(`ONNX export: topk ${topk} exceeds the draft vocabulary (${c.draftVocabSize})`);
    const [, idx] = g.op('TopK', [logitsRaw, g.i64('topk_k', [topk])], { axis: -1, largest: 1, sorted: 1 }, 2);
    g.named(
      'topk_token_ids',
      'Gather',
      [
        g.init(
          'draft_to_target',
          DataType.INT64,
          [used.length],
          BigInt64Array.from(used, (t) => BigInt(t)),
        ),
        idx,
      ],
      { axis: 0 },
    );
  }

  const f = DataType.FLOAT;
  const inputs: ValueInfo[] = [
    {
      name: 'aux_hidden_states',
      elemType: f,
      shape: ['batch', 'aux_seq', F],
      doc: 'target features (concatenated aux layers) of the first aux_seq tokens',
    },
    {
      name: 'hidden_states',
      elemType: f,
      shape: ['batch', 'hidden_seq', H],
      doc: 'previous draft outputs (next_hidden) of the remaining tokens',
    },
    o.embed
      ? { name: 'input_ids', elemType: DataType.INT64, shape: ['batch', 'seq'], doc: 'target token ids, seq = aux_seq + hidden_seq' }
      : { name: 'inputs_embeds', elemType: f, shape: ['batch', 'seq', H], doc: "the target's input embeddings of the tokens" },
    { name: 'position_ids', elemType: DataType.INT64, shape: ['batch', 'seq'] },
    { name: 'past_key', elemType: f, shape: ['batch', kvH, 'past_seq', hd] },
    { name: 'past_value', elemType: f, shape: ['batch', kvH, 'past_seq', hd] },
  ];
  const outputs: ValueInfo[] = [
    { name: 'logits', elemType: f, shape: ['batch', 'seq', c.draftVocabSize] },
    { name: 'next_hidden', elemType: f, shape: ['batch', 'seq', H] },
    { name: 'present_key', elemType: f, shape: ['batch', kvH, 'present_seq', hd] },
    { name: 'present_value', elemType: f, shape: ['batch', kvH, 'present_seq', hd] },
    ...(c.specExit ? [{ name: 'specexit_signals', elemType: f, shape: ['batch', 'aux_seq', 3] } as ValueInfo] : []),
    ...(topk > 0 ? [{ name: 'topk_token_ids', elemType: DataType.INT64, shape: ['batch', 'seq', topk] } as ValueInfo] : []),
  ];
  return {
    irVersion: ONNX_IR_VERSION,
    opset: ONNX_OPSET,
    producerName: 'specforge',
    producerVersion: '0.1.0',
    doc: 'EAGLE-3 draft step with KV cache (specforge export-onnx)',
    graph: { name: 'eagle3_draft_step', nodes: g.nodes, initializers: g.initializers, inputs, outputs },
    metadata: {
      architecture: 'LlamaForCausalLMEagle3',
      quantization: int8 ? 'int8-weight-only-per-channel' : 'none',
      draft_vocab_size: String(c.draftVocabSize),
      vocab_size: String(c.vocabSize),
      aux_layer_ids: JSON.stringify(c.auxLayerIds),
      embedding: o.embed ? 'in-file' : 'input',
      topk: String(topk),
      specexit: String(Boolean(c.specExit)),
    },
  };
}
