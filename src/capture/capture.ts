// `specforge capture`: runs the target over a dataset and stores, per sample, the auxiliary hidden
// states, the final normed hidden state (the teacher is rebuilt from it with the target's lm_head at
// train time) and the thinking-span raw material of SpecExit labels, in Arrow shards. Resumable: shards
// are the unit of work, and a rerun skips the samples of every shard the manifest lists as finished.
import fs from 'node:fs';
import path from 'node:path';
import type { AnswerExtractor } from '../data/answers.ts';
import { type Conversation, readConversations } from '../data/datasets.ts';
import { buildDraftVocab, cachedDraftVocab, type DraftVocab, saveDraftVocab, TokenCounter } from '../data/draft-vocab.ts';
import { endOfTurnIds, type TemplateName, tokenizeConversation } from '../data/templates.ts';
import { defaultAuxLayers } from '../io/hf-config.ts';
import type { Tokenizer } from '../io/tokenizer.ts';
import { MANIFEST_FILE, readManifest, type StoreManifest } from '../store/manifest.ts';
import { StoreWriter } from '../store/writer.ts';
import type { TargetModel } from '../target/runtime.ts';
import { progress } from '../util/progress.ts';
import { computeFeatures, type TokenizedSample } from './features.ts';
import { configSha256, dataSha256, tokenizerSha256, weightsSha256 } from './fingerprint.ts';

export interface CaptureOptions {
  targetDir: string;
  files: string[];
  storeDir: string;
  format: 'auto' | 'sharegpt' | 'openai' | 'gsm8k';
  template: TemplateName;
  maxLength: number;
  skipInvalid: boolean;
  answerExtractor: AnswerExtractor;
  auxLayerIds: number[] | null;
  batchSize: number;
  dtype: 'float16' | 'float32';
  samplesPerShard: number;
  limit: number | null;
  label: string;
  log: (msg: string) => void;
}

export interface CaptureResult {
  storeDir: string;
  samples: number;
  /** Tokens in the whole store (for bytes per token). */
  storeTokens: number;
  skippedResumed: number;
  tokens: number;
  seconds: number;
  bytes: number;
  invalidLines: number;
  counter: TokenCounter;
}

/** The aux layers a recipe asks for, checked against the target's depth. */
export function resolveAuxLayers(requested: number[] | null, numLayers: number): number[] {
  const ids = requested ?? defaultAuxLayers(numLayers);
  if (new Set(ids).size !== ids.length) throw new Error(`aux layer ids ${JSON.stringify(ids)} repeat a layer (a target with ${numLayers} layers is too shallow for the default)`);
  for (const l of ids) if (l < 0 || l >= numLayers) throw new Error(`aux layer id ${l} is outside the target's layers [0, ${numLayers})`);
  return ids;
}

/** What a store captured from this target, tokenizer and template must carry (also what training checks). */
export function storeIdentity(targetDir: string, template: string, auxLayerIds: number[], maxLength: number) {
  return {
    config_sha256: configSha256(targetDir),
    weights_sha256: weightsSha256(targetDir),
    tokenizer_sha256: tokenizerSha256(targetDir),
    template,
    aux_layer_ids: auxLayerIds,
    max_length: maxLength,
  };
}

async function countLines(files: string[]): Promise<number> {
  let n = 0;
  for (const f of files) {
    const text = await fs.promises.readFile(f, 'utf8').catch(() => '');
    for (const line of text.split('\n')) if (line.trim()) n++;
  }
  return n;
}

