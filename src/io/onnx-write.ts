// Writes an ONNX ModelProto to disk: initializers above a size either inline (raw_data) or in one external
// data file beside the model (offsets aligned to 4096 bytes so that ONNX Runtime can map them). Both
// files are written under temporary names and renamed, the data file first, so a reader never sees a
// model whose data is missing.
import fs from 'node:fs';
import path from 'node:path';
import { writeAtomic } from './atomic.ts';
import { type ModelProto, encodeModel } from './onnx-proto.ts';

export type ExternalData = 'auto' | 'always' | 'never';

/** 'auto' moves weights out of the protobuf once they pass this total (protobuf's hard limit is 2 GiB). */
export const AUTO_EXTERNAL_BYTES = 1 << 30;
/** Tensors smaller than this stay inline even with external data (shapes, scales, norms). */
const MIN_EXTERNAL_TENSOR = 1024;
const ALIGN = 4096;

/**
 * Writes `file` (and `file + '.data'` when weights go external); returns the files written. `autoBytes`: the
 * total past which 'auto' goes external (tests lower it).
 */
export function writeOnnxModel(
  file: string,
  model: ModelProto,
  external: ExternalData = 'auto',
  autoBytes = AUTO_EXTERNAL_BYTES,
): string[] {
  const inits = model.graph.initializers;
  const total = inits.reduce((s, t) => s + (t.raw?.length ?? 0), 0);
  const goesOut = external === 'always' || (external === 'auto' && total > autoBytes);
  const dataFile = `${file}.data`;
  const location = path.basename(dataFile);
  const parts: Buffer[] = [];
  let offset = 0;
  const graphInits = inits.map((t) => {
    if (!goesOut || !t.raw || t.raw.length < MIN_EXTERNAL_TENSOR) return t;
    const pad = (ALIGN - (offset % ALIGN)) % ALIGN;
    if (pad) parts.push(Buffer.alloc(pad));
    offset += pad;
    parts.push(Buffer.from(t.raw.buffer, t.raw.byteOffset, t.raw.byteLength));
    const ext = { location, offset, length: t.raw.length };
    offset += t.raw.length;
    return { name: t.name, dataType: t.dataType, dims: t.dims, external: ext };
  });
  const written: string[] = [];
  if (parts.length) {
    writeAtomic(dataFile, parts);
    written.push(dataFile);
  } else fs.rmSync(dataFile, { force: true }); // a stale data file from an earlier export would mislead
  const bytes = encodeModel({ ...model, graph: { ...model.graph, initializers: graphInits } });
  writeAtomic(file, [Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)]);
  return [file, ...written];
}
