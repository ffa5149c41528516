// manifest.json of a hidden-state store: what was captured (target, template, aux layers, dtype), from
// what (`source`: the data's content hash and the settings that select or change samples), and which
// shards are finished, each with its checksum. It is rewritten atomically after every shard, so it only
// ever lists shards that are complete on disk; `complete: true` marks a finished capture.
import fs from 'node:fs';
import path from 'node:path';
import { writeAtomic } from '../io/atomic.ts';
import { SCHEMA_VERSION, type StoreDtype } from './schema.ts';

export const MANIFEST_FILE = 'manifest.json';

export interface StoreTarget {
  architecture: string;
  hidden_size: number;
  vocab_size: number;
  config_sha256: string;
  weights_sha256: string;
  tokenizer_sha256: string;
}

/**
 * What the samples of a store come from: the data's contents and every setting that selects samples or
 * changes what is stored for them (template and max_length are top-level manifest fields).
 */
export interface StoreSource {
  /** sha256 of the data files' contents in order (not their paths: moved data is the same data). */
  data_sha256: string;
  /** The data files' names, for messages only (not compared). */
  data_files: string[];
  format: string;
  skip_invalid: boolean;
  /** capture.limit (null: all); the train split only, the eval split is captured whole. */
  limit: number | null;
  answer_extractor: string;
  /** With data.regenerate the samples are the target's own answers, under these settings; else null. */
  regenerate: Record<string, number | null> | null;
}

export interface ShardEntry {
  /** File name inside the store folder, e.g. shard-00000.arrow. */
  file: string;
  samples: number;
  tokens: number;
  bytes: number;
  /** Index of the shard's first sample in the store's sample order. */
  first_sample: number;
  /** The shard's checksum (its `specforge.crc32` metadata: CRC-32 of its row and column-chunk sums). */
  crc32: string;
}

export interface StoreManifest {
  schema_version: number;
  created_by: 'specforge';
  target: StoreTarget;
  template: string;
  aux_layer_ids: number[];
  dtype: StoreDtype;
  max_length: number;
  samples_per_shard: number;
  source: StoreSource;
  shards: ShardEntry[];
  total_samples: number;
  total_tokens: number;
  complete: boolean;
}

/** What identifies a capture: the manifest without its progress fields. */
export type StoreMeta = Omit<StoreManifest, 'shards' | 'total_samples' | 'total_tokens' | 'complete'>;

/** What a training recipe expects of a store. */
export interface StoreExpectation {
  config_sha256: string;
  weights_sha256: string;
  tokenizer_sha256: string;
  template: string;
  aux_layer_ids: number[];
  max_length: number;
  source: StoreSource;
}

export class StoreError extends Error {}

export function shardFileName(i: number): string {
  return `shard-${String(i).padStart(5, '0')}.arrow`;
}

/** Writes manifest.json atomically, validated and with its keys in canonical order (so equal stores have equal bytes). */
export function writeManifest(dir: string, m: StoreManifest): void {
  const file = path.join(dir, MANIFEST_FILE);
  const canonical = validateManifest(JSON.parse(JSON.stringify(m)), file);
  try {
    writeAtomic(file, [JSON.stringify(canonical, null, 2) + '\n']);
  } catch (e) {
    throw new StoreError(`${file}: cannot write the store manifest (${(e as Error).message}); the previous one is kept`);
  }
}

function describe(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  if (typeof v === 'string') return `string ${JSON.stringify(v.length > 60 ? v.slice(0, 60) + '...' : v)}`;
  if (typeof v === 'number') return `number ${v}`;
  return typeof v;
}

/** Reads and validates `dir/manifest.json`; every error names the file and the field. */
export function readManifest(dir: string): StoreManifest {
  const file = path.join(dir, MANIFEST_FILE);
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    throw new StoreError(`${file}: cannot read store manifest (${(e as Error).message})`);
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw new StoreError(`${file}: not valid JSON (${(e as Error).message})`);
  }
  return validateManifest(raw, file);
}

