// The online FeatureSource: the target runs per batch and computes the features that capture would have
// stored. Same sample order and the same seeded batch order as the Arrow store, so a run gives the same
// losses online and offline.
import * as tf from '@tensorflow/tfjs';
import type { AnswerExtractor } from '../data/answers.ts';
import type { Tokenized } from '../data/chat.ts';
import { findThinkingSpans } from '../data/thinking.ts';
import type { Tokenizer } from '../io/tokenizer.ts';
import type { BatchOptions, FeatureSample, FeatureSource } from '../store/feature-source.ts';
import { permutation, rankSlice } from '../store/reader.ts';
import type { TargetModel } from '../target/runtime.ts';

export class OnlineFeatures implements FeatureSource {
  readonly size: number;

  constructor(
    private readonly model: TargetModel,
    private readonly tok: Tokenizer,
    private readonly samples: (Tokenized & { id: string })[],
    private readonly auxLayerIds: number[],
    private readonly answerExtractor: AnswerExtractor,
  ) {
    this.size = samples.length;
  }

  /** Runs the target over a set of samples at once (one padded batch). */
  compute(indices: number[]): FeatureSample[] {
    const batch = indices.map((i) => this.samples[i]);
    const T = Math.max(...batch.map((s) => s.ids.length));
    const ids = batch.map((s) => [...s.ids, ...new Array(T - s.ids.length).fill(0)]);
    const attentionMask = batch.map((s) => ids[0].map((_, t) => (t < s.ids.length ? 1 : 0)));
    const out = this.model.forward({ ids, attentionMask }, { layers: this.auxLayerIds, logits: false });
    const aux = tf.tidy(() => tf.concat(this.auxLayerIds.map((l) => out.layers.get(l)!), -1)).dataSync() as Float32Array;
    const fin = out.finalNormed.dataSync() as Float32Array;
    tf.dispose([out.finalNormed, ...out.layers.values()]);
    const H = this.model.config.hiddenSize;
    const A = this.auxLayerIds.length * H;
    const think = this.tok.tokenToId('<think>');
    const endThink = this.tok.tokenToId('</think>');
    return batch.map((s, b) => {
      const n = s.ids.length;
      const spans = think !== undefined && endThink !== undefined ? findThinkingSpans(s.ids, s.lossMask, { think, endThink }, (x) => this.tok.decode(x), this.answerExtractor) : [];
      return {
        id: s.id,
        inputIds: Int32Array.from(s.ids),
        lossMask: Uint8Array.from(s.lossMask),
        aux: aux.slice(b * T * A, b * T * A + n * A),
        finalHidden: fin.slice(b * T * H, b * T * H + n * H),
        thinkSpans: Int32Array.from(spans.flatMap((sp) => [sp.start, sp.end])),
        answerPositions: Int32Array.from(spans.map((sp) => sp.answerAt)),
        answer: spans.find((sp) => sp.answer)?.answer ?? '',
      };
    });
  }

  async get(index: number): Promise<FeatureSample> {
    return this.compute([index])[0];
  }

  async *batches(opts: BatchOptions): AsyncGenerator<FeatureSample[]> {
    const order = opts.shuffle ? permutation(this.size, opts.seed, opts.epoch) : Int32Array.from({ length: this.size }, (_, i) => i);
    const mine = rankSlice(order, opts.rank ?? 0, opts.worldSize ?? 1, opts.dropLast ?? true);
    const dropLast = opts.dropLast ?? true;
    for (let i = (opts.startBatch ?? 0) * opts.batchSize; i < mine.length; i += opts.batchSize) {
      if (dropLast && i + opts.batchSize > mine.length) break;
      yield this.compute(Array.from(mine.subarray(i, i + opts.batchSize)));
    }
  }
}
