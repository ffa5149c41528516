// One shard file of a hidden-state store: samples encoded as rows (floats in the store dtype) and written
// as an Arrow IPC file under a temporary name, fsynced and renamed, so a shard file under its final name
// is always complete. The file's schema metadata describes it (first sample, record-batch rows, tokens,
// sample-id hash, checksums; see schema.ts), which lets ranks that write shards side by side be merged by
// rank 0. A write that fails (a full disk) leaves no file behind and is one error naming the shard.
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { threadId } from 'node:worker_threads';
import {
  Field,
  Int32,
  List,
  makeData,
  RecordBatch,
  RecordBatchFileWriter,
  Struct,
  Uint8,
  Utf8,
  type Data,
  type DataType,
} from 'apache-arrow';
import { f32ToF16 } from '../io/dtypes.ts';
import { crc32, hex32, rowCrc32, type RowParts, shardCrc32 } from './checksum.ts';
import { shardFileName, type ShardEntry, type StoreMeta, StoreError } from './manifest.ts';
import {
  floatType,
  META_BATCH_ROWS,
  META_COLUMN_CRC32,
  META_CRC32,
  META_FIRST_SAMPLE,
  META_IDS_SHA256,
  META_ROW_CRC32,
  META_SCHEMA_VERSION,
  META_TOKENS,
  SCHEMA_VERSION,
  storeSchema,
  type FeatureSample,
  type StoreDtype,
} from './schema.ts';

/** The meta a writer is opened with; schema_version, created_by and dtype (float16) have defaults. */
export type StoreMetaInput = Omit<StoreMeta, 'schema_version' | 'created_by' | 'dtype'> & {
  schema_version?: number;
  created_by?: 'specforge';
  dtype?: StoreDtype;
};

export function resolveMeta(m: StoreMetaInput): StoreMeta {
  return { ...m, schema_version: m.schema_version ?? SCHEMA_VERSION, created_by: m.created_by ?? 'specforge', dtype: m.dtype ?? 'float16' };
}

/** A sample encoded for its row: copies of the caller's arrays, floats already in the store dtype. */
export interface EncodedRow {
  id: Uint8Array;
  inputIds: Int32Array;
  lossMask: Uint8Array;
  aux: Uint16Array | Float32Array;
  finalHidden: Uint16Array | Float32Array;
  thinkSpans: Int32Array;
  answerPositions: Int32Array;
  answer: Uint8Array;
  bytes: number;
  /** The row's checksum (rowCrc32 of rowParts). */
  crc: number;
}

const utf8 = new TextEncoder();

/**
 * The float column in the store dtype. A NaN or infinity, or a finite value beyond float16's range (it
 * would be stored as infinity), is an error: a store holds only finite features.
 */
function storedFloats(x: Float32Array, dtype: StoreDtype, column: string, T: number): Uint16Array | Float32Array {
  const bad = (i: number): never => {
    const why = Number.isFinite(x[i]) ? `${x[i]} overflows float16 (largest 65504); capture with capture.dtype: float32` : `${x[i]}`;
    throw new Error(`${column} value at token ${Math.floor(i / (x.length / T))} is ${why}`);
  };
  if (dtype === 'float32') {
    for (let i = 0; i < x.length; i++) if (!Number.isFinite(x[i])) bad(i);
    return Float32Array.from(x);
  }
  const out = new Uint16Array(x.length);
  for (let i = 0; i < x.length; i++) {
    const h = f32ToF16(x[i]);
    if ((h & 0x7c00) === 0x7c00) bad(i); // exponent all ones: infinity or NaN
    out[i] = h;
  }
  return out;
}

type Typed = Int32Array | Uint8Array | Uint16Array | Float32Array;

function concat<A extends Typed>(parts: A[], Ctor: { new (n: number): A }): [A, Int32Array] {
  const offsets = new Int32Array(parts.length + 1);
  for (let i = 0; i < parts.length; i++) offsets[i + 1] = offsets[i] + parts[i].length;
  const out = new Ctor(offsets[parts.length]);
  for (let i = 0; i < parts.length; i++) out.set(parts[i] as never, offsets[i]);
  return [out, offsets];
}

