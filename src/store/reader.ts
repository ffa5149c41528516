// ArrowStore: the offline hidden-state store read back for training. Shards are opened lazily with
// apache-arrow's async file reader over a file handle, and record batches are read on demand from the
// footer's block index; reads on one shard are serialized (the reader seeks a shared file position).
// Every row read is checked against its checksum, and its token ids against the vocabulary, before it
// is decoded (a few GB/s: nothing next to a training step); verify() checks everything in one pass.
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { RecordBatchReader, type AsyncRecordBatchFileReader, type Data, type RecordBatch } from 'apache-arrow';
import { f16ToF32 } from '../io/dtypes.ts';
import type { BatchOptions, FeatureSource } from './feature-source.ts';
import {
  checkCompatible,
  MANIFEST_FILE,
  readManifest,
  StoreError,
  type ShardEntry,
  type StoreExpectation,
  type StoreManifest,
} from './manifest.ts';
import { balancedShares, epochPlan, readAhead } from './sampler.ts';
import { chunkCrc32, hex32, parseHexList, rowCrc32, shardCrc32 } from './checksum.ts';
import {
  COLUMNS,
  META_BATCH_ROWS,
  META_COLUMN_CRC32,
  META_CRC32,
  META_FIRST_SAMPLE,
  META_ROW_CRC32,
  sampleShapeError,
  sampleValueError,
  schemaDifference,
  type FeatureSample,
} from './schema.ts';
import { batchRows } from './shard-info.ts';

export interface ArrowStoreOptions {
  /** Read a store whose capture has not finished (only its finished shards). */
  allowIncomplete?: boolean;
  /** Shard files kept open at once (idle ones beyond this are closed); default 32. */
  maxOpenShards?: number;
  /** Decoded record batches kept in memory; default 4. */
  cachedBatches?: number;
}

const MAGIC = Buffer.from('ARROW1');

let f16Table: Float32Array | null = null;
function widenF16(bits: Uint16Array): Float32Array {
  if (!f16Table) {
    f16Table = new Float32Array(65536);
    for (let h = 0; h < 65536; h++) f16Table[h] = f16ToF32(h);
  }
  const t = f16Table;
  const out = new Float32Array(bits.length);
  for (let i = 0; i < bits.length; i++) out[i] = t[bits[i]];
  return out;
}

const utf8 = new TextDecoder('utf-8', { fatal: true });
const lenient = new TextDecoder('utf-8');
const SHARD_FILE = /^shard-\d{5,}\.arrow$/;

/** [start, end) of row `row` in a list or utf8 column, and the child values. */
function span(d: Data, row: number): [number, number] {
  const o = d.valueOffsets as Int32Array;
  return [o[row], o[row + 1]];
}

function listValues<A extends Int32Array | Uint8Array | Uint16Array | Float32Array>(d: Data, row: number): A {
  const [s, e] = span(d, row);
  const values = d.children[0].values as A;
  if (s < 0 || e < s || e > values.length) throw new Error(`list offsets [${s}, ${e}) out of range (${values.length} values)`);
  return values.subarray(s, e) as A;
}

function textBytes(d: Data, row: number): Uint8Array {
  const [s, e] = span(d, row);
  const values = d.values as Uint8Array;
  if (s < 0 || e < s || e > values.length) throw new Error(`string offsets [${s}, ${e}) out of range`);
  return values.subarray(s, e);
}

/** A row's columns as stored (the views its checksum covers), in schema order. */
function rawRow(c: Data[], row: number) {
  return [
    textBytes(c[0], row),
    listValues<Int32Array>(c[1], row),
    listValues<Uint8Array>(c[2], row),
    listValues<Uint16Array | Float32Array>(c[3], row),
    listValues<Uint16Array | Float32Array>(c[4], row),
    listValues<Int32Array>(c[5], row),
    listValues<Int32Array>(c[6], row),
    textBytes(c[7], row),
  ] as const;
}

/** A column chunk's offsets and values as read (what its checksum covers); null when its offsets are out of range. */
function chunkViews(d: Data): [Int32Array, NodeJS.ArrayBufferView] | null {
  const offsets = (d.valueOffsets as Int32Array).subarray(0, d.length + 1); // read buffers are padded to 8 bytes
  const values = (d.children.length ? d.children[0].values : d.values) as Uint8Array | Int32Array | Uint16Array | Float32Array;
  const end = offsets[offsets.length - 1];
  return end >= 0 && end <= values.length ? [offsets, values.subarray(0, end)] : null;
}