export function validateManifest(raw: unknown, file: string): StoreManifest {
  const fail = (field: string, want: string, v: unknown): never => {
    throw new StoreError(`${file}: field ${field} must be ${want}, got ${describe(v)}`);
  };
  const obj = (v: unknown, field: string): Record<string, unknown> =>
    typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Record<string, unknown>) : fail(field, 'an object', v);
  const str = (o: Record<string, unknown>, k: string, prefix = ''): string =>
    typeof o[k] === 'string' ? (o[k] as string) : fail(prefix + k, 'a string', o[k]);
  const int = (o: Record<string, unknown>, k: string, prefix = '', min = 0): number => {
    const v = o[k];
    return typeof v === 'number' && Number.isSafeInteger(v) && v >= min
      ? v
      : fail(prefix + k, min > 0 ? `an integer >= ${min}` : 'a non-negative integer', v);
  };
  const sha = (o: Record<string, unknown>, k: string, prefix: string): string => {
    const v = str(o, k, prefix);
    return /^[0-9a-f]{64}$/.test(v) ? v : fail(prefix + k, 'a 64-digit lowercase hex sha256', v);
  };

  const m = obj(raw, '(top level)');
  const schema_version = int(m, 'schema_version', '', 1);
  if (schema_version < SCHEMA_VERSION)
    throw new StoreError(
      `${file}: the store was written by an older specforge (store schema ${schema_version}, this one reads ${SCHEMA_VERSION}), ` +
        `which recorded neither the data it was captured from nor checksums; recapture it: delete ${path.dirname(file)} (or set another data.store) and run specforge capture`,
    );
  if (schema_version > SCHEMA_VERSION)
    throw new StoreError(
      `${file}: field schema_version is ${schema_version}; this specforge reads version ${SCHEMA_VERSION} (update specforge)`,
    );
  if (m.created_by !== 'specforge') fail('created_by', '"specforge"', m.created_by);
  const t = obj(m.target, 'target');
  const target: StoreTarget = {
    architecture: str(t, 'architecture', 'target.'),
    hidden_size: int(t, 'hidden_size', 'target.', 1),
    vocab_size: int(t, 'vocab_size', 'target.', 1),
    config_sha256: sha(t, 'config_sha256', 'target.'),
    weights_sha256: sha(t, 'weights_sha256', 'target.'),
    tokenizer_sha256: sha(t, 'tokenizer_sha256', 'target.'),
  };
  const template = str(m, 'template');
  const ids = m.aux_layer_ids;
  if (!Array.isArray(ids) || ids.length === 0) fail('aux_layer_ids', 'a non-empty array of layer indices', ids);
  const aux_layer_ids = (ids as unknown[]).map((v, i) =>
    typeof v === 'number' && Number.isSafeInteger(v) && v >= 0 ? v : fail(`aux_layer_ids[${i}]`, 'a non-negative integer', v),
  );
  if (m.dtype !== 'float16' && m.dtype !== 'float32') fail('dtype', '"float16" or "float32"', m.dtype);
  const dtype = m.dtype as StoreDtype;
  const max_length = int(m, 'max_length', '', 1);
  const samples_per_shard = int(m, 'samples_per_shard', '', 1);
  const src = obj(m.source, 'source');
  const files = src.data_files;
  if (!Array.isArray(files) || !files.every((f) => typeof f === 'string')) fail('source.data_files', 'an array of file names', files);
  const limit = src.limit;
  if (limit !== null && !(typeof limit === 'number' && Number.isSafeInteger(limit) && limit >= 1))
    fail('source.limit', 'null or an integer >= 1', limit);
  if (typeof src.skip_invalid !== 'boolean') fail('source.skip_invalid', 'a boolean', src.skip_invalid);
  const regen = src.regenerate === null ? null : obj(src.regenerate, 'source.regenerate');
  if (regen)
    for (const [k, v] of Object.entries(regen))
      if (v !== null && !(typeof v === 'number' && Number.isFinite(v))) fail(`source.regenerate.${k}`, 'a number or null', v);
  const source: StoreSource = {
    data_sha256: sha(src, 'data_sha256', 'source.'),
    data_files: files as string[],
    format: str(src, 'format', 'source.'),
    skip_invalid: src.skip_invalid as boolean,
    limit: limit as number | null,
    answer_extractor: str(src, 'answer_extractor', 'source.'),
    regenerate: regen as Record<string, number | null> | null,
  };
  if (!Array.isArray(m.shards)) fail('shards', 'an array', m.shards);
  const shards: ShardEntry[] = [];
  let samples = 0;
  let tokens = 0;
  (m.shards as unknown[]).forEach((s, i) => {
    const p = `shards[${i}].`;
    const o = obj(s, `shards[${i}]`);
    const e: ShardEntry = {
      file: str(o, 'file', p),
      samples: int(o, 'samples', p, 1),
      tokens: int(o, 'tokens', p),
      bytes: int(o, 'bytes', p, 1),
      first_sample: int(o, 'first_sample', p),
      crc32: str(o, 'crc32', p),
    };
    if (!/^[0-9a-f]{8}$/.test(e.crc32)) fail(p + 'crc32', 'an 8-digit lowercase hex CRC-32', e.crc32);
    if (e.file !== path.basename(e.file) || !e.file.endsWith('.arrow')) fail(p + 'file', 'a plain *.arrow file name', e.file);
    if (e.first_sample !== samples)
      throw new StoreError(`${file}: field ${p}first_sample is ${e.first_sample}, but the shards before it hold ${samples} samples`);
    if (e.samples > samples_per_shard)
      throw new StoreError(`${file}: field ${p}samples is ${e.samples}, more than samples_per_shard ${samples_per_shard}`);
    samples += e.samples;
    tokens += e.tokens;
    shards.push(e);
  });
  const total_samples = int(m, 'total_samples');
  const total_tokens = int(m, 'total_tokens');
  if (total_samples !== samples)
    throw new StoreError(`${file}: field total_samples is ${total_samples}, but the shards hold ${samples} samples`);
  if (total_tokens !== tokens) throw new StoreError(`${file}: field total_tokens is ${total_tokens}, but the shards hold ${tokens} tokens`);
  if (typeof m.complete !== 'boolean') fail('complete', 'a boolean', m.complete);
  return {
    schema_version,
    created_by: 'specforge',
    target,
    template,
    aux_layer_ids,
    dtype,
    max_length,
    samples_per_shard,
    source,
    shards,
    total_samples,
    total_tokens,
    complete: m.complete as boolean,
  };
}

