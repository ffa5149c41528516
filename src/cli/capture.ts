// `specforge capture`: wires the arguments to the recipe's capture job (capture/run.ts), or with --verify
// to the check of the store it wrote (capture/verify.ts).
import type { CommandModule } from 'yargs';
import { initBackend } from '../backend/backend.ts';
import { runCapture } from '../capture/run.ts';
import { verifyRecipeStore } from '../capture/verify.ts';
import { loadRecipe } from '../recipe/recipe.ts';
import { checkDataFiles } from '../train/preflight.ts';
import { type CommonArgs, commonOverrides, launchWorkers, withBackend, withTargetEngine } from './common.ts';

type Args = CommonArgs & { recipe: string; limit?: number; regenerate?: boolean; workers?: number; verify?: boolean };

export const captureCommand: CommandModule<object, Args> = {
  command: 'capture',
  describe: 'Run the target over a dataset and store its hidden states in Arrow shards',
  builder: (y) =>
    withTargetEngine(
      withBackend(
        y
          .option('recipe', { type: 'string', demandOption: true, describe: 'recipe YAML (see recipes/)' })
          .option('limit', { type: 'number', describe: 'capture at most this many training samples (overrides capture.limit)' })
          .option('workers', { type: 'number', describe: 'ranks capturing disjoint shards side by side (overrides parallel.workers)' })
          .option('verify', {
            type: 'boolean',
            describe:
              "capture nothing: check the recipe's store (that it was captured from this recipe's target and data, and every row's and column chunk's checksum) and exit 1 listing any problem",
          })
          .option('regenerate', {
            type: 'boolean',
            describe: "the target rewrites the training data's assistant turns first, and capture reads its answers (sets data.regenerate)",
          }),
      ),
    ) as never,
  handler: async (args) => {
    const r = loadRecipe(args.recipe, {
      ...commonOverrides(args),
      'capture.limit': args.limit,
      'data.regenerate': args.regenerate || undefined,
      'parallel.workers': launchWorkers(args.workers),
    });
    if (args.verify) {
      await verifyRecipeStore(r, console.log);
      return;
    }
    checkDataFiles(r); // before the target is loaded or converted
    await initBackend(r.runtime.backend, console.log);
    await runCapture(r, console.log);
  },
};
