// StoreWriter: appends captured samples to a hidden-state store in order, one Arrow IPC file per
// `samples_per_shard` samples: shard i holds samples [i*S, (i+1)*S). It is the single-rank, sequential
// face of RankStoreWriter: a shard is written under a temporary name, fsynced and renamed, and only then
// listed in manifest.json (rewritten atomically). A crashed writer therefore leaves a valid incomplete
// store whose finished shards a resumed one skips (`completedSamples`), and since a shard's bytes depend
// only on its samples, the resumed store is byte-identical to an uninterrupted one.
import type { StoreManifest } from './manifest.ts';
import { StoreError } from './manifest.ts';
import { RankStoreWriter, type RankStoreWriterOptions } from './rank-writer.ts';
import type { FeatureSample } from './schema.ts';
import type { EncodedRow, StoreMetaInput } from './shard-file.ts';

export type { StoreMetaInput } from './shard-file.ts';
export type StoreWriterOptions = RankStoreWriterOptions;

export class StoreWriter {
  private buffer: EncodedRow[] = [];
  private finished = false;
  /** Samples handed to add() so far, counting those covered by shards finished before a resume. */
  private added: number;

  private constructor(private readonly writer: RankStoreWriter) {
    this.added = this.completedSamples;
  }

  /**
   * Creates the store folder, or reopens an incomplete store whose meta matches (resume). A complete
   * store, a meta mismatch or a non-empty folder that is not a store are errors.
   */
  static async open(dir: string, meta: StoreMetaInput, opts: StoreWriterOptions = {}): Promise<StoreWriter> {
    return new StoreWriter(await RankStoreWriter.open(dir, meta, 0, opts));
  }

  get dir(): string {
    return this.writer.dir;
  }

  /** Samples covered by finished shards: a resumed capture starts at this index of its sample order. */
  get completedSamples(): number {
    return this.writer.current.total_samples;
  }

  /** The manifest as last written. */
  get current(): StoreManifest {
    return this.writer.current;
  }

  /** Buffers a sample (encoded, so its arrays are copied); every `samples_per_shard` samples the shard is written. */
  async add(sample: FeatureSample): Promise<void> {
    this.check();
    this.buffer.push(this.writer.encode(sample, this.added));
    this.added++; // only once accepted: a refused sample takes no place
    if (this.buffer.length === this.writer.current.samples_per_shard) await this.flush();
  }

  /** Writes the last partial shard and marks the store complete. */
  async finish(): Promise<StoreManifest> {
    this.check();
    await this.flush();
    this.finished = true;
    const m = this.writer.current;
    return this.writer.finish(m.shards.length, m.total_samples);
  }

  private async flush(): Promise<void> {
    if (this.buffer.length === 0) return;
    const m = this.writer.current;
    const rows = this.buffer;
    this.buffer = [];
    await this.writer.write(m.shards.length, m.total_samples, rows);
  }

  private check(): void {
    if (this.finished) throw new StoreError(`${this.dir}: writer already finished`);
  }
}
