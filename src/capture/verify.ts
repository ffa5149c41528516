// `specforge capture --verify`: checks a recipe's store without the target: each split's manifest against
// the recipe (target, template, layers, length, data and sample selection), the shard files against the
// manifest (sizes, none unlisted), then every byte once (each column chunk's and each row's checksum,
// token ids, finite features) and the train split's draft vocabulary. Every problem found is reported.
import fs from 'node:fs';
import path from 'node:path';
import { loadDraftVocab } from '../data/draft-vocab.ts';
import { recipeStoreIdentity } from '../data/train-files.ts';
import { storeVocabFile } from '../data/training-vocab.ts';
import { loadModelConfig } from '../io/hf-config.ts';
import type { Recipe } from '../recipe/recipe.ts';
import { resolveAuxLayers } from '../store/identity.ts';
import { MANIFEST_FILE, StoreError } from '../store/manifest.ts';
import { ArrowStore } from '../store/reader.ts';
import { progress } from '../util/progress.ts';

/** Verifies every split of the recipe's store; throws one error listing every problem found. */
export async function verifyRecipeStore(r: Recipe, log: (m: string) => void): Promise<void> {
  const aux = resolveAuxLayers(r.model.aux_layer_ids, loadModelConfig(r.model.target).numLayers);
  const splits: ('train' | 'eval')[] = r.data.eval ? ['train', 'eval'] : ['train'];
  const problems: string[] = [];
  for (const split of splits) {
    const dir = path.join(r.data.store, split);
    if (!fs.existsSync(path.join(dir, MANIFEST_FILE))) {
      problems.push(`${dir}: not captured (no ${MANIFEST_FILE}); run specforge capture`);
      continue;
    }
    let store: ArrowStore;
    try {
      store = await ArrowStore.open(dir, recipeStoreIdentity(r, split, aux));
    } catch (e) {
      problems.push((e as Error).message);
      continue;
    }
    const shards = store.manifest.shards.length;
    const bar = progress(`verify ${split}`, shards, 'shard');
    const found = await store.verify((done) => bar.update(done));
    bar.stop();
    await store.close();
    if (split === 'train') {
      try {
        loadDraftVocab(storeVocabFile(dir));
      } catch (e) {
        found.push((e as Error).message);
      }
    }
    problems.push(...found);
    log(
      `${split}: ${store.size} samples in ${shards} shards of ${dir}: ` +
        (found.length
          ? `${found.length} problem${found.length > 1 ? 's' : ''}`
          : 'every row and column checksum, token id and feature checked; sound'),
    );
  }
  if (problems.length) throw new StoreError(`store ${r.data.store} failed verification:\n  ${problems.join('\n  ')}`);
}
