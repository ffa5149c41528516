// Safetensors: an 8-byte little-endian header length N, N bytes of JSON
// ({name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__"?: {...}}), then the data buffer.
// Files are read tensor by tensor through a file descriptor, so an 8B checkpoint never sits in memory whole.
import fs from 'node:fs';
import path from 'node:path';
import { writeAtomic } from './atomic.ts';
import { bf16ToF32, f16ToF32, f32ToBf16, f32ToF16 } from './dtypes.ts';

export const DTYPE_BYTES = { F32: 4, F16: 2, BF16: 2, I64: 8, I32: 4, BOOL: 1 } as const;
export type Dtype = keyof typeof DTYPE_BYTES;

/** What a tensor reads as: float formats widen to Float32Array; integers and bools keep their width. */
export type TensorData = Float32Array | BigInt64Array | Int32Array | Uint8Array;

export interface StoredTensor {
  dtype: Dtype;
  shape: number[];
  data: TensorData;
}

interface Entry {
  dtype: Dtype;
  shape: number[];
  begin: number;
  end: number;
}

export class SafetensorsError extends Error {}

function numel(shape: number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

/** An open safetensors file: header parsed and validated up front, tensors read on demand. */
export class SafetensorsFile {
  readonly path: string;
  readonly metadata: Record<string, string> = {};
  private readonly entries = new Map<string, Entry>();
  private readonly dataStart: number = 0;

  constructor(file: string) {
    this.path = file;
    const fail = (msg: string): never => {
      throw new SafetensorsError(`${file}: ${msg}`);
    };
    let size: number;
    try {
      size = fs.statSync(file).size;
    } catch (e) {
      throw new SafetensorsError(`${file}: cannot open (${(e as Error).message})`);
    }
    if (size < 8) fail(`truncated: ${size} bytes, shorter than the 8-byte header length`);
    const fd = fs.openSync(file, 'r');
    try {
      const lenBuf = Buffer.alloc(8);
      fs.readSync(fd, lenBuf, 0, 8, 0);
      const headerLen = lenBuf.readBigUInt64LE(0);
      if (headerLen > BigInt(size - 8)) fail(`header length ${headerLen} runs past the end of the file (${size} bytes)`);
      const n = Number(headerLen);
      const headerBuf = Buffer.alloc(n);
      fs.readSync(fd, headerBuf, 0, n, 8);
      let header: Record<string, unknown>;
      try {
        header = JSON.parse(headerBuf.toString('utf8'));
      } catch (e) {
        throw new SafetensorsError(`${file}: header is not valid JSON (${(e as Error).message})`);
      }
      if (typeof header !== 'object' || header === null || Array.isArray(header)) fail('header is not a JSON object');
      this.dataStart = 8 + n;
      const dataLen = size - this.dataStart;
      this.metadata = (header.__metadata__ as Record<string, string>) ?? {};
      for (const [name, raw] of Object.entries(header)) {
        if (name === '__metadata__') continue;
        const info = raw as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
        const where = `tensor '${name}'`;
        if (typeof info?.dtype !== 'string' || !Object.hasOwn(DTYPE_BYTES, info.dtype)) {
          fail(`${where}: unknown dtype ${JSON.stringify(info?.dtype)} (supported: ${Object.keys(DTYPE_BYTES).join(', ')})`);
        }
        const dtype = info.dtype as Dtype;
        if (!Array.isArray(info.shape) || !info.shape.every((d) => Number.isInteger(d) && d >= 0)) {
          fail(`${where}: shape ${JSON.stringify(info.shape)} is not a list of non-negative integers`);
        }
        const shape = info.shape as number[];
        const offs = info.data_offsets;
        if (!Array.isArray(offs) || offs.length !== 2 || !offs.every((o) => Number.isInteger(o) && o >= 0) || offs[0] > offs[1]) {
          fail(`${where}: data_offsets ${JSON.stringify(offs)} is not [begin, end] with 0 <= begin <= end`);
        }
        const [begin, end] = offs as number[];
        if (end > dataLen) {
          fail(`${where}: data_offsets [${begin}, ${end}] run past the end of the data (${dataLen} bytes; file truncated?)`);
        }
        const want = numel(shape) * DTYPE_BYTES[dtype];
        if (end - begin !== want) {
          fail(`${where}: data_offsets [${begin}, ${end}] hold ${end - begin} bytes but ${dtype} [${shape}] needs ${want}`);
        }
        this.entries.set(name, { dtype, shape, begin, end });
      }
      const sorted = [...this.entries.entries()].sort((a, b) => a[1].begin - b[1].begin || a[1].end - b[1].end);
      for (let i = 1; i < sorted.length; i++) {
        const [prevName, prev] = sorted[i - 1];
        const [name, cur] = sorted[i];
        if (cur.begin < prev.end)
          fail(`tensor '${name}': data_offsets [${cur.begin}, ${cur.end}] overlap tensor '${prevName}' [${prev.begin}, ${prev.end}]`);
      }
    } finally {
      fs.closeSync(fd);
    }
  }

  names(): string[] {
    return [...this.entries.keys()];
  }

  has(name: string): boolean {
    return this.entries.has(name);
  }

  info(name: string): { dtype: Dtype; shape: number[] } {
    const e = this.entry(name);
    return { dtype: e.dtype, shape: [...e.shape] };
  }

  private entry(name: string): Entry {
    const e = this.entries.get(name);
    if (!e) throw new SafetensorsError(`${this.path}: no tensor '${name}'`);
    return e;
  }

  /** Reads one tensor; F16/BF16 widen to float32. */
  read(name: string): StoredTensor {
    const e = this.entry(name);
    const bytes = Buffer.alloc(e.end - e.begin);
    const fd = fs.openSync(this.path, 'r');
    try {
      // One read returns at most ~2 GiB on Linux: loop until the tensor is in.
      let got = 0;
      while (got < bytes.length) {
        const n = fs.readSync(fd, bytes, got, bytes.length - got, this.dataStart + e.begin + got);
        if (n === 0) throw new SafetensorsError(`${this.path}: tensor '${name}': read ${got} of ${bytes.length} bytes (file truncated?)`);
        got += n;
      }
    } finally {
      fs.closeSync(fd);
    }
    return { dtype: e.dtype, shape: [...e.shape], data: decode(e.dtype, bytes, numel(e.shape)) };
  }

  readAll(): Map<string, StoredTensor> {
    return new Map(this.names().map((n) => [n, this.read(n)]));
  }
}

function decode(dtype: Dtype, bytes: Buffer, n: number): TensorData {
  // Copy into an aligned buffer: a Buffer slice may start at any byte offset.
  const ab = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.length);
  switch (dtype) {
    case 'F32':
      return new Float32Array(ab);
    case 'I64':
      return new BigInt64Array(ab);
    case 'I32':
      return new Int32Array(ab);
    case 'BOOL':
      return new Uint8Array(ab);
    case 'F16':
    case 'BF16': {
      const src = new Uint16Array(ab);
      const out = new Float32Array(n);
      const conv = dtype === 'F16' ? f16ToF32 : bf16ToF32;
      for (let i = 0; i < n; i++) out[i] = conv(src[i]);
      return out;
    }
  }
}

