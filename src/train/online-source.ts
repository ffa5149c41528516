// The online FeatureSource: the target runs per batch and computes the features that capture would have
// stored. Same sample order and the same seeded batch order as the Arrow store, so a run gives the same
// losses online and offline.
import type { AnswerExtractor } from '../data/answers.ts';
import { computeFeatures, type TokenizedSample } from '../capture/features.ts';
import type { Tokenizer } from '../io/tokenizer.ts';
import type { BatchOptions, FeatureSample, FeatureSource } from '../store/feature-source.ts';
import { permutation, rankSlice } from '../store/reader.ts';
import type { TargetModel } from '../target/runtime.ts';

export class OnlineFeatures implements FeatureSource {
  readonly size: number;

  constructor(
    private readonly model: TargetModel,
    private readonly tok: Tokenizer,
    private readonly samples: TokenizedSample[],
    private readonly auxLayerIds: number[],
    private readonly answerExtractor: AnswerExtractor,
  ) {
    this.size = samples.length;
  }

  /** Runs the target over a set of samples at once (one padded batch). */
  compute(indices: number[]): FeatureSample[] {
    return computeFeatures(this.model, this.tok, indices.map((i) => this.samples[i]), this.auxLayerIds, this.answerExtractor);
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
