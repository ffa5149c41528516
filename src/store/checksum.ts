// The store's checksums: CRC-32 (zlib's, built into Node since 20.15, native and a few GB/s, so checking
// every row that training reads costs nothing measurable) of each row, of each column chunk (one column
// of one record batch) and of a shard as a whole. A shard records the first two in its schema metadata
// (see schema.ts) and the third in its metadata and in the manifest; the reader checks a row's sum before
// decoding it, and a full pass (verify.ts) checks everything.
import zlib from 'node:zlib';

/** The row's columns in schema order, as the bytes stored (floats in the store dtype). */
export type RowParts = readonly NodeJS.ArrayBufferView[];

/** CRC-32 of the parts in order. */
export function crc32(parts: readonly NodeJS.ArrayBufferView[], seed = 0): number {
  let c = seed;
  // Empty parts change nothing; skipped because Node 20's zlib.crc32 returns 0, dropping the running sum,
  // for an empty view without a backing store (TextEncoder's encoding of '').
  for (const p of parts) if (p.byteLength > 0) c = zlib.crc32(p, c);
  return c;
}

/**
 * A row's checksum: its columns' byte lengths, then their bytes. The lengths are summed too, so bytes
 * that move from one column to the next (damaged offsets) change the sum.
 */
export function rowCrc32(parts: RowParts): number {
  const lengths = Uint32Array.from(parts, (p) => p.byteLength);
  return crc32(parts, zlib.crc32(lengths));
}

/** A column chunk's checksum: its offsets buffer (list and string columns), then its values. */
export function chunkCrc32(offsets: Int32Array, values: NodeJS.ArrayBufferView): number {
  return crc32([offsets, values]);
}

export const hex32 = (x: number): string => (x >>> 0).toString(16).padStart(8, '0');

/** Parses a list of 8-digit hex sums joined by `sep`; null when any is malformed. */
export function parseHexList(text: string | undefined, sep: string): Uint32Array | null {
  if (text === undefined) return null;
  if (text === '') return new Uint32Array(0);
  const parts = text.split(sep);
  if (parts.some((p) => !/^[0-9a-f]{8}$/.test(p))) return null;
  return Uint32Array.from(parts, (p) => Number.parseInt(p, 16));
}

/**
 * A shard's checksum: CRC-32 of its column-chunk and row sums as the metadata writes them, so it covers
 * every byte of data through them (and changes when any of them is edited).
 */
export function shardCrc32(columnSums: string, rowSums: string): string {
  return hex32(zlib.crc32(`${columnSums}\n${rowSums}`));
}