/** A tensor to write: float data is converted to `dtype` (F32, F16 or BF16); integer data must match its dtype. */
export interface TensorToWrite {
  dtype: Dtype;
  shape: number[];
  data: Float32Array | BigInt64Array | Int32Array | Uint8Array | number[];
}

function encode(file: string, name: string, t: TensorToWrite): Buffer {
  const n = numel(t.shape);
  if (t.data.length !== n)
    throw new SafetensorsError(`${file}: tensor '${name}': ${t.data.length} values for shape [${t.shape}] (${n} expected)`);
  switch (t.dtype) {
    case 'F32':
      return Buffer.from(Float32Array.from(t.data as ArrayLike<number>).buffer);
    case 'F16':
    case 'BF16': {
      const conv = t.dtype === 'F16' ? f32ToF16 : f32ToBf16;
      const out = new Uint16Array(n);
      const src = t.data as ArrayLike<number>;
      for (let i = 0; i < n; i++) out[i] = conv(src[i]);
      return Buffer.from(out.buffer);
    }
    case 'I64':
      // Copy the view's own bytes: a subarray shares a larger buffer.
      return Buffer.from(BigInt64Array.from(t.data as ArrayLike<bigint | number>, (v) => BigInt(v)).buffer);
    case 'I32':
      return Buffer.from(Int32Array.from(t.data as ArrayLike<number>).buffer);
    case 'BOOL':
      return Buffer.from(Uint8Array.from(t.data as ArrayLike<number>, (v) => (v ? 1 : 0)).buffer);
  }
}

/** Writes a safetensors file atomically (temporary name, then rename). Tensors are laid out in name order. */
export function writeSafetensors(
  file: string,
  tensors: Record<string, TensorToWrite> | Map<string, TensorToWrite>,
  metadata?: Record<string, string>,
): void {
  const entries = tensors instanceof Map ? [...tensors.entries()] : Object.entries(tensors);
  entries.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
  const header: Record<string, unknown> = {};
  if (metadata) header.__metadata__ = metadata;
  const blobs: Buffer[] = [];
  let offset = 0;
  for (const [name, t] of entries) {
    const blob = encode(file, name, t);
    header[name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + blob.length] };
    blobs.push(blob);
    offset += blob.length;
  }
  let json = Buffer.from(JSON.stringify(header), 'utf8');
  const pad = (8 - (json.length % 8)) % 8; // keep the data buffer 8-byte aligned
  json = Buffer.concat([json, Buffer.alloc(pad, 0x20)]);
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(json.length));
  writeAtomic(file, [len, json, ...blobs]);
}

