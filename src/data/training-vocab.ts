// The draft vocabulary of a recipe's training data: the one build that capture and online training both
// use, cached under one key of everything it depends on (so whichever runs first, the other reuses it).
import fs from 'node:fs';
import path from 'node:path';
import type { Tokenizer } from '../io/tokenizer.ts';
import type { Recipe } from '../recipe/recipe.ts';
import { dataSha256, tokenizerSha256 } from '../store/fingerprint.ts';
import { buildDraftVocab, cachedDraftVocab, type DraftVocab, loadDraftVocab, type TokenCounter } from './draft-vocab.ts';
import { endOfTurnIds, type TemplateName } from './templates.ts';

/** The copy kept beside a store's train split, which offline training loads. */
export function storeVocabFile(storeDir: string): string {
  return path.join(storeDir, 'draft-vocab.safetensors');
}

/**
 * Why the copy beside a store's train split must be built for the recipe, or null when it is the
 * recipe's: it is missing, or model.draft_vocab_size changed (it is rebuilt from the same data: the store
 * was checked against the recipe's). Capture otherwise leaves it alone, so it is never written anew
 * under features it did not come with.
 */
export function storeVocabNeed(r: Recipe, storeDir: string, targetVocabSize: number): string | null {
  const file = storeVocabFile(storeDir);
  if (!fs.existsSync(file)) return `${file} is missing`;
  const want = Math.min(r.model.draft_vocab_size, targetVocabSize);
  const have = loadDraftVocab(file).used.length;
  return have === want ? null : `${file} holds ${have} tokens, model.draft_vocab_size asks for ${want}`;
}

/**
 * The draft vocabulary of the training data `files` (trainFiles(r)), whose loss-masked tokens `counter`
 * holds: model.draft_vocab_size ids plus the template's end-of-turn and the target's eos ids.
 */
export async function trainingDraftVocab(
  r: Recipe,
  files: string[],
  counter: TokenCounter,
  tok: Tokenizer,
  eosIds: number[],
): Promise<{ vocab: DraftVocab; cached: boolean }> {
  const template = r.data.template as TemplateName;
  const V = counter.counts.length;
  const size = Math.min(r.model.draft_vocab_size, V);
  const forced = [...new Set([...endOfTurnIds(tok, template), ...eosIds])].filter((i) => i < V);
  const { vocab, cached } = await cachedDraftVocab(
    r.data.cache_dir,
    {
      data: dataSha256(files),
      template,
      tokenizer: tokenizerSha256(r.model.target),
      max_length: r.data.max_length,
      size,
      limit: r.capture.limit ?? 'all',
    },
    async () => buildDraftVocab(counter, size, forced),
  );
  return { vocab, cached };
}
