// Which data files a recipe trains on: data.train itself, or its regeneration by the target
// (data.regenerate, see capture/regenerate.ts). The regenerated file's name carries a key of every setting
// it depends on, and its progress file says whether it is finished; both are decided here, so that
// regeneration, capture and online training agree on them without importing each other. So is the
// source a store split records (storeSource: the data's content and what selects or changes samples).
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import type { Recipe } from '../recipe/recipe.ts';
import { configSha256, contentSha256, dataSha256, tokenizerSha256, weightsSha256 } from '../store/fingerprint.ts';
import { storeIdentity } from '../store/identity.ts';
import type { StoreExpectation, StoreSource } from '../store/manifest.ts';
import type { DatasetFormat } from './datasets.ts';
import type { TemplateName } from './templates.ts';

export interface RegenerateOptions {
  targetDir: string;
  files: string[];
  format: DatasetFormat;
  skipInvalid: boolean;
  /** Regenerate at most this many conversations. */
  limit: number | null;
  template: TemplateName;
  /** A turn whose prompt already has this many tokens is dropped with the turns after it (capture would cut them). */
  maxLength: number;
  batchSize: number;
  maxNewTokens: number;
  /** 0 is greedy. */
  temperature: number;
  topP: number;
  seed: number;
  out: string;
  log: (msg: string) => void;
}

export class RegenerateError extends Error {}

/** Everything the output depends on; a resume or reuse with another key is refused. */
export function regenerateKey(
  o: Pick<
    RegenerateOptions,
    'targetDir' | 'files' | 'format' | 'limit' | 'template' | 'maxLength' | 'batchSize' | 'maxNewTokens' | 'temperature' | 'topP' | 'seed'
  >,
): string {
  const settings = {
    target: [configSha256(o.targetDir), weightsSha256(o.targetDir), tokenizerSha256(o.targetDir)],
    data: dataSha256(o.files),
    format: o.format,
    limit: o.limit,
    template: o.template,
    max_length: o.maxLength,
    ...regenerateSettings(o),
  };
  return crypto.createHash('sha256').update(JSON.stringify(settings)).digest('hex');
}

/** The sampling settings a regeneration's answers depend on (beside target, data, template and length). */
export function regenerateSettings(
  o: Pick<RegenerateOptions, 'batchSize' | 'maxNewTokens' | 'temperature' | 'topP' | 'seed'>,
): Record<string, number | null> {
  return {
    // The batch shapes the padding, which may move float sums: part of the key, as in capture.
    batch_size: o.batchSize,
    max_new_tokens: o.maxNewTokens,
    temperature: o.temperature,
    // Greedy decoding ignores top-p and the seed.
    top_p: o.temperature > 0 ? o.topP : null,
    seed: o.temperature > 0 ? o.seed : null,
  };
}

/** The regeneration settings of a recipe (data.regenerate and the regenerate section). */
export function regenerateOptions(r: Recipe, log: (m: string) => void): RegenerateOptions {
  const g = r.regenerate;
  const base = {
    targetDir: r.model.target,
    files: r.data.train,
    format: r.data.format,
    skipInvalid: r.data.skip_invalid,
    limit: r.capture.limit,
    template: r.data.template,
    maxLength: r.data.max_length,
    batchSize: g.batch_size,
    maxNewTokens: g.max_new_tokens,
    temperature: g.temperature,
    topP: g.top_p,
    seed: g.seed ?? r.runtime.seed,
    log,
  };
  const out = g.output ?? path.join(r.data.cache_dir, 'regenerated', `train-${regenerateKey(base).slice(0, 16)}.jsonl`);
  return { ...base, out };
}

/** `<out>.progress.json`: how far a regeneration into `<out>` got, under the key of its settings. */
export interface RegenerateProgress {
  key: string;
  /** Input conversations done (a multiple of the batch size until the end). */
  done: number;
  /** Bytes of `<out>.partial` that hold them. */
  bytes: number;
  complete: boolean;
}

export const progressFile = (out: string) => `${out}.progress.json`;
export const partialFile = (out: string) => `${out}.partial`;

/** The progress of a regeneration into `out`, or null when none started; an unreadable progress file is an error. */
export function readProgress(out: string): RegenerateProgress | null {
  const f = progressFile(out);
  if (!fs.existsSync(f)) return null;
  try {
    const p = JSON.parse(fs.readFileSync(f, 'utf8')) as RegenerateProgress;
    if (typeof p.key === 'string' && Number.isInteger(p.done) && Number.isInteger(p.bytes) && typeof p.complete === 'boolean') return p;
  } catch {
    // fall through
  }
  throw new RegenerateError(`${f}: not a regeneration progress file; delete it (and ${partialFile(out)}) to start over`);
}

/** The training files a recipe reads: data.train, or its finished regeneration. */
export function trainFiles(r: Recipe): { files: string[]; format: DatasetFormat } {
  if (!r.data.regenerate) return { files: r.data.train, format: r.data.format as DatasetFormat };
  const o = regenerateOptions(r, () => {});
  if (!fs.existsSync(o.out) || !readProgress(o.out)?.complete)
    throw new RegenerateError(`${o.out}: the regenerated training data is not finished; run specforge capture --regenerate first`);
  return { files: [o.out], format: 'sharegpt' };
}

/**
 * What a store split of the recipe is captured from: the data's content hash and the settings that select
 * samples (format, skip_invalid, capture.limit for the train split) or change what is stored for them
 * (answer extractor, regeneration). With data.regenerate the regenerated answers follow from data.train
 * and these settings, so the source is known before (and without) the regenerated file.
 */
export function storeSource(r: Recipe, split: 'train' | 'eval'): StoreSource {
  const files = split === 'train' ? r.data.train : r.data.eval;
  if (!files) throw new Error(`the recipe has no data.${split}`);
  return {
    data_sha256: contentSha256(files),
    data_files: files.map((f) => path.basename(f)),
    format: r.data.format,
    skip_invalid: r.data.skip_invalid,
    limit: split === 'train' ? r.capture.limit : null,
    answer_extractor: r.data.answer_extractor,
    regenerate:
      split === 'train' && r.data.regenerate
        ? regenerateSettings({
            batchSize: r.regenerate.batch_size,
            maxNewTokens: r.regenerate.max_new_tokens,
            temperature: r.regenerate.temperature,
            topP: r.regenerate.top_p,
            seed: r.regenerate.seed ?? r.runtime.seed,
          })
        : null,
  };
}

/** What the recipe's store split must carry (storeIdentity of the recipe's target, template, length and source). */
export function recipeStoreIdentity(r: Recipe, split: 'train' | 'eval', auxLayerIds: number[]): StoreExpectation {
  return storeIdentity(r.model.target, r.data.template, auxLayerIds, r.data.max_length, storeSource(r, split));
}