/**
 * The tensors of a Hugging Face model folder (a target or a saved draft): one `model.safetensors`, or shards listed by
 * `model.safetensors.index.json` (its weight_map: tensor name -> shard file).
 */
export class SafetensorsFolder {
  readonly dir: string;
  private readonly where = new Map<string, SafetensorsFile>();

  constructor(dir: string) {
    this.dir = dir;
    const index = path.join(dir, 'model.safetensors.index.json');
    const single = path.join(dir, 'model.safetensors');
    if (fs.existsSync(index)) {
      let weightMap: Record<string, string>;
      try {
        weightMap = JSON.parse(fs.readFileSync(index, 'utf8')).weight_map;
      } catch (e) {
        throw new SafetensorsError(`${index}: not valid JSON (${(e as Error).message})`);
      }
      if (!weightMap || typeof weightMap !== 'object')
        throw new SafetensorsError(`${index}: missing "weight_map" (tensor name -> shard file)`);
      const shards = new Map<string, SafetensorsFile>();
      for (const [name, shard] of Object.entries(weightMap)) {
        if (!shards.has(shard)) shards.set(shard, new SafetensorsFile(path.join(dir, shard)));
        const f = shards.get(shard)!;
        if (!f.has(name)) throw new SafetensorsError(`${index}: tensor '${name}' is mapped to ${shard}, which does not hold it`);
        this.where.set(name, f);
      }
    } else if (fs.existsSync(single)) {
      const f = new SafetensorsFile(single);
      for (const n of f.names()) this.where.set(n, f);
    } else {
      throw new SafetensorsError(`${dir}: no model.safetensors or model.safetensors.index.json`);
    }
  }

  names(): string[] {
    return [...this.where.keys()];
  }

  has(name: string): boolean {
    return this.where.has(name);
  }

  info(name: string): { dtype: Dtype; shape: number[] } {
    return this.file(name).info(name);
  }

  read(name: string): StoredTensor {
    return this.file(name).read(name);
  }

  private file(name: string): SafetensorsFile {
    const f = this.where.get(name);
    if (!f) throw new SafetensorsError(`${this.dir}: checkpoint has no tensor '${name}'`);
    return f;
  }
}

/**
 * Writes tensors as a sharded checkpoint (model-0000i-of-0000n.safetensors plus the index) when they
 * exceed `maxShardBytes`, else as one model.safetensors.
 */
export function writeSafetensorsFolder(
  dir: string,
  tensors: Map<string, TensorToWrite>,
  maxShardBytes = 5 * 2 ** 30,
  metadata: Record<string, string> = { format: 'pt' },
): string[] {
  const names = [...tensors.keys()].sort();
  const shards: string[][] = [[]];
  let cur = 0;
  let total = 0;
  for (const n of names) {
    const t = tensors.get(n)!;
    const bytes = numel(t.shape) * DTYPE_BYTES[t.dtype];
    if (cur > 0 && cur + bytes > maxShardBytes) {
      shards.push([]);
      cur = 0;
    }
    shards[shards.length - 1].push(n);
    cur += bytes;
    total += bytes;
  }
  // The index wins over model.safetensors when both exist, so a stale index goes first; stale files after.
  const index = path.join(dir, 'model.safetensors.index.json');
  fs.rmSync(index, { force: true });
  const removeStale = (keep: string[]) => {
    if (!fs.existsSync(dir)) return;
    for (const f of fs.readdirSync(dir)) {
      const p = path.join(dir, f);
      if ((f === 'model.safetensors' || /^model-\d+-of-\d+\.safetensors$/.test(f)) && !keep.includes(p)) fs.rmSync(p);
    }
  };
  if (shards.length === 1) {
    const file = path.join(dir, 'model.safetensors');
    writeSafetensors(file, tensors, metadata);
    removeStale([file]);
    return [file];
  }
  const files: string[] = [];
  const weightMap: Record<string, string> = {};
  const pad = (i: number) => String(i).padStart(5, '0');
  shards.forEach((group, i) => {
    const base = `model-${pad(i + 1)}-of-${pad(shards.length)}.safetensors`;
    writeSafetensors(path.join(dir, base), new Map(group.map((n) => [n, tensors.get(n)!])), metadata);
    for (const n of group) weightMap[n] = base;
    files.push(path.join(dir, base));
  });
  writeAtomic(index, [JSON.stringify({ metadata: { total_size: total }, weight_map: weightMap }, null, 2) + '\n']);
  removeStale(files);
  return [...files, index];
}
