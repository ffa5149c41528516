// One shard file of a hidden-state store: samples encoded as rows (floats in the store dtype) and written
// as an Arrow IPC file under a temporary name, fsynced and renamed, so a shard file under its final name
// is always complete. The file's schema metadata describes it (first sample, record-batch rows, tokens,
// sample-id hash; see schema.ts), which lets ranks that write shards side by side be merged by rank 0.
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
import { shardFileName, type ShardEntry, type StoreMeta } from './manifest.ts';
import {
  floatType,
  META_BATCH_ROWS,
  META_FIRST_SAMPLE,
  META_IDS_SHA256,
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
}

const utf8 = new TextEncoder();

function toF16(x: Float32Array): Uint16Array {
  const out = new Uint16Array(x.length);
  for (let i = 0; i < x.length; i++) out[i] = f32ToF16(x[i]);
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

function listData(item: DataType, parts: Typed[], Ctor: { new (n: number): Typed }): Data {
  const [values, valueOffsets] = concat(parts, Ctor);
  const child = makeData({ type: item, length: values.length, nullCount: 0, data: values } as never);
  const type = new List(new Field('item', item, false));
  return makeData({ type, length: parts.length, nullCount: 0, valueOffsets, child });
}

function utf8Data(parts: Uint8Array[]): Data {
  const [data, valueOffsets] = concat(parts, Uint8Array);
  return makeData({ type: new Utf8(), length: parts.length, nullCount: 0, valueOffsets, data });
}

/** A sample encoded for its row (arrays copied, floats converted to the store dtype). */
export function encodeRow(s: FeatureSample, dtype: StoreDtype): EncodedRow {
  const f16 = dtype === 'float16';
  const row: EncodedRow = {
    id: utf8.encode(s.id),
    inputIds: Int32Array.from(s.inputIds),
    lossMask: Uint8Array.from(s.lossMask),
    aux: f16 ? toF16(s.aux) : Float32Array.from(s.aux),
    finalHidden: f16 ? toF16(s.finalHidden) : Float32Array.from(s.finalHidden),
    thinkSpans: Int32Array.from(s.thinkSpans),
    answerPositions: Int32Array.from(s.answerPositions),
    answer: utf8.encode(s.answer),
    bytes: 0,
  };
  row.bytes =
    row.id.byteLength +
    row.inputIds.byteLength +
    row.lossMask.byteLength +
    row.aux.byteLength +
    row.finalHidden.byteLength +
    row.thinkSpans.byteLength +
    row.answerPositions.byteLength +
    row.answer.byteLength;
  return row;
}

function recordBatch(rows: EncodedRow[], schema: ReturnType<typeof storeSchema>, dtype: StoreDtype): RecordBatch {
  const FloatArray = dtype === 'float16' ? Uint16Array : Float32Array;
  const children = [
    utf8Data(rows.map((r) => r.id)),
    listData(
      new Int32(),
      rows.map((r) => r.inputIds),
      Int32Array,
    ),
    listData(
      new Uint8(),
      rows.map((r) => r.lossMask),
      Uint8Array,
    ),
    listData(
      floatType(dtype),
      rows.map((r) => r.aux),
      FloatArray,
    ),
    listData(
      floatType(dtype),
      rows.map((r) => r.finalHidden),
      FloatArray,
    ),
    listData(
      new Int32(),
      rows.map((r) => r.thinkSpans),
      Int32Array,
    ),
    listData(
      new Int32(),
      rows.map((r) => r.answerPositions),
      Int32Array,
    ),
    utf8Data(rows.map((r) => r.answer)),
  ];
  const data = makeData({ type: new Struct(schema.fields), length: rows.length, nullCount: 0, children });
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
  const schema = storeSchema(
    dtype,
    new Map([
      [META_SCHEMA_VERSION, String(SCHEMA_VERSION)],
      [META_BATCH_ROWS, groups.map((g) => g.length).join(',')],
      [META_FIRST_SAMPLE, String(firstSample)],
      [META_TOKENS, String(tokens)],
      [META_IDS_SHA256, idsSha256(rows.map((r) => utf8d.decode(r.id)))],
    ]),
  );

  const name = shardFileName(index);
  const file = path.join(dir, name);
  const tmp = `${file}.${process.pid}.${threadId}.tmp`;
  const fd = fs.openSync(tmp, 'w');
  let bytes = 0;
  const writer = new RecordBatchFileWriter();
  try {
    writer.reset(undefined, schema);
    // Drain the writer's byte queue into the file as it fills, so the shard never sits in memory twice.
    const pump = (async () => {
      for await (const chunk of writer) {
        fs.writeSync(fd, chunk);
        bytes += chunk.byteLength;
      }
    })();
    for (const g of groups) {
      writer.write(recordBatch(g, schema, dtype));
      await new Promise((r) => setImmediate(r));
    }
    writer.finish();
    await pump;
    fs.fsyncSync(fd);
  } catch (e) {
    writer.abort();
    fs.closeSync(fd);
    fs.rmSync(tmp, { force: true });
    throw e;
  }
  fs.closeSync(fd);
  fs.renameSync(tmp, file);
  fsyncDir(dir);
  return { file: name, samples: rows.length, tokens, bytes, first_sample: firstSample };
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
