// Plain, loop-based reference forward pass for four Hugging Face decoder-only architectures
// (LlamaForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM, MiniCPMForCausalLM).
//
// Deliberately independent of the real (tfjs) implementation: no libraries, only loops over
// typed arrays with float64 arithmetic inside. Written for clarity, not speed; it is meant for
// tiny test models (hidden ~32, a handful of layers, a few dozen tokens).

import { readFileSync } from 'node:fs';

export interface PlainTensor {
  data: Float32Array;
  shape: number[];
}

export interface PlainForwardResult {
  /** [T, vocab] row-major. */
  logits: Float32Array;
  /** [T, hidden]: after the final RMSNorm, before lm_head (for MiniCPM: before the division by hidden_size/dim_model_base). */
  finalNormed: Float32Array;
  /** num_hidden_layers entries, each [T, hidden]: the residual stream after decoder layer l. */
  layerOutputs: Float32Array[];
}

// ---------------------------------------------------------------------------------------------
// Small helpers. Every activation is a Float64Array holding a row-major [rows, cols] matrix.
// ---------------------------------------------------------------------------------------------

function getWeight(weights: Map<string, PlainTensor>, name: string): PlainTensor {
  const w = weights.get(name);
  if (w === undefined) throw new Error(`plainForward: missing weight ${name}`);
  return w;
}

/** y[r, o] = sum_i x[r, i] * W[o, i] (+ b[o]); W is PyTorch layout [out, in]. */
function linear(x: Float64Array, rows: number, w: PlainTensor, bias?: PlainTensor): Float64Array {
  if (w.shape.length !== 2) throw new Error(`linear: weight must be 2-D, got [${w.shape}]`);
  const [outDim, inDim] = w.shape as [number, number];
  if (x.length !== rows * inDim) {
    throw new Error(`linear: input has ${x.length} values, expected ${rows} x ${inDim}`);
  }
  if (bias !== undefined && bias.data.length !== outDim) {
    throw new Error(`linear: bias has ${bias.data.length} values, expected ${outDim}`);
  }
  const y = new Float64Array(rows * outDim);
  for (let r = 0; r < rows; r++) {
    for (let o = 0; o < outDim; o++) {
      let acc = bias !== undefined ? bias.data[o]! : 0;
      for (let i = 0; i < inDim; i++) acc += x[r * inDim + i]! * w.data[o * inDim + i]!;
      y[r * outDim + o] = acc;
    }
  }
  return y;
}

/** RMSNorm over each consecutive group of `width` values: v / sqrt(mean(v^2) + eps) * weight. */
function rmsNorm(x: Float64Array, width: number, weight: PlainTensor, eps: number): Float64Array {
  if (weight.data.length !== width) {
    throw new Error(`rmsNorm: weight has ${weight.data.length} values, expected ${width}`);
  }
  const y = new Float64Array(x.length);
  for (let start = 0; start < x.length; start += width) {
    let sumSq = 0;
    for (let i = 0; i < width; i++) sumSq += x[start + i]! * x[start + i]!;
    const inv = 1 / Math.sqrt(sumSq / width + eps);
    for (let i = 0; i < width; i++) y[start + i] = x[start + i]! * inv * weight.data[i]!;
  }
  return y;
}

function silu(v: number): number {
  return v / (1 + Math.exp(-v));
}

