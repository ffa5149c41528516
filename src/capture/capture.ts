// `specforge capture`: runs the target over a dataset and stores, per sample, the auxiliary hidden
// states, the final normed hidden state (the teacher is rebuilt from it with the target's lm_head at
// train time) and the thinking-span raw material of SpecExit labels, in Arrow shards. Resumable: shards
// are the unit of work, and a rerun skips every finished shard; several ranks capture disjoint shards.
import type { AnswerExtractor } from '../data/answers.ts';
import { type Conversation, countDataLines, readConversations } from '../data/datasets.ts';
import { TokenCounter } from '../data/draft-vocab.ts';
import { type TemplateName, tokenizeConversation } from '../data/templates.ts';
import type { Tokenizer } from '../io/tokenizer.ts';
import { type Collective, SoloCollective } from '../parallel/collective.ts';
import { readManifest, type StoreSource } from '../store/manifest.ts';
import { RankStoreWriter } from '../store/rank-writer.ts';
import { resolveAuxLayers, storeIdentity, storeMeta, storeState } from '../store/identity.ts';
import type { EncodedRow } from '../store/shard-file.ts';
import type { TargetModel } from '../target/runtime.ts';
import { progress } from '../util/progress.ts';
import { computeFeatures, type TokenizedSample } from './features.ts';

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
  /** What the split is captured from (storeSource): recorded in the store and checked against it. */
  source: StoreSource;
  label: string;
  log: (msg: string) => void;
  /** The ranks capturing together (default: this one alone). */
  collective?: Collective;
}

export interface CaptureResult {
  storeDir: string;
  samples: number;
  /** Tokens in the whole store (for bytes per token). */
  storeTokens: number;
  /** Samples and tokens captured by this run (all ranks), and its wall time. */
  captured: number;
  tokens: number;
  seconds: number;
  bytes: number;
  invalidLines: number;
  counter: TokenCounter;
}

/**
 * Captures a split into `o.storeDir`. With several ranks (`o.collective`), every rank streams the whole
 * data set and captures the shards it owns: shard j (samples [jS, (j+1)S) in data-set order) belongs to
 * rank j mod N. Batches never cross a shard boundary, so a shard's bytes do not depend on N or on
 * where a resumed run started: the store equals the one a single rank writes, shard for shard. Rank 0
 * counts every sample's tokens (the draft vocabulary), keeps the manifest and finishes the store.
 */