/** One column of a record batch: a Utf8 column, or a List of `type`. */
function column(type: DataType, parts: Typed[], Ctor: { new (n: number): Typed }): Data {
  const [values, valueOffsets] = concat(parts, Ctor);
  if (type instanceof Utf8) return makeData({ type, length: parts.length, nullCount: 0, valueOffsets, data: values as Uint8Array });
  const child = makeData({ type, length: values.length, nullCount: 0, data: values } as never);
  return makeData({ type: new List(new Field('item', type, false)), length: parts.length, nullCount: 0, valueOffsets, child });
}

/**
 * The checksums of a record batch's column chunks in schema order: each column's offsets, then its values
 * (what the reader sees), summed part by part so the batch need not be built for it.
 */
function columnCrcs(rows: EncodedRow[]): number[] {
  const parts = rows.map(rowParts);
  return parts[0].map((_, c) => {
    const offsets = new Int32Array(rows.length + 1);
    for (let i = 0; i < rows.length; i++) {
      const p = parts[i][c];
      offsets[i + 1] = offsets[i] + p.byteLength / (p as Typed).BYTES_PER_ELEMENT;
    }
    return crc32(
      parts.map((p) => p[c]),
      crc32([offsets]),
    );
  });
}

/** The row's columns in schema order, as stored (what its checksum covers). */
export function rowParts(r: EncodedRow): RowParts {
  return [r.id, r.inputIds, r.lossMask, r.aux, r.finalHidden, r.thinkSpans, r.answerPositions, r.answer];
}

/** A sample encoded for its row (arrays copied, floats converted to the store dtype), with its checksum. */
export function encodeRow(s: FeatureSample, dtype: StoreDtype): EncodedRow {
  const T = s.inputIds.length;
  const row: EncodedRow = {
    id: utf8.encode(s.id),
    inputIds: Int32Array.from(s.inputIds),
    lossMask: Uint8Array.from(s.lossMask),
    aux: storedFloats(s.aux, dtype, 'aux_hidden', T),
    finalHidden: storedFloats(s.finalHidden, dtype, 'final_hidden', T),
    thinkSpans: Int32Array.from(s.thinkSpans),
    answerPositions: Int32Array.from(s.answerPositions),
    answer: utf8.encode(s.answer),
    bytes: 0,
    crc: 0,
  };
  const parts = rowParts(row);
  row.bytes = parts.reduce((a, p) => a + p.byteLength, 0);
  row.crc = rowCrc32(parts);
  return row;
}

function recordBatch(rows: EncodedRow[], schema: ReturnType<typeof storeSchema>, dtype: StoreDtype): RecordBatch {
  const FloatArray = dtype === 'float16' ? Uint16Array : Float32Array;
  const columns = [
    column(
      new Utf8(),
      rows.map((r) => r.id),
      Uint8Array,
    ),
    column(
      new Int32(),
      rows.map((r) => r.inputIds),
      Int32Array,
    ),
    column(
      new Uint8(),
      rows.map((r) => r.lossMask),
      Uint8Array,
    ),
    column(
      floatType(dtype),
      rows.map((r) => r.aux),
      FloatArray,
    ),
    column(
      floatType(dtype),
      rows.map((r) => r.finalHidden),
      FloatArray,
    ),
    column(
      new Int32(),
      rows.map((r) => r.thinkSpans),
      Int32Array,
    ),
    column(
      new Int32(),
      rows.map((r) => r.answerPositions),
      Int32Array,
    ),
    column(
      new Utf8(),
      rows.map((r) => r.answer),
      Uint8Array,
    ),
  ];
  const data = makeData({ type: new Struct(schema.fields), length: rows.length, nullCount: 0, children: columns });
  return new RecordBatch(schema, data);
}

/** sha256 of sample ids joined by newlines (a shard's `specforge.sample_ids_sha256`). */
export function idsSha256(ids: string[]): string {
  return crypto.createHash('sha256').update(ids.join('\n')).digest('hex');
}

