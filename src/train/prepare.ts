// What `specforge train` does before the ranks start, so that they only read what is on disk: offline,
// capture the splits the store lacks (a finished split of this recipe's data is reused, a raised
// capture.limit is captured on top of it, a split of other data or settings is refused, naming the
// fields); online with data.regenerate, regenerate the training data (a finished file is reused).
import path from 'node:path';
import { initBackend } from '../backend/backend.ts';
import { ensureRegenerated } from '../capture/regenerate.ts';
import { runCapture } from '../capture/run.ts';
import { recipeStoreIdentity } from '../data/train-files.ts';
import { storeVocabNeed } from '../data/training-vocab.ts';
import { loadModelConfig } from '../io/hf-config.ts';
import { onceForJob } from '../parallel/launch.ts';
import { loadTokenizer } from '../io/tokenizer.ts';
import type { Recipe } from '../recipe/recipe.ts';
import { resolveAuxLayers, storeState } from '../store/identity.ts';
import { loadRecipeTarget } from '../target/load.ts';

/** What a store split still needs before training reads it, or null when nothing (storeState; throws on a mismatch). */
function splitNeeds(r: Recipe, split: 'train' | 'eval', aux: number[], vocabSize: number): string | null {
  const dir = path.join(r.data.store, split);
  const state = storeState(dir, recipeStoreIdentity(r, split, aux));
  if (state === 'extend') return `more ${split} samples (capture.limit was raised)`;
  if (state !== 'complete') return `a complete ${split} split`;
  const vocab = split === 'train' ? storeVocabNeed(r, dir, vocabSize) : null;
  return vocab ? `its draft vocabulary (${vocab})` : null;
}

/**
 * Makes what the ranks of `r` read exist: the captured store (offline; every rank of an MPI job captures
 * its shards) or the regenerated data (online; once for the job).
 */
export async function prepareTraining(r: Recipe, log: (m: string) => void): Promise<void> {
  if (r.training.mode === 'offline') {
    // One look at the store for the whole job, so that every process takes the same way.
    const missing = await onceForJob(() => {
      const config = loadModelConfig(r.model.target);
      const aux = resolveAuxLayers(r.model.aux_layer_ids, config.numLayers);
      const splits: ('train' | 'eval')[] = r.data.eval ? ['train', 'eval'] : ['train'];
      return splits.map((s) => splitNeeds(r, s, aux, config.vocabSize)).filter((x) => x !== null);
    });
    if (missing.length) {
      log(`store ${r.data.store} needs ${missing.join(' and ')}: capturing first`);
      await initBackend(r.runtime.backend, log);
      await runCapture(r, log);
    }
  } else if (r.data.regenerate) {
    // Online training reads the regenerated conversations: write them first.
    await onceForJob(async () => {
      await initBackend(r.runtime.backend, log);
      const tok = loadTokenizer(r.model.target);
      const model = await loadRecipeTarget(r, { log });
      try {
        await ensureRegenerated(r, model, tok, log);
      } finally {
        model.dispose();
      }
    });
  }
}
