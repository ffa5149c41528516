// An event-file reader for the tests, written from the format's definition and sharing no code with the
// writer (src/train/tensorboard.ts): TFRecord framing with both masked CRC-32Cs checked (a plain bit-wise
// CRC here, the writer uses a table), and a generic protobuf decoder that reads Event and Summary by field
// number and wire type, refusing any wire type the schema does not give the field.
//   record:  uint64 length (LE) | uint32 masked crc32c(length bytes) | data | uint32 masked crc32c(data)
//   Event:   1 wall_time double (wire 1) | 2 step int64 (wire 0) | 3 file_version string (wire 2) | 5 summary (wire 2)
//   Summary: 1 value (wire 2, repeated);  Value: 1 tag string (wire 2) | 2 simple_value float (wire 5)
import fs from 'node:fs';

export function crc32cBitwise(bytes: Uint8Array): number {
  let crc = 0xffffffff;
  for (const b of bytes) {
    crc ^= b;
    for (let k = 0; k < 8; k++) crc = crc & 1 ? (crc >>> 1) ^ 0x82f63b78 : crc >>> 1;
  }
  return (crc ^ 0xffffffff) >>> 0;
}

const mask = (crc: number) => ((((crc >>> 15) | (crc << 17)) >>> 0) + 0xa282ead8) >>> 0;

/** The data of every record, checking the framing and both CRCs; throws naming the byte offset. */
export function readRecords(buf: Buffer): Buffer[] {
  const out: Buffer[] = [];
  let off = 0;
  while (off < buf.length) {
    if (off + 12 > buf.length) throw new Error(`record at byte ${off}: header cut short`);
    const length = buf.readBigUInt64LE(off);
    if (buf.readUInt32LE(off + 8) !== mask(crc32cBitwise(buf.subarray(off, off + 8))))
      throw new Error(`record at byte ${off}: the length's CRC does not match`);
    const n = Number(length);
    if (off + 12 + n + 4 > buf.length) throw new Error(`record at byte ${off}: data cut short`);
    const data = buf.subarray(off + 12, off + 12 + n);
    if (buf.readUInt32LE(off + 12 + n) !== mask(crc32cBitwise(data)))
      throw new Error(`record at byte ${off}: the data's CRC does not match`);
    out.push(data);
    off += 12 + n + 4;
  }
  return out;
}

interface Field {
  field: number;
  wire: number;
  /** varint: the integer; 64-bit and 32-bit: the raw bytes; length-delimited: the bytes. */
  value: bigint | Buffer;
}

function parseMessage(buf: Buffer): Field[] {
  const fields: Field[] = [];
  let off = 0;
  const varint = (): bigint => {
    let v = 0n;
    for (let shift = 0n; ; shift += 7n) {
      if (off >= buf.length) throw new Error('varint cut short');
      const b = buf[off++];
      v |= BigInt(b & 0x7f) << shift;
      if (!(b & 0x80)) return v;
    }
  };
  const take = (n: number) => {
    if (off + n > buf.length) throw new Error('field cut short');
    const b = buf.subarray(off, off + n);
    off += n;
    return b;
  };
  while (off < buf.length) {
    const key = varint();
    const field = Number(key >> 3n);
    const wire = Number(key & 7n);
    if (wire === 0) fields.push({ field, wire, value: varint() });
    else if (wire === 1) fields.push({ field, wire, value: take(8) });
    else if (wire === 2) fields.push({ field, wire, value: take(Number(varint())) });
    else if (wire === 5) fields.push({ field, wire, value: take(4) });
    else throw new Error(`unsupported wire type ${wire} (field ${field})`);
  }
  return fields;
}

export interface DecodedEvent {
  wallTime: number;
  step: number;
  fileVersion?: string;
  values?: { tag: string; value: number }[];
}

function expectWire(f: Field, wire: number, what: string): void {
  if (f.wire !== wire) throw new Error(`${what} (field ${f.field}) has wire type ${f.wire}, the schema says ${wire}`);
}

export function decodeEvent(data: Buffer): DecodedEvent {
  const e: DecodedEvent = { wallTime: Number.NaN, step: 0 };
  for (const f of parseMessage(data)) {
    if (f.field === 1) {
      expectWire(f, 1, 'Event.wall_time');
      e.wallTime = (f.value as Buffer).readDoubleLE(0);
    } else if (f.field === 2) {
      expectWire(f, 0, 'Event.step');
      e.step = Number(BigInt.asIntN(64, f.value as bigint));
    } else if (f.field === 3) {
      expectWire(f, 2, 'Event.file_version');
      e.fileVersion = (f.value as Buffer).toString('utf8');
    } else if (f.field === 5) {
      expectWire(f, 2, 'Event.summary');
      e.values ??= [];
      for (const v of parseMessage(f.value as Buffer)) {
        expectWire(v, 2, 'Summary.value');
        let tag: string | undefined;
        let value: number | undefined;
        for (const x of parseMessage(v.value as Buffer)) {
          if (x.field === 1) {
            expectWire(x, 2, 'Value.tag');
            tag = (x.value as Buffer).toString('utf8');
          } else if (x.field === 2) {
            expectWire(x, 5, 'Value.simple_value');
            value = (x.value as Buffer).readFloatLE(0);
          } else throw new Error(`Summary.Value field ${x.field}: not a scalar`);
        }
        if (tag === undefined || value === undefined) throw new Error('a Summary.Value without tag or simple_value');
        e.values.push({ tag, value });
      }
    } else throw new Error(`Event field ${f.field}: not written by a scalar writer`);
  }
  return e;
}

export function readEventFile(file: string): DecodedEvent[] {
  return readRecords(fs.readFileSync(file)).map(decodeEvent);
}
