// Hugging Face config.json -> one typed config for the four supported decoder families.
import fs from 'node:fs';
import path from 'node:path';

export const SUPPORTED_ARCHITECTURES = ['LlamaForCausalLM', 'Qwen2ForCausalLM', 'Qwen3ForCausalLM', 'MiniCPMForCausalLM'] as const;
export type Architecture = (typeof SUPPORTED_ARCHITECTURES)[number];

export type RopeScaling =
  | { type: 'llama3'; factor: number; lowFreqFactor: number; highFreqFactor: number; originalMaxPositionEmbeddings: number }
  | { type: 'linear'; factor: number };

export interface ModelConfig {
  architecture: Architecture;
  modelType: string;
  hiddenSize: number;
  intermediateSize: number;
  numLayers: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  vocabSize: number;
  rmsNormEps: number;
  ropeTheta: number;
  ropeScaling: RopeScaling | null;
  maxPositionEmbeddings: number;
  tieWordEmbeddings: boolean;
  /** Bias on q/k/v (Qwen2 always; Llama and Qwen3 when attention_bias). */
  qkvBias: boolean;
  /** Bias on o_proj (Llama and Qwen3 when attention_bias; never Qwen2). */
  oBias: boolean;
  mlpBias: boolean;
  /** Qwen3: RMSNorm over head_dim on q and k before RoPE. */
  qkNorm: boolean;
  /** MiniCPM: embeddings times scale_emb (1 elsewhere). */
  embedScale: number;
  /** MiniCPM: each residual branch times scale_depth / sqrt(L) (1 elsewhere). */
  residualScale: number;
  /** MiniCPM: the final normed hidden is divided by hidden_size / dim_model_base before lm_head (1 elsewhere). */
  logitDivisor: number;
  bosTokenId: number | null;
  eosTokenIds: number[];
  torchDtype: string;
  /** The parsed JSON, kept so that writers can carry unknown fields through. */
  raw: Record<string, unknown>;
}

export class ConfigError extends Error {}

type Json = Record<string, unknown>;

/** Parses a config.json object; `source` names the file in errors. */
export function parseModelConfig(raw: Json, source = 'config.json'): ModelConfig {
  const fail = (msg: string): never => {
    throw new ConfigError(`${source}: ${msg}`);
  };
  const archs = raw.architectures;
  if (!Array.isArray(archs) || archs.length === 0 || typeof archs[0] !== 'string') {
    fail(`field "architectures" is missing; expected one of ${SUPPORTED_ARCHITECTURES.join(', ')}`);
  }
  const architecture = (archs as string[])[0] as Architecture;
  if (!SUPPORTED_ARCHITECTURES.includes(architecture)) {
    fail(`unsupported architecture "${architecture}"; supported: ${SUPPORTED_ARCHITECTURES.join(', ')}`);
  }
  const int = (key: string, dflt?: number): number => {
    const v = raw[key];
    if (v === undefined || v === null) {
      if (dflt === undefined) return fail(`missing field "${key}" (a positive integer), required for ${architecture}`);
      return dflt;
    }
    if (typeof v !== 'number' || !Number.isInteger(v) || v <= 0)
      return fail(`field "${key}" is ${JSON.stringify(v)}; expected a positive integer`);
    return v;
  };
  const num = (key: string, dflt: number): number => {
    const v = raw[key];
    if (v === undefined || v === null) return dflt;
    if (typeof v !== 'number' || !Number.isFinite(v)) return fail(`field "${key}" is ${JSON.stringify(v)}; expected a number`);
    return v;
  };
  const bool = (key: string, dflt: boolean): boolean => {
    const v = raw[key];
    if (v === undefined || v === null) return dflt;
    if (typeof v !== 'boolean') return fail(`field "${key}" is ${JSON.stringify(v)}; expected true or false`);
    return v;
  };

  const act = raw.hidden_act ?? 'silu';
  if (act !== 'silu') fail(`field "hidden_act" is ${JSON.stringify(act)}; only "silu" is supported`);

  const hiddenSize = int('hidden_size');
  const numHeads = int('num_attention_heads');
  const numKvHeads = int('num_key_value_heads', numHeads);
  if (numHeads % numKvHeads !== 0) fail(`num_attention_heads (${numHeads}) is not a multiple of num_key_value_heads (${numKvHeads})`);
  if (raw.head_dim == null && hiddenSize % numHeads !== 0)
    fail(`hidden_size (${hiddenSize}) is not a multiple of num_attention_heads (${numHeads}) and no "head_dim" is given`);
  const headDim = int('head_dim', hiddenSize / numHeads);
  if (headDim % 2 !== 0) fail(`head_dim ${headDim} must be even for RoPE`);
  const numLayers = int('num_hidden_layers');

  const isMiniCPM = architecture === 'MiniCPMForCausalLM';
  const attentionBias = bool('attention_bias', false);
  const family = { LlamaForCausalLM: 'llama', Qwen2ForCausalLM: 'qwen2', Qwen3ForCausalLM: 'qwen3', MiniCPMForCausalLM: 'minicpm' }[
    architecture
  ];

  const eos = raw.eos_token_id;
  const eosTokenIds = eos == null ? [] : Array.isArray(eos) ? (eos as number[]) : [eos as number];
  if (!eosTokenIds.every((e) => Number.isInteger(e)))
    fail(`field "eos_token_id" is ${JSON.stringify(eos)}; expected an integer or a list of integers`);

  return {
    architecture,
    modelType: typeof raw.model_type === 'string' ? raw.model_type : family,
    hiddenSize,
    intermediateSize: int('intermediate_size'),
    numLayers,
    numHeads,
    numKvHeads,
    headDim,
    vocabSize: int('vocab_size'),
    rmsNormEps: num('rms_norm_eps', 1e-6),
    ropeTheta: num('rope_theta', 10000),
    ropeScaling: parseRopeScaling(raw.rope_scaling, fail),
    maxPositionEmbeddings: int('max_position_embeddings', isMiniCPM ? 4096 : 2048),
    // MiniCPM's config class defaults to tied embeddings; the other three default to untied.
    tieWordEmbeddings: bool('tie_word_embeddings', isMiniCPM),
    qkvBias: architecture === 'Qwen2ForCausalLM' || attentionBias,
    oBias: architecture !== 'Qwen2ForCausalLM' && attentionBias,
    mlpBias: bool('mlp_bias', false),
    qkNorm: architecture === 'Qwen3ForCausalLM',
    embedScale: isMiniCPM ? num('scale_emb', 1) : 1,
    residualScale: isMiniCPM ? num('scale_depth', 1) / Math.sqrt(numLayers) : 1,
    logitDivisor: isMiniCPM ? hiddenSize / num('dim_model_base', hiddenSize) : 1,
    bosTokenId: typeof raw.bos_token_id === 'number' ? raw.bos_token_id : null,
    eosTokenIds,
    torchDtype: typeof raw.torch_dtype === 'string' ? raw.torch_dtype : 'float32',
    raw,
  };
}