/** The first non-finite value of a float column as stored, or -1. */
function firstNonFinite(x: Uint16Array | Float32Array): number {
  if (x instanceof Uint16Array) {
    for (let i = 0; i < x.length; i++) if ((x[i] & 0x7c00) === 0x7c00) return i;
  } else {
    for (let i = 0; i < x.length; i++) if (!Number.isFinite(x[i])) return i;
  }
  return -1;
}

class Shard {
  reader: AsyncRecordBatchFileReader | null = null;
  /** Start row of each record batch, plus the total at the end. */
  batchStarts: number[] = [];
  /** Each row's checksum, and each record batch's column-chunk checksums (specforge.row_crc32, column_crc32). */
  rowCrcs: Uint32Array = new Uint32Array(0);
  columnCrcs: Uint32Array[] = [];
  queue: Promise<unknown> = Promise.resolve();
  busy = 0;
  lastUse = 0;

  constructor(
    readonly entry: ShardEntry,
    readonly index: number,
    readonly file: string,
  ) {}

  /** Runs `task` after every earlier task on this shard: the arrow reader must not see concurrent reads. */
  run<T>(task: () => Promise<T>): Promise<T> {
    this.busy++;
    const p = this.queue.then(task, task);
    this.queue = p.then(
      () => this.busy--,
      () => this.busy--,
    );
    return p;
  }
}

export class ArrowStore implements FeatureSource {
  readonly dir: string;
  readonly manifest: StoreManifest;
  readonly size: number;
  private readonly shards: Shard[];
  private readonly starts: number[];
  private readonly maxOpen: number;
  private readonly maxCached: number;
  private readonly cache = new Map<string, RecordBatch>();
  private clock = 0;
  private closed = false;

  private constructor(dir: string, manifest: StoreManifest, opts: ArrowStoreOptions) {
    this.dir = dir;
    this.manifest = manifest;
    this.size = manifest.total_samples;
    this.shards = manifest.shards.map((s, i) => new Shard(s, i, path.join(dir, s.file)));
    this.starts = manifest.shards.map((s) => s.first_sample);
    this.maxOpen = Math.max(1, opts.maxOpenShards ?? 32);
    this.maxCached = Math.max(1, opts.cachedBatches ?? 4);
  }

  /**
   * Opens a store: validates the manifest, refuses an incomplete capture unless allowed, checks it
   * against the recipe when `expected` is given, and checks every listed shard's size on disk.
   */
  static async open(dir: string, expected?: StoreExpectation | null, opts: ArrowStoreOptions = {}): Promise<ArrowStore> {
    const manifest = readManifest(dir);
    const where = path.join(dir, MANIFEST_FILE);
    if (!manifest.complete && !opts.allowIncomplete)
      throw new StoreError(
        `${where}: the store is incomplete (complete: false, ${manifest.total_samples} samples in ${manifest.shards.length} finished shards); ` +
          `resume the capture to finish it, or open with { allowIncomplete: true }`,
      );
    if (expected) checkCompatible(manifest, expected, `store ${dir}`);
    if (manifest.complete) {
      // A shard file the manifest does not list: its entry was removed (training would read a subset).
      const listed = new Set(manifest.shards.map((s) => s.file));
      const stray = fs.readdirSync(dir).filter((f) => SHARD_FILE.test(f) && !listed.has(f));
      if (stray.length)
        throw new StoreError(
          `${where}: lists ${manifest.shards.length} shards, but the store folder also holds ${stray.slice(0, 3).join(', ')}${stray.length > 3 ? ` and ${stray.length - 3} more` : ''}, ` +
            `which it does not list (an entry removed, or files of another capture); recapture the store`,
        );
    }
    for (const s of manifest.shards) {
      const file = path.join(dir, s.file);
      let size: number;
      try {
        size = (await fsp.stat(file)).size;
      } catch {
        throw new StoreError(`${file}: shard listed in ${MANIFEST_FILE} is missing`);
      }
      if (size !== s.bytes)
        throw new StoreError(
          `${file}: shard is ${size} bytes but ${MANIFEST_FILE} says ${s.bytes} (${size < s.bytes ? 'truncated' : 'replaced or appended to'})`,
        );
    }
    return new ArrowStore(dir, manifest, opts);
  }