export async function captureSplit(model: TargetModel, tok: Tokenizer, o: CaptureOptions): Promise<CaptureResult> {
  const c = model.config;
  const aux = resolveAuxLayers(o.auxLayerIds, c.numLayers);
  const identity = storeIdentity(o.targetDir, o.template, aux, o.maxLength);
  const counter = new TokenCounter(c.vocabSize);
  const manifestFile = path.join(o.storeDir, MANIFEST_FILE);
  let existing: StoreManifest | null = fs.existsSync(manifestFile) ? readManifest(o.storeDir) : null;
  const meta = {
    target: { architecture: c.architecture, hidden_size: c.hiddenSize, vocab_size: c.vocabSize, config_sha256: identity.config_sha256, weights_sha256: identity.weights_sha256, tokenizer_sha256: identity.tokenizer_sha256 },
    template: o.template,
    aux_layer_ids: aux,
    dtype: o.dtype,
    max_length: o.maxLength,
    samples_per_shard: o.samplesPerShard,
  };
  const total = Math.min(o.limit ?? Infinity, await countLines(o.files));

  // A finished store is reused as is (its token counts still feed the draft vocabulary).
  const writer = existing?.complete ? null : await StoreWriter.open(o.storeDir, meta);
  if (existing?.complete) {
    const { checkCompatible } = await import('../store/manifest.ts');
    checkCompatible(existing, identity, o.storeDir);
  }
  const skip = writer ? writer.completedSamples : Infinity;
  if (writer && skip > 0) o.log(`${o.label}: resuming; ${skip} samples are in finished shards`);
  if (!writer) o.log(`${o.label}: ${o.storeDir} is complete; nothing to capture`);

  const bar = progress(`capture ${o.label}`, total, 'sample', { start: Number.isFinite(skip) ? Math.min(skip, total) : total });
  let index = 0;
  let tokens = 0;
  let invalid = 0;
  let batch: TokenizedSample[] = [];
  const t0 = Date.now();

  const flush = async () => {
    if (batch.length === 0 || !writer) return;
    for (const sample of computeFeatures(model, tok, batch, aux, o.answerExtractor)) await writer.add(sample);
    batch = [];
  };

  for (const file of o.files) {
    const reader = readConversations(file, { format: o.format, skipInvalid: o.skipInvalid });
    for await (const conv of reader.conversations as AsyncGenerator<Conversation>) {
      if (index >= total) break;
      const t = tokenizeConversation(conv.messages, tok, { template: o.template, maxLength: o.maxLength });
      counter.add(t.ids, t.lossMask);
      if (index >= skip) {
        batch.push({ id: conv.id, ids: t.ids, lossMask: t.lossMask });
        tokens += t.ids.length;
        if (batch.length === o.batchSize) await flush();
        const seconds = (Date.now() - t0) / 1000;
        bar.update(index + 1, { 'tok/s': Math.round(tokens / Math.max(seconds, 1e-3)) });
      }
      index++;
    }
    invalid += reader.stats.skipped;
    for (const e of reader.stats.firstErrors) o.log(`  skipped ${e}`);
    if (index >= total) break;
  }
  await flush();
  if (writer) await writer.finish();
  bar.stop();
  const seconds = (Date.now() - t0) / 1000;
  existing = readManifest(o.storeDir);
  const bytes = existing.shards.reduce((a, s) => a + s.bytes, 0);
  return { storeDir: o.storeDir, samples: existing.total_samples, storeTokens: existing.total_tokens, skippedResumed: Number.isFinite(skip) ? skip : existing.total_samples, tokens, seconds, bytes, invalidLines: invalid, counter };
}

/** The draft vocabulary of the training data, cached under a hash of everything it depends on, and copied into the store. */
export async function draftVocabulary(counter: TokenCounter, o: { cacheDir: string; files: string[]; template: TemplateName; targetDir: string; maxLength: number; size: number; tok: Tokenizer; storeDir: string; eosIds: number[]; limit: number | null }): Promise<{ vocab: DraftVocab; cached: boolean }> {
  const size = Math.min(o.size, counter.counts.length);
  const forced = [...new Set([...endOfTurnIds(o.tok, o.template), ...o.eosIds])].filter((i) => i < counter.counts.length);
  const { vocab, cached } = await cachedDraftVocab(
    o.cacheDir,
    { data: dataSha256(o.files), template: o.template, tokenizer: tokenizerSha256(o.targetDir), max_length: o.maxLength, size, limit: o.limit ?? 'all' },
    async () => buildDraftVocab(counter, size, forced),
  );
  saveDraftVocab(path.join(o.storeDir, 'draft-vocab.safetensors'), vocab);
  return { vocab, cached };
}
