// A small protobuf encoder for the part of onnx.proto an exported model needs (ModelProto, GraphProto,
// NodeProto, AttributeProto, TensorProto with external data, ValueInfoProto with symbolic dims). Field
// numbers follow the public onnx.proto; only the wire types varint (0) and length-delimited (2) and
// fixed32 (5, for float attributes) are used. Written by hand so that the export needs no protobuf
// dependency: every message here is a plain object, encoded bottom-up into byte chunks.

/** TensorProto.DataType values used by the exporter. */
export const DataType = { FLOAT: 1, UINT8: 2, INT8: 3, INT32: 6, INT64: 7, BOOL: 9 } as const;
export type DataTypeId = (typeof DataType)[keyof typeof DataType];

export interface TensorProto {
  name: string;
  dataType: DataTypeId;
  dims: number[];
  /** Little-endian element bytes (raw_data), or where they live in the external data file. */
  raw?: Uint8Array;
  external?: { location: string; offset: number; length: number };
}

/** A tensor type with a shape of fixed sizes (numbers) and symbolic axes (strings, dim_param). */
export interface ValueInfo {
  name: string;
  elemType: DataTypeId;
  shape: (number | string)[];
  doc?: string;
}

export type AttributeValue = number | number[] | string | { int: number } | { ints: number[] } | { float: number } | TensorProto;

export interface NodeProto {
  opType: string;
  inputs: string[];
  outputs: string[];
  name?: string;
  /** Integers go as INT(S) unless wrapped as { float } (FLOAT); a plain number[] is INTS. */
  attributes?: Record<string, AttributeValue>;
}

export interface GraphProto {
  name: string;
  nodes: NodeProto[];
  initializers: TensorProto[];
  inputs: ValueInfo[];
  outputs: ValueInfo[];
  doc?: string;
}

export interface ModelProto {
  irVersion: number;
  opset: number;
  producerName: string;
  producerVersion: string;
  graph: GraphProto;
  doc?: string;
  metadata?: Record<string, string>;
}

/** Growable byte buffer with the protobuf primitives. */
class Writer {
  private chunks: Uint8Array[] = [];
  length = 0;

  private push(b: Uint8Array): void {
    this.chunks.push(b);
    this.length += b.length;
  }

  /** Unsigned varint of a non-negative integer (or a two's-complement 64-bit value for negatives). */
  varint(v: number | bigint): void {
    let x = BigInt.asUintN(64, BigInt(v));
    const out: number[] = [];
    while (x >= 0x80n) {
      out.push(Number(x & 0x7fn) | 0x80);
      x >>= 7n;
    }
    out.push(Number(x));
    this.push(Uint8Array.from(out));
  }

  tag(field: number, wire: 0 | 2 | 5): void {
    this.varint((field << 3) | wire);
  }

  int(field: number, v: number | bigint): void {
    this.tag(field, 0);
    this.varint(v);
  }

  float(field: number, v: number): void {
    this.tag(field, 5);
    const b = new Uint8Array(4);
    new DataView(b.buffer).setFloat32(0, v, true);
    this.push(b);
  }

  bytes(field: number, b: Uint8Array): void {
    this.tag(field, 2);
    this.varint(b.length);
    this.push(b);
  }

  string(field: number, s: string): void {
    this.bytes(field, new TextEncoder().encode(s));
  }

  message(field: number, m: Writer): void {
    this.tag(field, 2);
    this.varint(m.length);
    for (const c of m.chunks) this.push(c);
  }

  /** Packed repeated int64. */
  packedInts(field: number, values: number[]): void {
    const inner = new Writer();
    for (const v of values) inner.varint(v);
    this.message(field, inner);
  }

  finish(): Uint8Array {
    const out = new Uint8Array(this.length);
    let at = 0;
    for (const c of this.chunks) {
      out.set(c, at);
      at += c.length;
    }
    return out;
  }
}