function show(v: unknown): string {
  const s = JSON.stringify(v);
  return s.length > 80 ? s.slice(0, 77) + '...' : s;
}

type Pair = [field: string, have: unknown, want: unknown, haveNote?: string, wantNote?: string];

function mismatches(pairs: Pair[]): string[] {
  return pairs
    .filter(([, a, b]) => JSON.stringify(a) !== JSON.stringify(b))
    .map(([k, a, b, na, nb]) => `${k}: store has ${show(a)}${na ? ` (${na})` : ''}, expected ${show(b)}${nb ? ` (${nb})` : ''}`);
}

/** The fields of what a store was captured from (the data's hash is shown with the files' names). */
function sourcePairs(have: StoreSource, want: StoreSource): Pair[] {
  return [
    ['source.data_sha256', have.data_sha256, want.data_sha256, have.data_files.join(', '), want.data_files.join(', ')],
    ['source.format', have.format, want.format],
    ['source.skip_invalid', have.skip_invalid, want.skip_invalid],
    ['source.limit', have.limit, want.limit],
    ['source.answer_extractor', have.answer_extractor, want.answer_extractor],
    ['source.regenerate', have.regenerate, want.regenerate],
  ];
}

function expectationPairs(m: StoreManifest | StoreMeta, e: StoreExpectation): Pair[] {
  return [
    ['target.config_sha256', m.target.config_sha256, e.config_sha256],
    ['target.weights_sha256', m.target.weights_sha256, e.weights_sha256],
    ['target.tokenizer_sha256', m.target.tokenizer_sha256, e.tokenizer_sha256],
    ['template', m.template, e.template],
    ['aux_layer_ids', m.aux_layer_ids, e.aux_layer_ids],
    ['max_length', m.max_length, e.max_length],
    ...sourcePairs(m.source, e.source),
  ];
}

/** Every field in which a store differs from what a recipe expects of it (empty when it matches). */
export function expectationMismatches(manifest: StoreManifest, expected: StoreExpectation): string[] {
  return mismatches(expectationPairs(manifest, expected));
}

/** The error for a store that does not match: the differing fields, one a line. */
export function mismatchError(where: string, bad: string[]): StoreError {
  return new StoreError(
    `${where} does not match the recipe (${bad.length} field${bad.length > 1 ? 's' : ''}); recapture it (delete it or set another data.store) or fix the recipe:\n  ${bad.join('\n  ')}`,
  );
}

/** Throws if the store was not captured for this recipe (other target, tokenizer, template, aux layers, length or data). */
export function checkCompatible(manifest: StoreManifest, expected: StoreExpectation, where = 'store'): void {
  const bad = expectationMismatches(manifest, expected);
  if (bad.length) throw mismatchError(where, bad);
}

/** Differences between the meta a store was created with and the meta a writer reopens it with. */
export function metaMismatches(have: StoreMeta, want: StoreMeta): string[] {
  return mismatches([
    ['schema_version', have.schema_version, want.schema_version],
    ['target.architecture', have.target.architecture, want.target.architecture],
    ['target.hidden_size', have.target.hidden_size, want.target.hidden_size],
    ['target.vocab_size', have.target.vocab_size, want.target.vocab_size],
    ['target.config_sha256', have.target.config_sha256, want.target.config_sha256],
    ['target.weights_sha256', have.target.weights_sha256, want.target.weights_sha256],
    ['target.tokenizer_sha256', have.target.tokenizer_sha256, want.target.tokenizer_sha256],
    ['template', have.template, want.template],
    ['aux_layer_ids', have.aux_layer_ids, want.aux_layer_ids],
    ['dtype', have.dtype, want.dtype],
    ['max_length', have.max_length, want.max_length],
    ['samples_per_shard', have.samples_per_shard, want.samples_per_shard],
    ...sourcePairs(have.source, want.source),
  ]);
}

/**
 * Whether a complete store can be extended to `want`: it differs only in a larger source.limit (or none),
 * so its samples are the first ones of the larger selection (same data, same order, same settings).
 */
export function extendsLimit(have: StoreMeta, want: StoreMeta): boolean {
  return limitGrows(have.source.limit, want.source.limit) && metaMismatches(have, withLimit(want, have.source.limit)).length === 0;
}

/** Whether a selection of the first `want` samples (null: all) holds more than one of the first `have`. */
export function limitGrows(have: number | null, want: number | null): boolean {
  return have !== null && (want === null || want > have);
}

/** `x` with another source.limit. */
export function withLimit<T extends { source: StoreSource }>(x: T, limit: number | null): T {
  return { ...x, source: { ...x.source, limit } };
}
