// What training needs of the target besides captured features: its input embedding (the draft's frozen
// embedding) and its lm_head (to rebuild the teacher logits from the stored final normed hidden state).
// Only these two tensors are read from the checkpoint, not the whole model.
import * as tf from '@tensorflow/tfjs';
import { linear } from '../backend/matmul.ts';
import type { ModelConfig } from '../io/hf-config.ts';
import { SafetensorsFolder } from '../io/safetensors.ts';

export class TeacherHead {
  readonly embed: tf.Tensor2D;
  private readonly head: tf.Tensor2D; // [H, V]
  private readonly divisor: number;

  constructor(embed: tf.Tensor2D, headInOut: tf.Tensor2D, logitDivisor: number) {
    this.embed = embed;
    this.head = headInOut;
    this.divisor = logitDivisor;
  }

  static load(dir: string, c: ModelConfig): TeacherHead {
    const ckpt = new SafetensorsFolder(dir);
    const read = (name: string, shape: [number, number]) => {
      const t = ckpt.read(name);
      if (t.shape[0] !== shape[0] || t.shape[1] !== shape[1])
        throw new Error(`${dir}: '${name}' has shape [${t.shape}], expected [${shape}]`);
      return tf.tensor2d(t.data as Float32Array, shape);
    };
    const embed = read('model.embed_tokens.weight', [c.vocabSize, c.hiddenSize]);
    const tied = c.tieWordEmbeddings && !ckpt.has('lm_head.weight');
    const head = tied ? tf.transpose(embed) : tf.tidy(() => tf.transpose(read('lm_head.weight', [c.vocabSize, c.hiddenSize])));
    return new TeacherHead(embed, head as tf.Tensor2D, c.logitDivisor);
  }

  /** Target logits [B, T, V] from final normed hidden states [B, T, H]. */
  logits(finalHidden: tf.Tensor3D): tf.Tensor3D {
    return tf.tidy(() => linear(this.divisor === 1 ? finalHidden : (tf.div(finalHidden, this.divisor) as tf.Tensor3D), this.head));
  }

  dispose(): void {
    this.embed.dispose();
    this.head.dispose();
  }
}
