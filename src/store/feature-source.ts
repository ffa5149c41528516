// The trainer's view of captured target features.
import type { FeatureSample } from './schema.ts';

export type { FeatureSample } from './schema.ts';

export interface BatchOptions {
  batchSize: number;
  /** Seeded permutation of all samples per epoch; false gives store order. */
  shuffle: boolean;
  seed: number;
  epoch: number;
  /** Drop the last partial batch (default true), which also gives every rank the same number of batches. */
  dropLast?: boolean;
  /** This process's rank among worldSize data-parallel ranks (default 0 of 1). */
  rank?: number;
  worldSize?: number;
  /**
   * With several ranks and dropLast: every rank reads the whole global batch (the same samples as the
   * interleaved split) and keeps its share of a split balanced by sample length (balancedShares), so that
   * no rank waits long for a slower one at the all-reduce. Reads N times as many samples.
   */
  balance?: boolean;
  /** Start at this batch of the epoch (a resumed run skips what it already trained on, without reading it). */
  startBatch?: number;
}

/** What the trainer reads; implemented by the Arrow store and by the online target. */
export interface FeatureSource {
  readonly size: number;
  get(index: number): Promise<FeatureSample>;
  batches(opts: BatchOptions): AsyncGenerator<FeatureSample[]>;
  /** Releases what the source holds open (shard files); the source is not read after it. */
  close(): Promise<void> | void;
}