function parseRopeScaling(v: unknown, fail: (msg: string) => never): RopeScaling | null {
  if (v === undefined || v === null) return null;
  if (typeof v !== 'object') return fail(`field "rope_scaling" is ${JSON.stringify(v)}; expected an object or null`);
  const rs = v as Json;
  const type = rs.rope_type ?? rs.type;
  const n = (key: string, dflt?: number): number => {
    const x = rs[key] ?? dflt;
    if (typeof x !== 'number') return fail(`field "rope_scaling.${key}" is ${JSON.stringify(rs[key])}; expected a number`);
    return x;
  };
  if (type === 'default') return null;
  if (type === 'llama3') {
    return {
      type: 'llama3',
      factor: n('factor'),
      lowFreqFactor: n('low_freq_factor', 1),
      highFreqFactor: n('high_freq_factor', 4),
      originalMaxPositionEmbeddings: n('original_max_position_embeddings', 8192),
    };
  }
  if (type === 'linear') return { type: 'linear', factor: n('factor') };
  return fail(`field "rope_scaling.rope_type" is ${JSON.stringify(type)}; supported: llama3, linear, default`);
}

export function loadModelConfig(dir: string): ModelConfig {
  const file = path.join(dir, 'config.json');
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    throw new ConfigError(`${file}: cannot read (${(e as Error).message})`);
  }
  let raw: Json;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw new ConfigError(`${file}: not valid JSON (${(e as Error).message})`);
  }
  return parseModelConfig(raw, file);
}

/** EAGLE-3's default auxiliary layers: [1, L/2 - 1, L - 4] (integer division). */
export function defaultAuxLayers(numLayers: number): number[] {
  return [1, Math.floor(numLayers / 2) - 1, numLayers - 4];
}

/** Parameters of the full model, counted from its shapes (tied lm_head counted once). */
export function parameterCount(c: ModelConfig): number {
  const H = c.hiddenSize;
  const q = c.numHeads * c.headDim;
  const kv = c.numKvHeads * c.headDim;
  const attn = H * q + 2 * H * kv + q * H + (c.qkvBias ? q + 2 * kv : 0) + (c.oBias ? H : 0) + (c.qkNorm ? 2 * c.headDim : 0);
  const mlp = 3 * H * c.intermediateSize + (c.mlpBias ? 2 * c.intermediateSize + H : 0);
  const layer = attn + mlp + 2 * H;
  const embed = c.vocabSize * H;
  return embed + (c.tieWordEmbeddings ? 0 : embed) + c.numLayers * layer + H;
}

/** RoPE inverse frequencies for head_dim, with the config's scaling (HF's rope init functions). */
export function ropeInverseFrequencies(c: Pick<ModelConfig, 'headDim' | 'ropeTheta' | 'ropeScaling'>): Float32Array {
  const half = c.headDim / 2;
  const inv = new Float64Array(half);
  for (let i = 0; i < half; i++) inv[i] = 1 / c.ropeTheta ** ((2 * i) / c.headDim);
  const rs = c.ropeScaling;
  if (rs?.type === 'linear') {
    for (let i = 0; i < half; i++) inv[i] /= rs.factor;
  } else if (rs?.type === 'llama3') {
    const lowWavelen = rs.originalMaxPositionEmbeddings / rs.lowFreqFactor;
    const highWavelen = rs.originalMaxPositionEmbeddings / rs.highFreqFactor;
    for (let i = 0; i < half; i++) {
      const wavelen = (2 * Math.PI) / inv[i];
      if (wavelen > lowWavelen)
        inv[i] /= rs.factor; // long wavelengths: fully interpolated
      else if (wavelen >= highWavelen) {
        // the band between: blend interpolated and original frequencies
        const smooth = (rs.originalMaxPositionEmbeddings / wavelen - rs.lowFreqFactor) / (rs.highFreqFactor - rs.lowFreqFactor);
        inv[i] = ((1 - smooth) * inv[i]) / rs.factor + smooth * inv[i];
      }
    }
  }
  return Float32Array.from(inv);
}