/** HF default inverse frequencies, optionally with llama3 scaling (`_compute_llama3_parameters`). */
function ropeInvFreq(config: Record<string, any>, headDim: number): Float64Array {
  const theta: number = config.rope_theta ?? 10000;
  const half = headDim / 2;
  const invFreq = new Float64Array(half);
  for (let i = 0; i < half; i++) invFreq[i] = 1 / theta ** ((2 * i) / headDim);

  const scaling = config.rope_scaling;
  const ropeType = scaling ? (scaling.rope_type ?? scaling.type) : undefined;
  if (ropeType === undefined || ropeType === null || ropeType === 'default') return invFreq;
  if (ropeType !== 'llama3') throw new Error(`plainForward: unsupported rope_scaling type ${ropeType}`);

  const factor: number = scaling.factor;
  const lowFreqFactor: number = scaling.low_freq_factor;
  const highFreqFactor: number = scaling.high_freq_factor;
  const oldContext: number = scaling.original_max_position_embeddings;
  const lowFreqWavelen = oldContext / lowFreqFactor;
  const highFreqWavelen = oldContext / highFreqFactor;
  for (let i = 0; i < half; i++) {
    const f = invFreq[i]!;
    const wavelen = (2 * Math.PI) / f;
    if (wavelen > lowFreqWavelen) {
      invFreq[i] = f / factor;
    } else if (wavelen < highFreqWavelen) {
      invFreq[i] = f;
    } else {
      const smooth = (oldContext / wavelen - lowFreqFactor) / (highFreqFactor - lowFreqFactor);
      invFreq[i] = (1 - smooth) * (f / factor) + smooth * f;
    }
  }
  return invFreq;
}

/**
 * Applies RoPE in place, "rotate_half" convention: x is [T, numHeads, headDim]; for position t and
 * i < headDim/2 the pair (x[i], x[i + headDim/2]) is rotated by angle t * invFreq[i].
 */
function applyRope(x: Float64Array, T: number, numHeads: number, headDim: number, invFreq: Float64Array): void {
  const half = headDim / 2;
  for (let t = 0; t < T; t++) {
    for (let h = 0; h < numHeads; h++) {
      const base = (t * numHeads + h) * headDim;
      for (let i = 0; i < half; i++) {
        const angle = t * invFreq[i]!;
        const c = Math.cos(angle);
        const s = Math.sin(angle);
        const a = x[base + i]!;
        const b = x[base + i + half]!;
        x[base + i] = a * c - b * s;
        x[base + i + half] = b * c + a * s;
      }
    }
  }
}

function toFloat32(x: Float64Array): Float32Array {
  return Float32Array.from(x);
}

// ---------------------------------------------------------------------------------------------
// The forward pass.
// ---------------------------------------------------------------------------------------------

const SUPPORTED = ['LlamaForCausalLM', 'Qwen2ForCausalLM', 'Qwen3ForCausalLM', 'MiniCPMForCausalLM'];

