// The EAGLE-3 draft's configuration, derived from the target's (as SpecForge sizes its drafts) and
// written as the config.json that SGLang and vLLM load (architectures: LlamaForCausalLMEagle3).
import type { ModelConfig, RopeScaling } from '../io/hf-config.ts';

export interface DraftConfig {
  hiddenSize: number;
  targetHiddenSize: number;
  intermediateSize: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  /** The target's vocabulary size. */
  vocabSize: number;
  draftVocabSize: number;
  rmsNormEps: number;
  ropeTheta: number;
  ropeScaling: RopeScaling | null;
  maxPositionEmbeddings: number;
  auxLayerIds: number[];
  /** SpecExit: three signal rows beside fc (confidence, progress, log-remaining). */
  specExit?: boolean;
}

/** A draft sized like the target's decoder layers (every published EAGLE-3 recipe does this). */
export function draftConfigFor(target: ModelConfig, auxLayerIds: number[], draftVocabSize: number, specExit = false): DraftConfig {
  return {
    hiddenSize: target.hiddenSize,
    targetHiddenSize: target.hiddenSize,
    intermediateSize: target.intermediateSize,
    numHeads: target.numHeads,
    numKvHeads: target.numKvHeads,
    headDim: target.headDim,
    vocabSize: target.vocabSize,
    draftVocabSize: Math.min(draftVocabSize, target.vocabSize),
    rmsNormEps: target.rmsNormEps,
    ropeTheta: target.ropeTheta,
    ropeScaling: target.ropeScaling,
    maxPositionEmbeddings: target.maxPositionEmbeddings,
    auxLayerIds,
    specExit,
  };
}

/** Trainable parameters of the draft (the frozen embedding excluded). */
export function draftParameterCount(c: DraftConfig): number {
  const H = c.hiddenSize;
  const q = c.numHeads * c.headDim;
  const kv = c.numKvHeads * c.headDim;
  return 3 * c.targetHiddenSize * H + 2 * H * (q + 2 * kv) + q * H + 3 * H * c.intermediateSize + 4 * H + c.draftVocabSize * H;
}

function ropeScalingJson(r: RopeScaling | null): Record<string, unknown> | null {
  if (!r) return null;
  if (r.type === 'linear') return { rope_type: 'linear', factor: r.factor };
  return {
    rope_type: 'llama3',
    factor: r.factor,
    low_freq_factor: r.lowFreqFactor,
    high_freq_factor: r.highFreqFactor,
    original_max_position_embeddings: r.originalMaxPositionEmbeddings,
  };
}

/** config.json in the layout SGLang's and vLLM's EAGLE-3 loaders read. */
export function draftConfigJson(c: DraftConfig, torchDtype = 'float32'): Record<string, unknown> {
  const json: Record<string, unknown> = {
    architectures: ['LlamaForCausalLMEagle3'],
    model_type: 'llama',
    hidden_size: c.hiddenSize,
    intermediate_size: c.intermediateSize,
    num_attention_heads: c.numHeads,
    num_key_value_heads: c.numKvHeads,
    num_hidden_layers: 1,
    max_position_embeddings: c.maxPositionEmbeddings,
    rms_norm_eps: c.rmsNormEps,
    rope_theta: c.ropeTheta,
    rope_scaling: ropeScalingJson(c.ropeScaling),
    hidden_act: 'silu',
    vocab_size: c.vocabSize,
    draft_vocab_size: c.draftVocabSize,
    tie_word_embeddings: false,
    torch_dtype: torchDtype,
    eagle_config: { eagle_aux_hidden_state_layer_ids: c.auxLayerIds },
  };
  if (c.headDim !== c.hiddenSize / c.numHeads) json.head_dim = c.headDim;
  if (c.targetHiddenSize !== c.hiddenSize) json.target_hidden_size = c.targetHiddenSize;
  if (c.specExit) json.specexit = { signals: ['confidence', 'progress', 'log_remaining'], file: 'specexit/signals.safetensors' };
  return json;
}
