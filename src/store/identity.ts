// What identifies a store: the target (config, weights and tokenizer fingerprints), template, aux layers
// and length it was captured with, and its source (the data's content hash and the settings that select
// or change samples). Capture writes it into a store's manifest, and training (offline, or online keeping
// a store) checks a store against it; storeState says what a store folder needs before training.
import fs from 'node:fs';
import path from 'node:path';
import { defaultAuxLayers, type ModelConfig } from '../io/hf-config.ts';
import { configSha256, tokenizerSha256, weightsSha256 } from './fingerprint.ts';
import {
  expectationMismatches,
  limitGrows,
  MANIFEST_FILE,
  mismatchError,
  readManifest,
  type StoreExpectation,
  type StoreSource,
  withLimit,
} from './manifest.ts';
import type { StoreMetaInput } from './shard-file.ts';

/** The aux layers a recipe asks for, checked against the target's depth. */
export function resolveAuxLayers(requested: number[] | null, numLayers: number): number[] {
  const ids = requested ?? defaultAuxLayers(numLayers);
  if (new Set(ids).size !== ids.length)
    throw new Error(
      `aux layer ids ${JSON.stringify(ids)} repeat a layer (a target with ${numLayers} layers is too shallow for the default)`,
    );
  for (const l of ids) if (l < 0 || l >= numLayers) throw new Error(`aux layer id ${l} is outside the target's layers [0, ${numLayers})`);
  return ids;
}

/** What a store captured from this target, tokenizer, template and source must carry (also what training checks). */
export function storeIdentity(
  targetDir: string,
  template: string,
  auxLayerIds: number[],
  maxLength: number,
  source: StoreSource,
): StoreExpectation {
  return {
    config_sha256: configSha256(targetDir),
    weights_sha256: weightsSha256(targetDir),
    tokenizer_sha256: tokenizerSha256(targetDir),
    template,
    aux_layer_ids: auxLayerIds,
    max_length: maxLength,
    source,
  };
}

/**
 * What a store folder needs before training reads it: nothing ('complete'), a capture ('missing'), a
 * resumed capture ('incomplete': the resume checks its settings), or the samples a raised capture.limit
 * adds ('extend'). A complete store captured from anything else is refused, naming the differing fields.
 */
export type StoreState = 'missing' | 'incomplete' | 'complete' | 'extend';

export function storeState(dir: string, expected: StoreExpectation): StoreState {
  if (!fs.existsSync(path.join(dir, MANIFEST_FILE))) return 'missing';
  const m = readManifest(dir);
  if (!m.complete) return 'incomplete';
  const bad = expectationMismatches(m, expected);
  if (bad.length === 0) return 'complete';
  if (limitGrows(m.source.limit, expected.source.limit) && expectationMismatches(m, withLimit(expected, m.source.limit)).length === 0)
    return 'extend';
  throw mismatchError(`store ${dir}`, bad);
}

/** The meta of a store of this target's features (what capture and online training write). */
export function storeMeta(
  c: ModelConfig,
  identity: StoreExpectation,
  dtype: 'float16' | 'float32',
  samplesPerShard: number,
): StoreMetaInput {
  return {
    target: {
      architecture: c.architecture,
      hidden_size: c.hiddenSize,
      vocab_size: c.vocabSize,
      config_sha256: identity.config_sha256,
      weights_sha256: identity.weights_sha256,
      tokenizer_sha256: identity.tokenizer_sha256,
    },
    template: identity.template,
    aux_layer_ids: identity.aux_layer_ids,
    dtype,
    max_length: identity.max_length,
    samples_per_shard: samplesPerShard,
    source: identity.source,
  };
}