export function plainForward(config: Record<string, any>, weights: Map<string, PlainTensor>, ids: number[]): PlainForwardResult {
  const arch: string = config.architectures?.[0];
  if (!SUPPORTED.includes(arch)) throw new Error(`plainForward: unsupported architecture ${arch}`);
  const isQwen2 = arch === 'Qwen2ForCausalLM';
  const isQwen3 = arch === 'Qwen3ForCausalLM';
  const isMiniCPM = arch === 'MiniCPMForCausalLM';

  const hidden: number = config.hidden_size;
  const numLayers: number = config.num_hidden_layers;
  const numHeads: number = config.num_attention_heads;
  const numKvHeads: number = config.num_key_value_heads ?? numHeads;
  const headDim: number = config.head_dim ?? hidden / numHeads;
  const eps: number = config.rms_norm_eps ?? 1e-6;
  const T = ids.length;
  const groupSize = numHeads / numKvHeads;
  if (!Number.isInteger(groupSize)) throw new Error('plainForward: heads not divisible by kv heads');
  if (config.hidden_act !== undefined && config.hidden_act !== 'silu') {
    throw new Error(`plainForward: unsupported hidden_act ${config.hidden_act}`);
  }

  // Residual-branch and logit scales (all 1 except for MiniCPM).
  const scaleEmb: number = isMiniCPM ? (config.scale_emb ?? 1) : 1;
  const branchScale: number = isMiniCPM ? (config.scale_depth ?? 1) / Math.sqrt(numLayers) : 1;
  const logitDivisor: number = isMiniCPM ? hidden / (config.dim_model_base ?? hidden) : 1;

  // Embedding lookup.
  const embed = getWeight(weights, 'model.embed_tokens.weight');
  const vocab = embed.shape[0]!;
  let h = new Float64Array(T * hidden);
  for (let t = 0; t < T; t++) {
    const id = ids[t]!;
    if (!Number.isInteger(id) || id < 0 || id >= vocab) throw new Error(`plainForward: token id ${id} out of range`);
    for (let i = 0; i < hidden; i++) h[t * hidden + i] = embed.data[id * hidden + i]! * scaleEmb;
  }

  const invFreq = ropeInvFreq(config, headDim);
  const attnScale = 1 / Math.sqrt(headDim);
  const useQkvBias = isQwen2 || config.attention_bias === true;
  const layerOutputs: Float32Array[] = [];

  for (let l = 0; l < numLayers; l++) {
    const p = `model.layers.${l}.`;
    const w = (name: string) => getWeight(weights, p + name);
    const bias = (name: string) => (useQkvBias ? w(name) : undefined);

    // ---- self-attention block ----
    const xn = rmsNorm(h, hidden, w('input_layernorm.weight'), eps);
    const q = linear(xn, T, w('self_attn.q_proj.weight'), bias('self_attn.q_proj.bias')); // [T, numHeads*headDim]
    const k = linear(xn, T, w('self_attn.k_proj.weight'), bias('self_attn.k_proj.bias')); // [T, numKvHeads*headDim]
    const v = linear(xn, T, w('self_attn.v_proj.weight'), bias('self_attn.v_proj.bias')); // [T, numKvHeads*headDim]
    let qh = q;
    let kh = k;
    if (isQwen3) {
      qh = rmsNorm(q, headDim, w('self_attn.q_norm.weight'), eps);
      kh = rmsNorm(k, headDim, w('self_attn.k_norm.weight'), eps);
    }
    applyRope(qh, T, numHeads, headDim, invFreq);
    applyRope(kh, T, numKvHeads, headDim, invFreq);

    const attn = new Float64Array(T * numHeads * headDim); // [T, numHeads*headDim]
    const scores = new Float64Array(T);
    for (let head = 0; head < numHeads; head++) {
      const kvHead = Math.floor(head / groupSize);
      for (let i = 0; i < T; i++) {
        const qBase = (i * numHeads + head) * headDim;
        // Causal: query i attends to keys 0..i.
        let maxScore = -Infinity;
        for (let j = 0; j <= i; j++) {
          const kBase = (j * numKvHeads + kvHead) * headDim;
          let dot = 0;
          for (let d = 0; d < headDim; d++) dot += qh[qBase + d]! * kh[kBase + d]!;
          scores[j] = dot * attnScale;
          if (scores[j]! > maxScore) maxScore = scores[j]!;
        }
        let denom = 0;
        for (let j = 0; j <= i; j++) {
          scores[j] = Math.exp(scores[j]! - maxScore);
          denom += scores[j]!;
        }
        for (let j = 0; j <= i; j++) {
          const prob = scores[j]! / denom;
          const vBase = (j * numKvHeads + kvHead) * headDim;
          for (let d = 0; d < headDim; d++) attn[qBase + d] += prob * v[vBase + d]!;
        }
      }
    }
    const attnOut = linear(attn, T, w('self_attn.o_proj.weight')); // [T, hidden]
    const afterAttn = new Float64Array(T * hidden);
    for (let i = 0; i < T * hidden; i++) afterAttn[i] = h[i]! + attnOut[i]! * branchScale;

    // ---- MLP block ----
    const yn = rmsNorm(afterAttn, hidden, w('post_attention_layernorm.weight'), eps);
    const gate = linear(yn, T, w('mlp.gate_proj.weight'));
    const up = linear(yn, T, w('mlp.up_proj.weight'));
    const act = new Float64Array(gate.length);
    for (let i = 0; i < gate.length; i++) act[i] = silu(gate[i]!) * up[i]!;
    const mlpOut = linear(act, T, w('mlp.down_proj.weight'));
    const afterMlp = new Float64Array(T * hidden);
    for (let i = 0; i < T * hidden; i++) afterMlp[i] = afterAttn[i]! + mlpOut[i]! * branchScale;

    h = afterMlp;
    layerOutputs.push(toFloat32(h));
  }

  // Final norm and LM head.
  const finalNormed = rmsNorm(h, hidden, getWeight(weights, 'model.norm.weight'), eps);
  let lmHead = weights.get('lm_head.weight');
  if (lmHead === undefined) {
    const tied = config.tie_word_embeddings ?? true; // HF default is true (MiniCPM included)
    if (tied === false) throw new Error('plainForward: lm_head.weight missing and tie_word_embeddings is false');
    lmHead = embed;
  }
  const headInput = new Float64Array(finalNormed.length);
  for (let i = 0; i < finalNormed.length; i++) headInput[i] = finalNormed[i]! / logitDivisor;
  const logits = linear(headInput, T, lmHead);

  return { logits: toFloat32(logits), finalNormed: toFloat32(finalNormed), layerOutputs };
}