function stringEntry(key: string, value: string): Writer {
  const w = new Writer();
  w.string(1, key);
  w.string(2, value);
  return w;
}

function tensor(t: TensorProto): Writer {
  const w = new Writer();
  for (const d of t.dims) w.int(1, d); // dims (unpacked is valid for repeated int64 too)
  w.int(2, t.dataType);
  w.string(8, t.name);
  if (t.external) {
    w.message(13, stringEntry('location', t.external.location));
    w.message(13, stringEntry('offset', String(t.external.offset)));
    w.message(13, stringEntry('length', String(t.external.length)));
    w.int(14, 1); // data_location = EXTERNAL
  } else {
    if (!t.raw) throw new Error(`ONNX tensor '${t.name}': no data`);
    w.bytes(9, t.raw);
  }
  return w;
}

function valueInfo(v: ValueInfo): Writer {
  const shape = new Writer();
  for (const d of v.shape) {
    const dim = new Writer();
    if (typeof d === 'number') dim.int(1, d);
    else dim.string(2, d);
    shape.message(1, dim);
  }
  const tensorType = new Writer();
  tensorType.int(1, v.elemType);
  tensorType.message(2, shape);
  const type = new Writer();
  type.message(1, tensorType);
  const w = new Writer();
  w.string(1, v.name);
  w.message(2, type);
  if (v.doc) w.string(3, v.doc);
  return w;
}

// AttributeProto.AttributeType
const ATTR = { FLOAT: 1, INT: 2, STRING: 3, TENSOR: 4, INTS: 7 } as const;

function attribute(name: string, v: AttributeValue): Writer {
  const w = new Writer();
  w.string(1, name);
  if (typeof v === 'number' || (typeof v === 'object' && 'int' in v)) {
    const x = typeof v === 'number' ? v : v.int;
    if (!Number.isInteger(x)) throw new Error(`ONNX attribute '${name}': ${x} is not an integer (wrap floats as { float })`);
    w.int(3, x);
    w.int(20, ATTR.INT);
  } else if (typeof v === 'string') {
    w.string(4, v);
    w.int(20, ATTR.STRING);
  } else if (Array.isArray(v) || 'ints' in v) {
    for (const x of Array.isArray(v) ? v : v.ints) w.int(8, x);
    w.int(20, ATTR.INTS);
  } else if ('float' in v) {
    w.float(2, v.float);
    w.int(20, ATTR.FLOAT);
  } else {
    w.message(5, tensor(v));
    w.int(20, ATTR.TENSOR);
  }
  return w;
}

function node(n: NodeProto): Writer {
  const w = new Writer();
  for (const i of n.inputs) w.string(1, i);
  for (const o of n.outputs) w.string(2, o);
  if (n.name) w.string(3, n.name);
  w.string(4, n.opType);
  for (const [k, v] of Object.entries(n.attributes ?? {})) w.message(5, attribute(k, v));
  return w;
}

function graph(g: GraphProto): Writer {
  const w = new Writer();
  for (const n of g.nodes) w.message(1, node(n));
  w.string(2, g.name);
  for (const t of g.initializers) w.message(5, tensor(t));
  if (g.doc) w.string(10, g.doc);
  for (const i of g.inputs) w.message(11, valueInfo(i));
  for (const o of g.outputs) w.message(12, valueInfo(o));
  return w;
}

/** The serialized ModelProto. */
export function encodeModel(m: ModelProto): Uint8Array {
  const w = new Writer();
  w.int(1, m.irVersion);
  w.string(2, m.producerName);
  w.string(3, m.producerVersion);
  if (m.doc) w.string(6, m.doc);
  w.message(7, graph(m.graph));
  const opset = new Writer();
  opset.string(1, ''); // the default ai.onnx domain
  opset.int(2, m.opset);
  w.message(8, opset);
  for (const [k, v] of Object.entries(m.metadata ?? {})) w.message(14, stringEntry(k, v));
  return w.finish();
}
