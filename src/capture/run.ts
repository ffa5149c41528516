// The capture job of a recipe: the train split (and the eval split when given) into <store>/train and
// <store>/eval, then the draft vocabulary of the train split.
import path from 'node:path';
import { loadTokenizer } from '../io/tokenizer.ts';
import type { Recipe } from '../recipe/recipe.ts';
import { TfjsTarget } from '../target/tfjs-target.ts';
import { captureSplit, draftVocabulary } from './capture.ts';

export async function runCapture(r: Recipe, log: (m: string) => void): Promise<void> {
  const tok = loadTokenizer(r.model.target);
  const model = TfjsTarget.load(r.model.target);
  try {
    const common = {
      targetDir: r.model.target,
      format: r.data.format as never,
      template: r.data.template as never,
      maxLength: r.data.max_length,
      skipInvalid: r.data.skip_invalid,
      answerExtractor: r.data.answer_extractor as never,
      auxLayerIds: r.model.aux_layer_ids,
      batchSize: r.capture.batch_size,
      dtype: r.capture.dtype as never,
      samplesPerShard: r.capture.samples_per_shard,
      log,
    };
    const splits = [{ label: 'train', files: r.data.train, limit: r.capture.limit }];
    if (r.data.eval) splits.push({ label: 'eval', files: r.data.eval, limit: null });
    for (const s of splits) {
      const res = await captureSplit(model, tok, { ...common, files: s.files, storeDir: path.join(r.data.store, s.label), limit: s.limit, label: s.label });
      const captured = res.samples - Math.min(res.skippedResumed, res.samples);
      log(
        `${s.label}: ${res.samples} samples in ${res.storeDir}` +
          (captured > 0 ? `; captured ${captured} samples, ${res.tokens} tokens in ${res.seconds.toFixed(1)} s (${(res.tokens / res.seconds).toFixed(0)} tok/s)` : '') +
          `; ${(res.bytes / 2 ** 20).toFixed(1)} MiB, ${(res.bytes / Math.max(1, res.storeTokens)).toFixed(0)} bytes/token` +
          (res.invalidLines ? `; ${res.invalidLines} invalid lines skipped` : ''),
      );
      if (s.label === 'train') {
        const { vocab, cached } = await draftVocabulary(res.counter, {
          cacheDir: r.data.cache_dir,
          files: s.files,
          template: common.template,
          targetDir: r.model.target,
          maxLength: r.data.max_length,
          size: r.model.draft_vocab_size,
          tok,
          storeDir: res.storeDir,
          eosIds: model.config.eosTokenIds,
          limit: s.limit,
        });
        log(`draft vocabulary: ${vocab.used.length} of ${vocab.vocabSize} tokens cover ${(100 * vocab.coverage).toFixed(2)}% of assistant tokens${cached ? ' (cached)' : ''}`);
      }
    }
  } finally {
    model.dispose();
  }
}
