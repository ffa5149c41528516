// `specforge train`: wires the arguments to a recipe, checks what can be checked before any work (the data
// files, the run folder: its lock, a fresh run into an earlier run's folder, the checkpoint a resume names),
// prepares what training reads (prepareTraining: capture or regeneration first), launches the ranks
// (src/train/trainer.ts) and prints the run summary.
import type { CommandModule } from 'yargs';
import { launchRanks, onceForJob } from '../parallel/launch.ts';
import { loadRecipe } from '../recipe/recipe.ts';
import { prepareRecipeTarget } from '../target/load.ts';
import { checkDataFiles, checkStepFits } from '../train/preflight.ts';
import { prepareTraining } from '../train/prepare.ts';
import { claimRunDir } from '../train/run-claim.ts';
import { recipeFields, recipeKey, runDirOf } from '../train/run-dir.ts';
import { summaryLines } from '../train/summary.ts';
import type { TrainJob, TrainResult } from '../train/trainer.ts';
import { type Progress, progress } from '../util/progress.ts';
import { type CommonArgs, commonOverrides, launchWorkers, withBackend, withTargetEngine } from './common.ts';

type Args = CommonArgs & { recipe: string; resume?: string; overwrite?: boolean; workers?: number; 'max-steps'?: number };

export const trainCommand: CommandModule<object, Args> = {
  command: 'train',
  describe: 'Train an EAGLE-3 draft (with SpecExit heads) from a recipe',
  builder: (y) =>
    withTargetEngine(
      withBackend(
        y
          .option('recipe', { type: 'string', demandOption: true, describe: 'recipe YAML (see recipes/)' })
          .option('resume', { type: 'string', describe: "continue a run: 'latest' or a checkpoint folder (…/step-N)" })
          .option('overwrite', {
            type: 'boolean',
            describe:
              "start afresh in a run folder that holds an earlier run, deleting it (its checkpoints, metrics, curves, summary); with --resume, delete the run's checkpoints after the one resumed",
          })
          .option('workers', { type: 'number', describe: 'data-parallel ranks (overrides parallel.workers)' })
          .option('max-steps', { type: 'number', describe: 'override training.max_steps' }),
      ),
    ) as never,
  handler: async (args) => {
    const r = loadRecipe(args.recipe, {
      ...commonOverrides(args),
      'training.max_steps': args['max-steps'],
      'parallel.workers': launchWorkers(args.workers),
    });
    // Checked and claimed once for the job (under MPI by rank 0, which holds the run folder's lock).
    let claim: ReturnType<typeof claimRunDir> | undefined;
    const resume = await onceForJob(() => {
      checkDataFiles(r);
      checkStepFits(r);
      claim = claimRunDir({
        runDir: runDirOf(r),
        resume: args.resume ?? null,
        overwrite: Boolean(args.overwrite),
        recipeKey: recipeKey(r),
        recipe: recipeFields(r),
        log: console.log,
      });
      return claim.resume;
    });
    let bar: Progress | undefined;
    try {
      await prepareTraining(r, console.log);
      if (r.training.mode === 'online' && r.parallel.workers > 1) await onceForJob(() => prepareRecipeTarget(r, console.log));
      const job: TrainJob = { recipe: r, resume };
      const result = (await launchRanks({
        module: new URL('../train/trainer.ts', import.meta.url).href,
        worldSize: r.parallel.workers,
        payload: job,
        onLog: (m) => console.log(m),
        onProgress: (done, { total, ...fields }) => {
          bar ??= progress('train', Number(total), 'step', { start: done - 1 });
          bar.update(done, fields);
        },
      })) as TrainResult;
      bar?.stop();
      bar = undefined;
      for (const line of summaryLines(result.summary)) console.log(line);
    } finally {
      bar?.stop(); // an error then starts on a line of its own
      claim?.lock.release();
    }
  },
};
