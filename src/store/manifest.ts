// manifest.json of a hidden-state store: what was captured (target, template, aux layers, dtype) and
// which shards are finished. It is rewritten atomically after every shard, so it only ever lists
// shards that are complete on disk; `complete: true` marks a finished capture.
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

export interface ShardEntry {
  /** File name inside the store folder, e.g. shard-00000.arrow. */
  file: string;
  samples: number;
  tokens: number;
  bytes: number;
  /** Index of the shard's first sample in the store's sample order. */
  first_sample: number;
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
}

export class StoreError extends Error {}

export function shardFileName(i: number): string {
  return `shard-${String(i).padStart(5, '0')}.arrow`;
}

/** Writes manifest.json atomically, validated and with its keys in canonical order (so equal stores have equal bytes). */
export function writeManifest(dir: string, m: StoreManifest): void {
  const file = path.join(dir, MANIFEST_FILE);
  const canonical = validateManifest(JSON.parse(JSON.stringify(m)), file);
  writeAtomic(file, [JSON.stringify(canonical, null, 2) + '\n']);
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
  if (schema_version !== SCHEMA_VERSION)
    throw new StoreError(`${file}: field schema_version is ${schema_version}; this specforge reads version ${SCHEMA_VERSION}`);
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
    };
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

function mismatches(pairs: [string, unknown, unknown][]): string[] {
  return pairs
    .filter(([, a, b]) => JSON.stringify(a) !== JSON.stringify(b))
    .map(([k, a, b]) => `${k}: store has ${show(a)}, expected ${show(b)}`);
}

/** Throws if the store was not captured for this recipe (other target, tokenizer, template, aux layers or length). */
export function checkCompatible(manifest: StoreManifest, expected: StoreExpectation, where = 'store'): void {
  const bad = mismatches([
    ['target.config_sha256', manifest.target.config_sha256, expected.config_sha256],
    ['target.weights_sha256', manifest.target.weights_sha256, expected.weights_sha256],
    ['target.tokenizer_sha256', manifest.target.tokenizer_sha256, expected.tokenizer_sha256],
    ['template', manifest.template, expected.template],
    ['aux_layer_ids', manifest.aux_layer_ids, expected.aux_layer_ids],
    ['max_length', manifest.max_length, expected.max_length],
  ]);
  if (bad.length)
    throw new StoreError(
      `${where} does not match the recipe (${bad.length} field${bad.length > 1 ? 's' : ''}); recapture it or fix the recipe:\n  ${bad.join('\n  ')}`,
    );
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
  ]);
}
