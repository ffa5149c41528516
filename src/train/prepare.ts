// What `specforge train` does before the ranks start, so that they only read what is on disk: offline,
// capture the splits the store lacks (a finished split is reused); online with data.regenerate,
// regenerate the training data (a finished file is reused).
import fs from 'node:fs';
import path from 'node:path';
import { initBackend } from '../backend/backend.ts';
import { ensureRegenerated } from '../capture/regenerate.ts';
import { runCapture } from '../capture/run.ts';
import { loadTokenizer } from '../io/tokenizer.ts';
import type { Recipe } from '../recipe/recipe.ts';
import { MANIFEST_FILE, readManifest } from '../store/manifest.ts';
import { loadRecipeTarget } from '../target/load.ts';

/** Whether a store split's capture finished. */
function storeComplete(dir: string): boolean {
  return fs.existsSync(path.join(dir, MANIFEST_FILE)) && readManifest(dir).complete;
}

/** Makes what the ranks of `r` read exist: the captured store (offline) or the regenerated data (online). */
export async function prepareTraining(r: Recipe, log: (m: string) => void): Promise<void> {
  if (r.training.mode === 'offline') {
    const missing = ['train', ...(r.data.eval ? ['eval'] : [])].filter((s) => !storeComplete(path.join(r.data.store, s)));
    if (missing.length) {
      log(`store ${r.data.store} has no complete ${missing.join(' and ')} split: capturing first`);
      await initBackend(r.runtime.backend, log);
      await runCapture(r, log);
    }
  } else if (r.data.regenerate) {
    // Online training reads the regenerated conversations: write them first.
    await initBackend(r.runtime.backend, log);
    const tok = loadTokenizer(r.model.target);
    const model = await loadRecipeTarget(r, { log });
    try {
      await ensureRegenerated(r, model, tok, log);
    } finally {
      model.dispose();
    }
  }
}
