// The training data of a recipe as feature sources, with the draft vocabulary. Offline: the Arrow store's
// train split (and eval split when captured) and the vocabulary captured beside them. Online: the target
// itself over the tokenised conversations (trainFiles), the vocabulary built from them as capture builds
// it, and with training.online_store a store written during the first epoch and read in later ones.
import fs from 'node:fs';
import path from 'node:path';
import { type DatasetFormat, readConversations } from '../data/datasets.ts';
import { type DraftVocab, loadDraftVocab, saveDraftVocab, TokenCounter } from '../data/draft-vocab.ts';
import { type TemplateName, tokenizeConversation } from '../data/templates.ts';
import { recipeStoreIdentity, trainFiles } from '../data/train-files.ts';
import { storeVocabFile, trainingDraftVocab } from '../data/training-vocab.ts';
import type { ModelConfig } from '../io/hf-config.ts';
import type { Tokenizer } from '../io/tokenizer.ts';
import type { Collective } from '../parallel/collective.ts';
import type { Recipe } from '../recipe/recipe.ts';
import type { TokenizedSample } from '../capture/features.ts';
import type { FeatureSource } from '../store/feature-source.ts';
import { storeMeta } from '../store/identity.ts';
import { MANIFEST_FILE } from '../store/manifest.ts';
import { ArrowStore } from '../store/reader.ts';
import { loadRecipeTarget } from '../target/load.ts';
import type { TargetModel } from '../target/runtime.ts';
import { OnlineFeatures, type OnlineStoreOptions } from './online-source.ts';

export interface TrainingData {
  train: FeatureSource;
  /** The held-out split, when the recipe has one (offline: when it was captured). */
  eval: FeatureSource | null;
  vocab: DraftVocab;
  /** Frees the target (online) and closes the sources. */
  close(): Promise<void>;
}

/** What the sources need of the target: its config, the aux layers the draft reads, its tokenizer. */
export interface TargetInfo {
  config: ModelConfig;
  aux: number[];
  tok: Tokenizer;
}

export async function openSources(r: Recipe, target: TargetInfo, collective: Collective, log: (m: string) => void): Promise<TrainingData> {
  const trainDir = path.join(r.data.store, 'train');
  const evalDir = path.join(r.data.store, 'eval');
  if (r.training.mode === 'offline') {
    const train = await ArrowStore.open(trainDir, recipeStoreIdentity(r, 'train', target.aux));
    const vocab = loadDraftVocab(storeVocabFile(trainDir));
    const evalSource =
      r.data.eval && fs.existsSync(path.join(evalDir, MANIFEST_FILE))
        ? await ArrowStore.open(evalDir, recipeStoreIdentity(r, 'eval', target.aux))
        : null;
    return sources(train, emptyRefused(evalSource, r, evalDir), vocab, null);
  }

  const model = await loadRecipeTarget(r, { ranks: collective.worldSize, log });
  const data = trainFiles(r);
  const samples = await tokenized(r, target.tok, data.files, data.format, r.capture.limit);
  const counter = new TokenCounter(target.config.vocabSize);
  for (const s of samples) counter.add(s.ids, s.lossMask);
  // Rank 0 builds and caches the vocabulary; the other ranks then read the cache (several ranks writing
  // the same cache file at once would race).
  const build = async () => (await trainingDraftVocab(r, data.files, counter, target.tok, target.config.eosTokenIds)).vocab;
  const first = collective.rank === 0 ? await build() : null;
  collective.barrier();
  const vocab = first ?? (await build());
  const identity = recipeStoreIdentity(r, 'train', target.aux);
  const store: OnlineStoreOptions | null = r.training.online_store
    ? {
        dir: trainDir,
        meta: storeMeta(target.config, identity, r.capture.dtype, r.capture.samples_per_shard),
        identity,
        collective,
        seed: r.runtime.seed,
        batchSize: r.capture.batch_size,
        // The store then serves a later offline training as a captured one would.
        onComplete: () => saveDraftVocab(storeVocabFile(trainDir), vocab),
        log,
      }
    : null;
  const extractor = r.data.answer_extractor;
  const train = new OnlineFeatures(model, target.tok, samples, target.aux, extractor, store);
  const evalSource = r.data.eval
    ? new OnlineFeatures(
        model,
        target.tok,
        await tokenized(r, target.tok, r.data.eval, r.data.format as DatasetFormat, r.training.eval_samples),
        target.aux,
        extractor,
      )
    : null;
  return sources(train, emptyRefused(evalSource, r, null), vocab, model);
}

/** A held-out split without a sample would report accuracy 0 on 0 samples at every evaluation: refused, naming its files. */
function emptyRefused(evalSource: FeatureSource | null, r: Recipe, storeDir: string | null): FeatureSource | null {
  if (evalSource && evalSource.size === 0)
    throw new Error(
      `${r.file}: data.eval (${r.data.eval!.join(', ')}) gives no held-out sample${storeDir ? ` (its store split ${storeDir} holds none)` : ''}; give it conversations, or remove data.eval`,
    );
  return evalSource;
}

function sources(train: FeatureSource, evalSource: FeatureSource | null, vocab: DraftVocab, model: TargetModel | null): TrainingData {
  return {
    train,
    eval: evalSource,
    vocab,
    close: async () => {
      model?.dispose();
      for (const src of [train, evalSource]) await src?.close();
    },
  };
}

/** The first `limit` conversations of `files` through the chat template (online training tokenises them itself). */
async function tokenized(
  r: Recipe,
  tok: Tokenizer,
  files: string[],
  format: DatasetFormat,
  limit: number | null,
): Promise<TokenizedSample[]> {
  const out: TokenizedSample[] = [];
  for (const f of files) {
    for await (const c of readConversations(f, { format, skipInvalid: r.data.skip_invalid }).conversations) {
      if (limit !== null && out.length >= limit) break;
      const x = tokenizeConversation(c.messages, tok, { template: r.data.template as TemplateName, maxLength: r.data.max_length });
      out.push({ id: c.id, ids: x.ids, lossMask: x.lossMask });
    }
  }
  return out;
}
