// RankStoreWriter: several ranks write the shards of one store side by side. Which shard holds which
// samples is the caller's plan (capture: shard j = samples [jS, (j+1)S) of the data set, written by rank
// j mod N; online training: each rank's first-epoch sequence); a rank writes a shard as one self-describing
// file (temporary name, fsync, rename, see writeShardFile), and rank 0 alone writes manifest.json: after
// each of its shards it lists the longest run of finished shards from shard 0, and at the end, once every
// rank is done, it lists them all and marks the store complete. A shard file under its final name is
// finished, so an interrupted run resumes by skipping the files that exist, whichever rank wrote them.
import fs from 'node:fs';
import path from 'node:path';
import {
  extendsLimit,
  MANIFEST_FILE,
  metaMismatches,
  readManifest,
  shardFileName,
  StoreError,
  validateManifest,
  writeManifest,
  type ShardEntry,
  type StoreManifest,
  type StoreMeta,
} from './manifest.ts';
import { readShardInfo, type ShardInfo } from './shard-info.ts';
import { sampleShapeError, sampleValueError, type FeatureSample } from './schema.ts';
import { type EncodedRow, encodeRow, idsSha256, removeTemps, resolveMeta, type StoreMetaInput, writeShardFile } from './shard-file.ts';

export interface RankStoreWriterOptions {
  /**
   * Rank 0 may reopen a complete store whose meta differs only in a larger source.limit (capture after
   * capture.limit was raised): its full shards are kept and the samples after them are captured.
   */
  extend?: boolean;
  /**
   * Soft cap on one record batch's body (a batch holds at least one sample); default 1 MiB. A random read
   * fetches a whole record batch, so small batches keep shuffled reads cheap; the per-batch overhead is
   * a few hundred bytes.
   */
  recordBatchBytes?: number;
}

export class RankStoreWriter {
  private readonly infos = new Map<string, ShardInfo>();

  private constructor(
    readonly dir: string,
    readonly rank: number,
    private manifest: StoreManifest,
    private readonly recordBatchBytes: number,
  ) {}

  /**
   * Rank 0 calls this first (it creates the store, or reopens an incomplete one whose meta matches, and
   * clears temporary files); the other ranks after it, when they only check the meta. A complete store
   * or a meta mismatch is an error.
   */
  static async open(dir: string, metaIn: StoreMetaInput, rank: number, opts: RankStoreWriterOptions = {}): Promise<RankStoreWriter> {
    const meta: StoreMeta = resolveMeta(metaIn);
    const recordBatchBytes = opts.recordBatchBytes ?? 1 << 20;
    const fresh: StoreManifest = { ...meta, shards: [], total_samples: 0, total_tokens: 0, complete: false };
    const manifestPath = path.join(dir, MANIFEST_FILE);
    validateManifest(JSON.parse(JSON.stringify(fresh)), `${manifestPath} (new store meta)`);
    if (!fs.existsSync(manifestPath)) {
      if (rank !== 0) throw new StoreError(`${manifestPath}: missing (rank 0 creates it before the other ranks start)`);
      if (fs.existsSync(dir)) {
        const foreign = fs.readdirSync(dir).filter((f) => !f.endsWith('.tmp'));
        if (foreign.length)
          throw new StoreError(
            `${dir}: not empty and has no ${MANIFEST_FILE}; refusing to create a store there (found ${foreign.slice(0, 3).join(', ')})`,
          );
      }
      fs.mkdirSync(dir, { recursive: true });
      removeTemps(dir);
      writeManifest(dir, fresh);
      return new RankStoreWriter(dir, rank, fresh, recordBatchBytes);
    }
    let existing = readManifest(dir);
    if (existing.complete && rank === 0 && opts.extend && extendsLimit(existing, meta)) existing = reopenToExtend(dir, existing, meta);
    const bad = metaMismatches(existing, meta);
    if (existing.complete && bad.length === 0)
      throw new StoreError(
        `${manifestPath}: the store is already complete (${existing.total_samples} samples); delete it or write elsewhere`,
      );
    if (bad.length)
      throw new StoreError(
        `${manifestPath}: cannot ${existing.complete ? 'add to' : 'resume'} the existing store, it was captured with different settings ` +
          `(delete it or set another data.store to capture anew):\n  ${bad.join('\n  ')}`,
      );
    for (const e of existing.shards) {
      const file = path.join(dir, e.file);
      const size = fs.existsSync(file) ? fs.statSync(file).size : -1;
      if (size < 0) throw new StoreError(`${file}: listed in ${MANIFEST_FILE} but missing; cannot resume`);
      if (size !== e.bytes) throw new StoreError(`${file}: ${size} bytes, ${MANIFEST_FILE} says ${e.bytes}; cannot resume`);
    }
    const w = new RankStoreWriter(dir, rank, existing, recordBatchBytes);
    if (rank === 0) {
      removeTemps(dir);
      await w.refresh(); // also lists finished shards whose manifest update a crash lost
    }
    return w;
  }

  get current(): StoreManifest {
    return structuredClone(this.manifest);
  }

