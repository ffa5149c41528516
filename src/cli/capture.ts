import path from 'node:path';
import type { CommandModule } from 'yargs';
import { initBackend } from '../backend/backend.ts';
import { captureSplit, draftVocabulary } from '../capture/capture.ts';
import { loadTokenizer } from '../io/tokenizer.ts';
import { loadRecipe } from '../recipe/recipe.ts';
import { TfjsTarget } from '../target/tfjs-target.ts';
import { type CommonArgs, withBackend } from './common.ts';

type Args = CommonArgs & { recipe: string; limit?: number };

export const captureCommand: CommandModule<object, Args> = {
  command: 'capture',
  describe: 'Run the target over a dataset and store its hidden states in Arrow shards',
  builder: (y) =>
    withBackend(
      y
        .option('recipe', { type: 'string', demandOption: true, describe: 'recipe YAML (see recipes/)' })
        .option('limit', { type: 'number', describe: 'capture at most this many training samples (overrides capture.limit)' }),
    ) as never,
  handler: async (args) => {
    const r = loadRecipe(args.recipe, { 'runtime.backend': args.backend, 'capture.limit': args.limit });
    await initBackend(r.runtime.backend as never, console.log);
    const tok = loadTokenizer(r.model.target);
    const model = TfjsTarget.load(r.model.target);
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
      log: (m: string) => console.log(m),
    };
    const splits = [{ label: 'train', files: r.data.train, limit: r.capture.limit }];
    if (r.data.eval) splits.push({ label: 'eval', files: r.data.eval, limit: null });
    for (const s of splits) {
      const res = await captureSplit(model, tok, { ...common, files: s.files, storeDir: path.join(r.data.store, s.label), limit: s.limit, label: s.label });
      const captured = res.samples - Math.min(res.skippedResumed, res.samples);
      console.log(
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
        console.log(`draft vocabulary: ${vocab.used.length} of ${vocab.vocabSize} tokens cover ${(100 * vocab.coverage).toFixed(2)}% of assistant tokens${cached ? ' (cached)' : ''}`);
      }
    }
    model.dispose();
  },
};
