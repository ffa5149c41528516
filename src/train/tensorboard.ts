// TensorBoard event files of a run's metrics (<run>/tensorboard/events.out.tfevents.*), written by hand:
// npm has no maintained writer of the format, and the part TensorBoard's scalars need is small.
//
// The format (TensorFlow's tensorflow/core/util/event.proto and summary.proto, read by TensorBoard):
// - a file is a sequence of TFRecords: uint64 length (little-endian), uint32 masked CRC-32C of those 8
//   bytes, the data, uint32 masked CRC-32C of the data; mask(c) = ((c >>> 15) | (c << 17)) + 0xa282ead8;
// - each record is one Event protobuf: wall_time (field 1, double), step (2, int64), and either
//   file_version (3, string; the first event of a file, "brain.Event:2") or summary (5, Summary);
// - Summary is repeated value (1, Value); a scalar Value is tag (1, string) and simple_value (2, float).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { markFailedFile, writeAtomic } from '../io/atomic.ts';

export const FILE_VERSION = 'brain.Event:2';
/** What TensorBoard looks for in a file name to read it as an event file. */
export const EVENT_FILE_MARK = 'tfevents';

/** One metrics.jsonl row: its split ('train', 'eval'), the optimizer step, and the values. */
export type MetricRow = { split: string; step: number; time?: number } & Record<string, unknown>;

export interface Scalar {
  tag: string;
  value: number;
}

// CRC-32C (Castagnoli, reflected polynomial 0x82f63b78), byte-wise with a table.
const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0x82f63b78 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

export function crc32c(data: Uint8Array): number {
  let c = 0xffffffff;
  for (let i = 0; i < data.length; i++) c = CRC_TABLE[(c ^ data[i]) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

/** TFRecord's masked CRC: a CRC stored beside data that holds CRCs must not look like one. */
export function maskedCrc32c(data: Uint8Array): number {
  const c = crc32c(data);
  return ((((c >>> 15) | (c << 17)) >>> 0) + 0xa282ead8) >>> 0;
}

/** One TFRecord around `data`. */
export function frameRecord(data: Uint8Array): Buffer {
  const out = Buffer.alloc(8 + 4 + data.length + 4);
  out.writeBigUInt64LE(BigInt(data.length), 0);
  out.writeUInt32LE(maskedCrc32c(out.subarray(0, 8)), 8);
  out.set(data, 12);
  out.writeUInt32LE(maskedCrc32c(data), 12 + data.length);
  return out;
}

// Protobuf wire format: a key is (field << 3) | wire type; 0 varint, 1 64-bit, 2 length-delimited, 5 32-bit.
function varint(n: number): number[] {
  if (!Number.isSafeInteger(n) || n < 0) throw new Error(`tensorboard: ${n} is not a non-negative integer`);
  const out: number[] = [];
  while (n >= 0x80) {
    out.push((n % 0x80) | 0x80);
    n = Math.floor(n / 0x80);
  }
  out.push(n);
  return out;
}

const key = (field: number, wire: number) => varint((field << 3) | wire);

function bytesField(field: number, data: Uint8Array): Buffer {
  return Buffer.concat([Buffer.from([...key(field, 2), ...varint(data.length)]), data]);
}

function scalarValue(s: Scalar): Buffer {
  const value = Buffer.alloc(4);
  value.writeFloatLE(s.value, 0);
  return Buffer.concat([bytesField(1, Buffer.from(s.tag, 'utf8')), Buffer.from(key(2, 5)), value]);
}

/** One Event: the file version, or a summary of scalars, at a wall time (seconds since 1970) and a step. */
export function encodeEvent(e: { wallTime: number; step: number; fileVersion?: string; scalars?: Scalar[] }): Buffer {
  const time = Buffer.alloc(8);
  time.writeDoubleLE(e.wallTime, 0);
  const parts: Uint8Array[] = [Buffer.from(key(1, 1)), time];
  // proto3 leaves a zero step out, as TensorFlow's own writer does.
  if (e.step !== 0) parts.push(Buffer.from([...key(2, 0), ...varint(e.step)]));
  if (e.fileVersion !== undefined) parts.push(bytesField(3, Buffer.from(e.fileVersion, 'utf8')));
  if (e.scalars) parts.push(bytesField(5, Buffer.concat(e.scalars.map((s) => bytesField(1, scalarValue(s))))));
  return Buffer.concat(parts);
}

/** Keys of a row that place it rather than measure something. */
const PLACEMENT = new Set(['split', 'step', 'time']);

/**
 * Every number a metrics row holds, tagged by split: `train/lr`, `train/loss_0` (list items get their
 * index), `eval/specexit/confidence_auc` (nested objects their key). null (a metric with nothing to
 * measure at this step) is left out.
 */
export function rowScalars(row: MetricRow): Scalar[] {
  const out: Scalar[] = [];
  const walk = (tag: string, v: unknown) => {
    if (typeof v === 'number') out.push({ tag, value: v });
    else if (Array.isArray(v)) v.forEach((x, i) => walk(`${tag}_${i}`, x));
    else if (v !== null && typeof v === 'object') for (const [k, x] of Object.entries(v)) walk(`${tag}/${k}`, x);
  };
  for (const [k, v] of Object.entries(row)) if (!PLACEMENT.has(k)) walk(`${row.split}/${k}`, v);
  return out;
}

/** The records one metrics row becomes: one Event with every scalar of the row. */
function rowRecord(row: MetricRow, now: number): Buffer {
  return frameRecord(encodeEvent({ wallTime: row.time ?? now, step: row.step, scalars: rowScalars(row) }));
}

/** The event files in `dir` (TensorBoard reads every file whose name holds "tfevents"). */
export function eventFiles(dir: string): string[] {
  if (!fs.existsSync(dir)) return [];
  return fs
    .readdirSync(dir)
    .filter((f) => f.includes(EVENT_FILE_MARK) && !f.endsWith('.tmp'))
    .sort()
    .map((f) => path.join(dir, f));
}

/**
 * The run's event file. A run (fresh or resumed) starts one file holding the rows it continues from and
 * deletes the files before it, so that the folder never holds a step twice; then each row is appended as
 * it is logged (TensorBoard reads a file as it grows).
 */
export class EventFileWriter {
  private constructor(readonly file: string) {}

  /** Replaces the event files in `dir` by one that holds `rows`. */
  static start(dir: string, rows: MetricRow[]): EventFileWriter {
    const old = eventFiles(dir);
    const now = Date.now() / 1000;
    // TensorFlow's name: events.out.tfevents.<seconds>.<host>; the pid keeps two runs' names apart.
    const file = path.join(dir, `events.out.${EVENT_FILE_MARK}.${Math.floor(now)}.${os.hostname()}.${process.pid}`);
    const first = frameRecord(encodeEvent({ wallTime: now, step: 0, fileVersion: FILE_VERSION }));
    writeAtomic(file, [first, ...rows.map((r) => rowRecord(r, now))]);
    for (const f of old) if (f !== file) fs.rmSync(f, { force: true });
    return new EventFileWriter(file);
  }

  /** Appends one row; one write per row, so a crash can tear at most the last record (a resume rewrites it). */
  append(row: MetricRow): void {
    try {
      fs.appendFileSync(this.file, rowRecord(row, Date.now() / 1000));
    } catch (e) {
      throw markFailedFile(e, this.file);
    }
  }
}