// ---------------------------------------------------------------------------------------------
// Minimal safetensors reader.
// ---------------------------------------------------------------------------------------------

function halfToFloat(bits: number): number {
  const sign = bits & 0x8000 ? -1 : 1;
  const exponent = (bits >> 10) & 0x1f;
  const mantissa = bits & 0x3ff;
  if (exponent === 0) return sign * 2 ** -14 * (mantissa / 1024);
  if (exponent === 0x1f) return mantissa === 0 ? sign * Infinity : NaN;
  return sign * 2 ** (exponent - 15) * (1 + mantissa / 1024);
}

/**
 * Reads a safetensors file. Float dtypes (F32, F64, F16, BF16) come back as Float32Array, I64 as
 * BigInt64Array, BOOL (and U8) as Uint8Array.
 */
export function readSafetensorsPlain(
  path: string,
): Map<string, { dtype: string; shape: number[]; data: Float32Array | BigInt64Array | Uint8Array }> {
  const file = readFileSync(path);
  const view = new DataView(file.buffer, file.byteOffset, file.byteLength);
  const headerLen = Number(view.getBigUint64(0, true));
  const header = JSON.parse(file.subarray(8, 8 + headerLen).toString('utf8')) as Record<string, any>;
  const dataStart = 8 + headerLen;

  const out = new Map<string, { dtype: string; shape: number[]; data: Float32Array | BigInt64Array | Uint8Array }>();
  for (const [name, info] of Object.entries(header)) {
    if (name === '__metadata__') continue;
    const dtype: string = info.dtype;
    const shape: number[] = info.shape;
    const [begin, end] = info.data_offsets as [number, number];
    const count = shape.reduce((a, b) => a * b, 1);
    const off = dataStart + begin;
    const nbytes = end - begin;
    const expectBytes = (size: number) => {
      if (nbytes !== count * size) throw new Error(`safetensors: ${name} has ${nbytes} bytes, expected ${count * size}`);
    };
    let data: Float32Array | BigInt64Array | Uint8Array;
    switch (dtype) {
      case 'F32': {
        expectBytes(4);
        const a = new Float32Array(count);
        for (let i = 0; i < count; i++) a[i] = view.getFloat32(off + 4 * i, true);
        data = a;
        break;
      }
      case 'F64': {
        expectBytes(8);
        const a = new Float32Array(count);
        for (let i = 0; i < count; i++) a[i] = view.getFloat64(off + 8 * i, true);
        data = a;
        break;
      }
      case 'F16': {
        expectBytes(2);
        const a = new Float32Array(count);
        for (let i = 0; i < count; i++) a[i] = halfToFloat(view.getUint16(off + 2 * i, true));
        data = a;
        break;
      }
      case 'BF16': {
        expectBytes(2);
        const a = new Float32Array(count);
        const tmp = new DataView(new ArrayBuffer(4));
        for (let i = 0; i < count; i++) {
          tmp.setUint32(0, view.getUint16(off + 2 * i, true) << 16, true);
          a[i] = tmp.getFloat32(0, true);
        }
        data = a;
        break;
      }
      case 'I64': {
        expectBytes(8);
        const a = new BigInt64Array(count);
        for (let i = 0; i < count; i++) a[i] = view.getBigInt64(off + 8 * i, true);
        data = a;
        break;
      }
      case 'BOOL':
      case 'U8': {
        expectBytes(1);
        data = Uint8Array.from(file.subarray(off, off + count));
        break;
      }
      default:
        throw new Error(`safetensors: unsupported dtype ${dtype} for ${name}`);
    }
    out.set(name, { dtype, shape, data });
  }
  return out;
}
