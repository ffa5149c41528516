// The drafter interface: what speculative decoding needs of a draft model. The tfjs EAGLE-3 drafter
// (tfjs-drafter.ts) and the ONNX Runtime one (onnx-drafter.ts) implement it; tests inject scripted ones.
import type * as tf from '@tensorflow/tfjs';

/** A drafter's next-token scores for one node: `logits[j]` belongs to target token `vocab[j]`. */
export interface DraftLogits {
  vocab: ArrayLike<number>;
  logits: Float32Array;
}

/**
 * What the decoder needs of a draft model. A node of the draft tree is the path of draft tokens after the
 * last committed token ([] is the root).
 */
export interface Drafter {
  /** Target decoder layers whose outputs (concatenated in this order) the drafter reads; [] for none. */
  readonly featureLayers: readonly number[];
  /** Forget everything (a new prompt, or the end of one): the next call is extend() with the prompt. */
  reset(): void;
  /**
   * Appends committed context: the next positions get the target's features [1, n, F] at them (null when
   * featureLayers is empty) and `nextIds`, the committed token after each. Everything drafted since the
   * previous extend is dropped. The root's distribution is the one after the last of these positions.
   */
  extend(nextIds: number[], features: tf.Tensor3D | null): void;
  /**
   * Next-token scores of these nodes (in one batched draft forward where possible). A node other than the
   * root can be expanded once its parent has been.
   */
  expand(paths: number[][]): DraftLogits[];
  dispose(): void;
}
