// The target-model interface. Capture, online training and eval only talk to this, so a faster engine
// (ONNX Runtime, say) can stand beside the tfjs implementation.
import type * as tf from '@tensorflow/tfjs';
import type { ModelConfig } from '../io/hf-config.ts';

export interface TargetInput {
  /** Token ids [B][T], right-padded to a common length. */
  ids: number[][];
  /** 1 for real tokens, 0 for padding [B][T]; all ones when omitted. */
  attentionMask?: number[][];
  /** Absolute RoPE positions [B][T]; by default each row continues from the tokens it already has in the cache. */
  positionIds?: number[][];
  /**
   * Which of the new tokens each new token may attend to, [T][T] (1 = allowed), replacing the causal rule
   * among them (tree verification). The cached prefix stays fully visible.
   */
  treeMask?: number[][];
}

export interface ForwardOptions {
  /** 0-indexed decoder layers whose outputs (residual stream after the layer) to return. */
  layers?: number[];
  /** Return logits [B, T, V] (default true). Capture may only need the final normed hidden. */
  logits?: boolean;
  /** Continue from, and append to, this cache. */
  cache?: KVCache;
}

export interface TargetOutput {
  logits?: tf.Tensor3D;
  /** After the final RMSNorm, before lm_head (and before MiniCPM's division by hidden/dim_model_base). */
  finalNormed: tf.Tensor3D;
  layers: Map<number, tf.Tensor3D>;
}

/** Per-layer keys and values of the tokens seen so far, shared slot layout across the batch. */
export interface KVCache {
  readonly batch: number;
  /** Slots filled (including padding slots, which keyMask hides). */
  readonly length: number;
  /** Keep only these slots, in this order (rejecting draft tokens, or keeping a tree's accepted path). */
  select(slots: number[]): void;
  /** Keep the first n slots. */
  truncate(n: number): void;
  dispose(): void;
}

export interface TargetModel {
  readonly config: ModelConfig;
  forward(input: TargetInput, opts?: ForwardOptions): TargetOutput;
  /** forward() without blocking the calling thread, where the engine has a way (OrtTarget: a worker thread). */
  forwardAsync?(input: TargetInput, opts?: ForwardOptions): Promise<TargetOutput>;
  newCache(batch: number): KVCache;
  /** The target's lm_head applied to final normed hidden states (the teacher rebuilt from a capture). */
  lmHead(finalNormed: tf.Tensor): tf.Tensor;
  /** The input embedding table [V, H] (the draft copies it, frozen). */
  embeddings(): tf.Tensor2D;
  dispose(): void;
}

/** Checks a batch of token ids (non-empty, right-padded to one length, inside the vocabulary); returns [B, T]. */
export function checkIds(ids: number[][], vocabSize: number): [number, number] {
  const B = ids.length;
  const T = ids[0]?.length ?? 0;
  if (B === 0 || T === 0) throw new Error('target forward: empty batch');
  for (const row of ids) {
    if (row.length !== T) throw new Error(`target forward: rows of ids differ in length (${row.length} vs ${T}); right-pad them`);
    for (const id of row)
      if (!Number.isInteger(id) || id < 0 || id >= vocabSize)
        throw new Error(`target forward: token id ${id} outside the vocabulary [0, ${vocabSize})`);
  }
  return [B, T];
}