  get hiddenSize(): number {
    return this.manifest.target.hidden_size;
  }

  async get(index: number): Promise<FeatureSample> {
    if (this.closed) throw new StoreError(`${this.dir}: store is closed`);
    if (!Number.isInteger(index) || index < 0 || index >= this.size)
      throw new RangeError(`sample index ${index} out of range [0, ${this.size})`);
    // Last shard whose first sample is <= index.
    let lo = 0;
    let hi = this.starts.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (this.starts[mid] <= index) lo = mid;
      else hi = mid - 1;
    }
    const shard = this.shards[lo];
    const local = index - shard.entry.first_sample;
    const [batch, row] = await shard.run(async () => {
      await this.ensureOpen(shard);
      shard.lastUse = ++this.clock;
      let b = 0;
      while (shard.batchStarts[b + 1] <= local) b++;
      return [await this.readBatch(shard, b), local - shard.batchStarts[b]] as const;
    });
    return this.decode(shard, batch, row, local);
  }

  async *batches(opts: BatchOptions): AsyncGenerator<FeatureSample[]> {
    const { batchSize } = opts;
    const { order, mine, batches, rank, worldSize, dropLast } = epochPlan(this.size, opts);
    const read = (indices: ArrayLike<number>) => Promise.all(Array.from(indices, (i) => this.get(i)));
    // Global batch b is positions [b*B*N, (b+1)*B*N) of the order: the samples rankSlice gives the ranks.
    const balanced = async (b: number): Promise<FeatureSample[]> => {
      const global = await read(order.subarray(b * batchSize * worldSize, (b + 1) * batchSize * worldSize));
      return balancedShares(
        global.map((s) => s.inputIds.length),
        worldSize,
      )[rank].map((k) => global[k]);
    };
    const load = (b: number): Promise<FeatureSample[]> =>
      opts.balance && dropLast && worldSize > 1 ? balanced(b) : read(mine.subarray(b * batchSize, (b + 1) * batchSize));
    yield* readAhead(opts.startBatch ?? 0, batches, load);
  }

  /** Closes every shard file (after in-flight reads finish). */
  async close(): Promise<void> {
    this.closed = true;
    this.cache.clear();
    await Promise.all(this.shards.map((s) => s.run(() => closeShard(s))));
  }

  private async ensureOpen(shard: Shard): Promise<void> {
    if (shard.reader) return;
    // Keep the number of open files bounded: close the least recently used idle shards.
    const open = this.shards.filter((s) => s.reader && s !== shard);
    if (open.length >= this.maxOpen) {
      const idle = open.filter((s) => s.busy === 0).sort((a, b) => a.lastUse - b.lastUse);
      for (const s of idle.slice(0, open.length - this.maxOpen + 1)) s.run(() => closeShard(s)).catch(() => {});
    }
    const { file, entry } = shard;
    const fail = (msg: string): never => {
      throw new StoreError(`${file}: ${msg}`);
    };
    const fh = await fsp.open(file, 'r').catch((e: Error) => fail(`cannot open shard (${e.message})`));
    try {
      const { size } = await fh.stat();
      if (size !== entry.bytes)
        fail(
          `shard is ${size} bytes but ${MANIFEST_FILE} says ${entry.bytes} (${size < entry.bytes ? 'truncated' : 'replaced or appended to'})`,
        );
      if (size < 2 * 8 + 4) fail(`${size} bytes is too short for an Arrow IPC file`);
      const head = Buffer.alloc(6);
      const tail = Buffer.alloc(6);
      await fh.read(head, 0, 6, 0);
      await fh.read(tail, 0, 6, size - 6);
      if (!head.equals(MAGIC)) fail(`not an Arrow IPC file (no ARROW1 magic at the start)`);
      if (!tail.equals(MAGIC)) fail(`Arrow IPC footer missing (no ARROW1 magic at the end): the file is truncated or was not finished`);
      let reader: AsyncRecordBatchFileReader;
      try {
        const r = await RecordBatchReader.from(fh);
        if (!r.isFile() || !r.isAsync()) fail(`not read as an Arrow IPC file`);
        reader = (await r.open({ autoDestroy: false })) as AsyncRecordBatchFileReader;
      } catch (e) {
        if (e instanceof StoreError) throw e;
        return fail(`corrupt Arrow IPC footer or schema (${(e as Error).message})`);
      }
      const diff = schemaDifference(reader.schema, this.manifest.dtype);
      if (diff) fail(`schema mismatch: ${diff}`);
      const rows =
        batchRows(reader.schema.metadata) ??
        fail(`schema metadata ${META_BATCH_ROWS} missing or invalid (${JSON.stringify(reader.schema.metadata.get(META_BATCH_ROWS))})`);
      if (rows.length !== reader.numRecordBatches)
        fail(`footer lists ${reader.numRecordBatches} record batches, schema metadata ${META_BATCH_ROWS} lists ${rows.length}`);
      const total = rows.reduce((a, b) => a + b, 0);
      if (total !== entry.samples) fail(`holds ${total} rows, ${MANIFEST_FILE} says ${entry.samples} samples`);
      const first = reader.schema.metadata.get(META_FIRST_SAMPLE);
      if (first !== undefined && Number(first) !== entry.first_sample)
        fail(`starts at sample ${first}, ${MANIFEST_FILE} says ${entry.first_sample} (shard files renamed or mixed up?)`);
      // The checksums: one per row, one per column chunk, and the shard's over both (which the manifest lists).
      const meta = reader.schema.metadata;
      const rowSums = meta.get(META_ROW_CRC32) ?? '';
      const columnSums = meta.get(META_COLUMN_CRC32) ?? '';
      const rowCrcs = parseHexList(meta.get(META_ROW_CRC32), ',');
      if (!rowCrcs || rowCrcs.length !== total)
        fail(`schema metadata ${META_ROW_CRC32} missing or invalid (expected ${total} row checksums)`);
      const columnCrcs = columnSums.split(';').map((b) => parseHexList(b, ','));
      if (columnCrcs.length !== rows.length || columnCrcs.some((c) => c?.length !== COLUMNS.length))
        fail(
          `schema metadata ${META_COLUMN_CRC32} missing or invalid (expected ${COLUMNS.length} column checksums for each of ${rows.length} record batches)`,
        );
      const crc = meta.get(META_CRC32);
      if (crc !== entry.crc32)
        fail(`checksum ${META_CRC32} is ${JSON.stringify(crc)}, ${MANIFEST_FILE} says ${entry.crc32} (the shard was replaced)`);
      if (shardCrc32(columnSums, rowSums) !== crc)
        fail(`its checksums do not add up to its ${META_CRC32} ${crc}: the schema metadata is damaged`);
      shard.rowCrcs = rowCrcs!;
      shard.columnCrcs = columnCrcs as Uint32Array[];
      shard.batchStarts = [0];
      for (const n of rows) shard.batchStarts.push(shard.batchStarts[shard.batchStarts.length - 1] + n);
      shard.reader = reader;
    } catch (e) {
      await fh.close().catch(() => {});
      throw e;
    }
  }

  private async readBatch(shard: Shard, b: number): Promise<RecordBatch> {
    const key = `${shard.index}:${b}`;
    const hit = this.cache.get(key);
    if (hit) {
      this.cache.delete(key);
      this.cache.set(key, hit);
      return hit;
    }
    let batch: RecordBatch | null;
    try {
      batch = await shard.reader!.readRecordBatch(b);
    } catch (e) {
      throw new StoreError(`${shard.file}: cannot read record batch ${b} (${(e as Error).message})`);
    }
    const want = shard.batchStarts[b + 1] - shard.batchStarts[b];
    if (!batch) throw new StoreError(`${shard.file}: record batch ${b} is missing or unreadable`);
    if (batch.numRows !== want) throw new StoreError(`${shard.file}: record batch ${b} has ${batch.numRows} rows, expected ${want}`);
    this.cache.set(key, batch);
    while (this.cache.size > this.maxCached) this.cache.delete(this.cache.keys().next().value!);
    return batch;
  }

  /**
   * Row `row` of a record batch of `shard` (row `local` of the shard), checked before it is decoded: its
   * checksum, then its shapes, token ids and loss mask. Errors name the shard and the sample.
   */
  private decode(shard: Shard, batch: RecordBatch, row: number, local: number): FeatureSample {
    const c = batch.data.children;
    const fail = (msg: string): never => {
      let id = '?';
      try {
        id = JSON.stringify(lenient.decode(textBytes(c[0], row)));
      } catch {
        // the id's own offsets are damaged
      }
      throw new StoreError(`${shard.file}: sample ${id} (#${shard.entry.first_sample + local}, row ${local} of the shard) ${msg}`);
    };
    let raw: ReturnType<typeof rawRow>;
    try {
      raw = rawRow(c, row);
    } catch (e) {
      return fail(`is corrupt: ${(e as Error).message}`);
    }
    const want = shard.rowCrcs[local];
    const got = rowCrc32(raw);
    if (got !== want) fail(`fails its checksum (CRC-32 ${hex32(got)}, recorded ${hex32(want)}): the shard is corrupt; recapture the store`);
    const f16 = this.manifest.dtype === 'float16';
    const floats = (x: Uint16Array | Float32Array): Float32Array => (f16 ? widenF16(x as Uint16Array) : (x as Float32Array).slice());
    let id: string;
    let answer: string;
    try {
      id = utf8.decode(raw[0]);
      answer = utf8.decode(raw[7]);
    } catch (e) {
      return fail(`is corrupt: ${(e as Error).message}`);
    }
    const s: FeatureSample = {
      id,
      inputIds: raw[1].slice(),
      lossMask: raw[2].slice(),
      aux: floats(raw[3]),
      finalHidden: floats(raw[4]),
      thinkSpans: raw[5].slice(),
      answerPositions: raw[6].slice(),
      answer,
    };
    const m = this.manifest;
    const err = sampleShapeError(s, m.target.hidden_size, m.aux_layer_ids.length, m.max_length) ?? sampleValueError(s, m.target.vocab_size);
    if (err) fail(err);
    return s;
  }

  /**
   * Reads every record batch of every shard and checks it all: each column chunk's and each row's checksum,
   * shapes, token ids, and that every feature is finite. Returns the problems found (the first of each
   * shard), empty when the store is sound; `onShard` hears of each shard checked.
   */
  async verify(onShard?: (done: number, total: number) => void): Promise<string[]> {
    const problems: string[] = [];
    for (const shard of this.shards) {
      try {
        await shard.run(() => this.verifyShard(shard));
      } catch (e) {
        problems.push((e as Error).message);
      }
      onShard?.(shard.index + 1, this.shards.length);
    }
    return problems;
  }

  private async verifyShard(shard: Shard): Promise<void> {
    await this.ensureOpen(shard);
    for (let b = 0; b + 1 < shard.batchStarts.length; b++) {
      let batch: RecordBatch | null;
      try {
        batch = await shard.reader!.readRecordBatch(b); // not through the cache: a full pass would only churn it
      } catch (e) {
        throw new StoreError(`${shard.file}: cannot read record batch ${b} (${(e as Error).message})`);
      }
      const rows = shard.batchStarts[b + 1] - shard.batchStarts[b];
      if (!batch || batch.numRows !== rows)
        throw new StoreError(`${shard.file}: record batch ${b} is missing or does not hold ${rows} rows`);
      const c = batch.data.children;
      for (let k = 0; k < COLUMNS.length; k++) {
        const views = chunkViews(c[k]);
        const want = shard.columnCrcs[b][k];
        const got = views ? chunkCrc32(...views) : null;
        if (got !== want)
          throw new StoreError(
            `${shard.file}: record batch ${b} (samples #${shard.entry.first_sample + shard.batchStarts[b]} to #${shard.entry.first_sample + shard.batchStarts[b + 1] - 1}), column ${COLUMNS[k]} ` +
              (got === null ? 'has offsets out of range' : `fails its checksum (CRC-32 ${hex32(got)}, recorded ${hex32(want)})`) +
              ': the shard is corrupt; recapture the store',
          );
      }
      for (let row = 0; row < rows; row++) {
        const local = shard.batchStarts[b] + row;
        const s = this.decode(shard, batch, row, local);
        const raw = rawRow(c, row);
        for (const [k, name] of [
          [3, 'aux_hidden'],
          [4, 'final_hidden'],
        ] as const) {
          const i = firstNonFinite(raw[k]);
          if (i >= 0)
            throw new StoreError(
              `${shard.file}: sample ${JSON.stringify(s.id)} (#${shard.entry.first_sample + local}) has a non-finite ${name} value at token ${Math.floor(i / (raw[k].length / s.inputIds.length))}`,
            );
        }
      }
    }
  }
}

async function closeShard(s: Shard): Promise<void> {
  const r = s.reader;
  s.reader = null;
  if (r) await r.cancel(); // closes the file handle
}
