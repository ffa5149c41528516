// What a shard file says about itself: its schema metadata (first sample, record-batch rows, tokens,
// sample-id hash, checksum; see schema.ts), read from the footer without its rows. Both the writers (which merge
// shards that ranks wrote side by side into one manifest) and the reader use it, so it lives apart from both.
import fsp from 'node:fs/promises';
import { RecordBatchReader } from 'apache-arrow';
import { StoreError } from './manifest.ts';
import { META_BATCH_ROWS, META_CRC32, META_FIRST_SAMPLE, META_IDS_SHA256, META_TOKENS } from './schema.ts';

/** What a shard file says about itself (its schema metadata), for merging shards into a manifest. */
export interface ShardInfo {
  firstSample: number;
  samples: number;
  tokens: number;
  idsSha256: string;
  /** The shard's checksum (specforge.crc32). */
  crc32: string;
  bytes: number;
}

/** The row count of each record batch (specforge.batch_rows), or null when it is missing or not positive integers. */
export function batchRows(metadata: Map<string, string>): number[] | null {
  const value = metadata.get(META_BATCH_ROWS);
  const rows = (value ?? '').split(',').map(Number);
  return value && !rows.some((n) => !Number.isInteger(n) || n < 1) ? rows : null;
}

/** Reads a shard file's footer and schema metadata (not its rows). */
export async function readShardInfo(file: string): Promise<ShardInfo> {
  const fh = await fsp.open(file, 'r').catch((e: Error) => {
    throw new StoreError(`${file}: cannot open shard (${e.message})`);
  });
  try {
    const { size } = await fh.stat();
    let metadata: Map<string, string>;
    try {
      const r = await RecordBatchReader.from(fh);
      const reader = await r.open({ autoDestroy: false });
      metadata = reader.schema.metadata;
    } catch (e) {
      throw new StoreError(`${file}: not a readable Arrow IPC shard (${(e as Error).message})`);
    }
    const num = (key: string): number => {
      const v = Number(metadata.get(key));
      if (!Number.isInteger(v) || v < 0)
        throw new StoreError(`${file}: schema metadata ${key} missing or invalid (${JSON.stringify(metadata.get(key))})`);
      return v;
    };
    const rows = batchRows(metadata);
    if (!rows) throw new StoreError(`${file}: schema metadata ${META_BATCH_ROWS} missing or invalid`);
    const crc32 = metadata.get(META_CRC32) ?? '';
    if (!/^[0-9a-f]{8}$/.test(crc32))
      throw new StoreError(`${file}: schema metadata ${META_CRC32} missing or invalid (a shard of an older specforge, or damaged)`);
    return {
      firstSample: num(META_FIRST_SAMPLE),
      samples: rows.reduce((a, b) => a + b, 0),
      tokens: num(META_TOKENS),
      idsSha256: metadata.get(META_IDS_SHA256) ?? '',
      crc32,
      bytes: size,
    };
  } finally {
    await fh.close().catch(() => {});
  }
}