/**
 * Writes shard `index` (its rows are samples firstSample, firstSample + 1, ... of the store) as one Arrow
 * IPC file: under a temporary name, fsynced, then renamed, so a shard file under its final name is
 * always complete. Returns its manifest entry.
 */
export async function writeShardFile(
  dir: string,
  index: number,
  firstSample: number,
  rows: EncodedRow[],
  dtype: StoreDtype,
  recordBatchBytes = 1 << 20,
): Promise<ShardEntry> {
  // Group rows into record batches of about recordBatchBytes: a random read fetches one record batch, not a shard.
  const groups: EncodedRow[][] = [];
  let cur: EncodedRow[] = [];
  let curBytes = 0;
  for (const r of rows) {
    if (cur.length && curBytes + r.bytes > recordBatchBytes) {
      groups.push(cur);
      cur = [];
      curBytes = 0;
    }
    cur.push(r);
    curBytes += r.bytes;
  }
  groups.push(cur);
  const tokens = rows.reduce((a, r) => a + r.inputIds.length, 0);
  const utf8d = new TextDecoder();
  const rowSums = rows.map((r) => hex32(r.crc)).join(',');
  const columnSums = groups.map((g) => columnCrcs(g).map(hex32).join(',')).join(';');
  const crc = shardCrc32(columnSums, rowSums);
  const schema = storeSchema(
    dtype,
    new Map([
      [META_SCHEMA_VERSION, String(SCHEMA_VERSION)],
      [META_BATCH_ROWS, groups.map((g) => g.length).join(',')],
      [META_FIRST_SAMPLE, String(firstSample)],
      [META_TOKENS, String(tokens)],
      [META_IDS_SHA256, idsSha256(rows.map((r) => utf8d.decode(r.id)))],
      [META_ROW_CRC32, rowSums],
      [META_COLUMN_CRC32, columnSums],
      [META_CRC32, crc],
    ]),
  );

  const name = shardFileName(index);
  const file = path.join(dir, name);
  const tmp = `${file}.${process.pid}.${threadId}.tmp`;
  let fd: number | null = null;
  let bytes = 0;
  const writer = new RecordBatchFileWriter();
  try {
    fd = fs.openSync(tmp, 'w');
    const out = fd;
    writer.reset(undefined, schema);
    // Drain the writer's byte queue into the file as it fills, so the shard never sits in memory twice.
    // A failed write (a full disk) is the error reported; until it is awaited below it must not be an
    // unhandled rejection, and the writer's own complaint about its closed queue must not replace it.
    let failed: Error | null = null;
    const pump = (async () => {
      for await (const chunk of writer) {
        fs.writeSync(out, chunk);
        bytes += chunk.byteLength;
      }
    })();
    pump.catch((e: Error) => {
      failed = e;
    });
    try {
      for (const g of groups) {
        if (failed) break;
        writer.write(recordBatch(g, schema, dtype));
        await new Promise((r) => setImmediate(r));
      }
      writer.finish();
    } catch (e) {
      await pump.catch(() => {});
      throw failed ?? e;
    }
    await pump;
    fs.fsyncSync(out);
    fs.closeSync(out);
    fd = null;
    fs.renameSync(tmp, file);
  } catch (e) {
    try {
      writer.abort();
    } catch {
      // the writer may already be finished or closed by the failed pump
    }
    if (fd !== null) fs.closeSync(fd);
    fs.rmSync(tmp, { force: true });
    throw new StoreError(`${file}: cannot write shard (${(e as Error).message})`);
  }
  fsyncDir(dir);
  return { file: name, samples: rows.length, tokens, bytes, first_sample: firstSample, crc32: crc };
}

export function removeTemps(dir: string): void {
  for (const f of fs.readdirSync(dir)) if (f.endsWith('.tmp')) fs.rmSync(path.join(dir, f), { force: true });
}

export function fsyncDir(dir: string): void {
  try {
    const fd = fs.openSync(dir, 'r');
    try {
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
  } catch {
    // not supported on every platform; the rename is still atomic
  }
}