export async function captureSplit(model: TargetModel, tok: Tokenizer, o: CaptureOptions): Promise<CaptureResult> {
  const collective = o.collective ?? new SoloCollective();
  const { rank, worldSize } = collective;
  const c = model.config;
  const aux = resolveAuxLayers(o.auxLayerIds, c.numLayers);
  const identity = storeIdentity(o.targetDir, o.template, aux, o.maxLength, o.source);
  const counter = new TokenCounter(c.vocabSize);
  const S = o.samplesPerShard;
  const meta = storeMeta(c, identity, o.dtype, S);
  const total = Math.min(o.limit ?? Infinity, await countDataLines(o.files));

  // A finished store of this source is reused as is (its token counts still feed the draft vocabulary);
  // one of other data or settings is refused, naming the fields; a raised capture.limit extends it.
  const state = storeState(o.storeDir, identity);
  const complete = state === 'complete';
  collective.barrier(); // every rank has looked before rank 0 touches the manifest
  let writer: RankStoreWriter | null = null;
  if (complete) {
    if (rank === 0) o.log(`${o.label}: ${o.storeDir} is complete; nothing to capture`);
  } else if (rank === 0) {
    const before = state === 'extend' ? readManifest(o.storeDir) : null;
    writer = await RankStoreWriter.open(o.storeDir, meta, 0, { extend: true });
    if (before)
      o.log(
        `${o.label}: capture.limit raised from ${before.source.limit} to ${o.limit ?? 'all'}: ${o.storeDir} keeps its ${writer.current.total_samples} samples in full shards and captures the rest`,
      );
    else {
      // Ranks finish shards out of order, so finished shards can lie past the manifest's run from shard 0.
      const kept = await keptSamples(writer, total, S);
      if (kept > 0) o.log(`${o.label}: resuming; ${kept} samples are in finished shards`);
    }
  }
  collective.barrier();
  if (!complete && rank !== 0) writer = await RankStoreWriter.open(o.storeDir, meta, rank);

  const bar = rank === 0 ? progress(`capture ${o.label}`, total, 'sample', { start: 0 }) : null;
  let index = 0;
  let tokens = 0;
  let captured = 0;
  let invalid = 0;
  let batch: TokenizedSample[] = [];
  let shardRows: EncodedRow[] = [];
  let skipShard = true; // this rank does not capture the current shard (another rank's, or finished)
  const t0 = Date.now();

  const flush = () => {
    if (batch.length === 0) return;
    for (const f of computeFeatures(model, tok, batch, aux, o.answerExtractor))
      shardRows.push(writer!.encode(f, Math.floor(index / S) * S + shardRows.length));
    batch = [];
  };
  const writeShard = async (j: number) => {
    flush();
    if (shardRows.length) await writer!.write(j, j * S, shardRows);
    shardRows = [];
  };

  for (const file of o.files) {
    const reader = readConversations(file, { format: o.format, skipInvalid: o.skipInvalid });
    for await (const conv of reader.conversations as AsyncGenerator<Conversation>) {
      if (index >= total) break;
      const j = Math.floor(index / S);
      if (index % S === 0) {
        // A full finished shard is kept; the last, partial one is always recaptured (the data may have grown).
        const info = writer && j % worldSize === rank ? await writer.info(j) : null;
        skipShard = !writer || j % worldSize !== rank || (info !== null && info.samples === S && info.firstSample === j * S);
      }
      if (rank === 0 || !skipShard) {
        const t = tokenizeConversation(conv.messages, tok, { template: o.template, maxLength: o.maxLength });
        if (rank === 0) counter.add(t.ids, t.lossMask);
        if (!skipShard) {
          batch.push({ id: conv.id, ids: t.ids, lossMask: t.lossMask });
          tokens += t.ids.length;
          captured++;
          if (batch.length === o.batchSize) flush();
          if ((index + 1) % S === 0) await writeShard(j);
        }
      }
      index++;
      bar?.update(index, { 'tok/s': Math.round(tokens / Math.max((Date.now() - t0) / 1000, 1e-3)) });
    }
    invalid += reader.stats.skipped;
    if (rank === 0) for (const e of reader.stats.firstErrors) o.log(`  skipped ${e}`);
    if (index >= total) break;
  }
  if (!skipShard) await writeShard(Math.floor((index - 1) / S));
  bar?.stop();
  // Throughput over all ranks: every rank's captured samples and tokens.
  const sums = Float32Array.of(captured, tokens);
  collective.allReduceSum(sums);
  collective.barrier(); // every shard is on disk
  if (rank === 0 && writer) await writer.finish(Math.ceil(index / S), index);
  collective.barrier();
  const seconds = (Date.now() - t0) / 1000;
  const m = readManifest(o.storeDir);
  const bytes = m.shards.reduce((a, s) => a + s.bytes, 0);
  return {
    storeDir: o.storeDir,
    samples: m.total_samples,
    storeTokens: m.total_tokens,
    captured: sums[0],
    tokens: sums[1],
    seconds,
    bytes,
    invalidLines: invalid,
    counter,
  };
}

/** Samples in the full finished shards a resumed capture keeps (the rule the capture loop skips them by). */
async function keptSamples(writer: RankStoreWriter, total: number, S: number): Promise<number> {
  let kept = 0;
  for (let j = 0; j * S < total; j++) {
    const info = await writer.info(j);
    if (info !== null && info.samples === S && info.firstSample === j * S) kept += S;
  }
  return kept;
}