  /**
   * The finished shard `index` when its file exists and holds what the plan puts there (first sample,
   * sample count, and the sample ids when given); null when it must be written. A file that holds
   * something else (another plan or data) is an error: the store folder is shared with another run.
   */
  async finished(index: number, firstSample: number, samples: number, ids?: string[]): Promise<ShardInfo | null> {
    const info = await this.info(index);
    if (!info) return null;
    const file = path.join(this.dir, shardFileName(index));
    if (info.firstSample !== firstSample || info.samples !== samples || (ids && info.idsSha256 !== idsSha256(ids)))
      throw new StoreError(
        `${file}: holds ${info.samples} samples from sample ${info.firstSample}, but this run puts ${samples} samples from sample ${firstSample}${ids ? ' (with these ids)' : ''} there; ` +
          `the store was written by another run (other data, seed or workers): delete it or use another data.store`,
      );
    return info;
  }

  /** A sample checked against the store's shapes, vocabulary and float range, and encoded in its dtype (a shard's rows wait in this form). */
  encode(sample: FeatureSample, position: number): EncodedRow {
    const m = this.manifest;
    const fail = (msg: string) => new StoreError(`sample ${JSON.stringify(sample.id)} (#${position}): ${msg}`);
    const err =
      sampleShapeError(sample, m.target.hidden_size, m.aux_layer_ids.length, m.max_length) ?? sampleValueError(sample, m.target.vocab_size);
    if (err) throw fail(err);
    try {
      return encodeRow(sample, m.dtype);
    } catch (e) {
      throw fail((e as Error).message); // a feature that is not finite, or beyond float16
    }
  }

  /**
   * Writes shard `index` from encoded rows; rank 0 then lists the finished shards in the manifest. A failed
   * write (a full disk) is one error naming the file and what the store keeps.
   */
  async write(index: number, firstSample: number, rows: EncodedRow[]): Promise<ShardEntry> {
    const m = this.manifest;
    if (rows.length === 0 || rows.length > m.samples_per_shard)
      throw new StoreError(`shard ${index}: ${rows.length} samples; a shard holds 1 to ${m.samples_per_shard}`);
    try {
      const entry = await writeShardFile(this.dir, index, firstSample, rows, m.dtype, this.recordBatchBytes);
      if (this.rank === 0) await this.refresh();
      return entry;
    } catch (e) {
      throw new StoreError(`${(e as Error).message}; ${this.kept()}`);
    }
  }

  /** What the store keeps after a failed write: the finished shards its manifest lists, which a rerun resumes from. */
  private kept(): string {
    let m: StoreManifest;
    try {
      m = readManifest(this.dir); // other ranks' view of the manifest is not kept up to date
    } catch {
      m = this.manifest;
    }
    return `${this.dir} keeps the ${m.shards.length} finished shards (${m.total_samples} samples) that its ${MANIFEST_FILE} lists; rerun to resume from them`;
  }

  /** Rank 0: lists the longest run of finished shards from shard 0 (complete: false). */
  async refresh(): Promise<StoreManifest> {
    const shards: ShardEntry[] = [];
    let samples = 0;
    let tokens = 0;
    for (let i = 0; ; i++) {
      const info = await this.info(i);
      if (!info || info.firstSample !== samples) break;
      shards.push({
        file: shardFileName(i),
        samples: info.samples,
        tokens: info.tokens,
        bytes: info.bytes,
        first_sample: info.firstSample,
        crc32: info.crc32,
      });
      samples += info.samples;
      tokens += info.tokens;
    }
    this.manifest = { ...this.manifest, shards, total_samples: samples, total_tokens: tokens, complete: false };
    writeManifest(this.dir, this.manifest);
    return this.current;
  }

  /** Rank 0, once every rank has written its shards: the store is complete when shards 0..count-1 hold `totalSamples`. */
  async finish(count: number, totalSamples: number): Promise<StoreManifest> {
    if (this.rank !== 0) throw new StoreError(`${this.dir}: only rank 0 finishes the store`);
    const m = await this.refresh();
    if (m.shards.length !== count || m.total_samples !== totalSamples)
      throw new StoreError(
        `${this.dir}: expected ${count} shards with ${totalSamples} samples, found ${m.shards.length} finished shards with ${m.total_samples} samples in a row`,
      );
    this.manifest = { ...m, complete: true };
    writeManifest(this.dir, this.manifest);
    return this.current;
  }

  /** What the file of shard `index` says about itself, or null when it does not exist. */
  async info(index: number): Promise<ShardInfo | null> {
    const name = shardFileName(index);
    const file = path.join(this.dir, name);
    let size: number;
    try {
      size = fs.statSync(file).size;
    } catch {
      return null;
    }
    const cached = this.infos.get(name);
    if (cached && cached.bytes === size) return cached;
    const info = await readShardInfo(file);
    this.infos.set(name, info);
    return info;
  }
}

/**
 * Rank 0 reopens a complete store for a larger capture.limit: the manifest takes the new meta and drops a
 * last partial shard (recaptured with the samples after it), and then that shard's file goes. The
 * manifest is written first, so it never lists a shard that is gone; the store is now an incomplete
 * capture of the new selection, resumable as any.
 */
function reopenToExtend(dir: string, m: StoreManifest, meta: StoreMeta): StoreManifest {
  const last = m.shards[m.shards.length - 1];
  const partial = last !== undefined && last.samples < meta.samples_per_shard;
  const shards = partial ? m.shards.slice(0, -1) : m.shards;
  const reopened: StoreManifest = {
    ...meta,
    shards,
    total_samples: shards.reduce((a, s) => a + s.samples, 0),
    total_tokens: shards.reduce((a, s) => a + s.tokens, 0),
    complete: false,
  };
  writeManifest(dir, reopened);
  if (partial) fs.rmSync(path.join(dir, last.file), { force: true });
  return reopened;
}
