import fs from 'node:fs';
import path from 'node:path';
import type { CommandModule } from 'yargs';
import { initBackend } from '../backend/backend.ts';
import { ensureRegenerated } from '../capture/regenerate.ts';
import { runCapture } from '../capture/run.ts';
import { loadTokenizer } from '../io/tokenizer.ts';
import { TfjsTarget } from '../target/tfjs-target.ts';
import { launchRanks } from '../parallel/launch.ts';
import { loadRecipe } from '../recipe/recipe.ts';
import type { TrainJob, TrainResult } from '../train/trainer.ts';
import { progress, type Progress } from '../util/progress.ts';
import { type CommonArgs, withBackend } from './common.ts';

type Args = CommonArgs & { recipe: string; resume?: string; workers?: number; 'max-steps'?: number };

function storeComplete(dir: string): boolean {
  const f = path.join(dir, 'manifest.json');
  return fs.existsSync(f) && JSON.parse(fs.readFileSync(f, 'utf8')).complete === true;
}

export const trainCommand: CommandModule<object, Args> = {
  command: 'train',
  describe: 'Train an EAGLE-3 draft (with SpecExit heads) from a recipe',
  builder: (y) =>
    withBackend(
      y
        .option('recipe', { type: 'string', demandOption: true, describe: 'recipe YAML (see recipes/)' })
        .option('resume', { type: 'string', describe: "continue a run: 'latest' or a checkpoint folder (…/step-N)" })
        .option('workers', { type: 'number', describe: 'data-parallel ranks (overrides parallel.workers)' })
        .option('max-steps', { type: 'number', describe: 'override training.max_steps' }),
    ) as never,
  handler: async (args) => {
    const overrides = { 'runtime.backend': args.backend, 'training.max_steps': args['max-steps'], 'parallel.workers': args.workers };
    const r = loadRecipe(args.recipe, overrides);
    if (r.training.mode === 'offline') {
      const missing = ['train', ...(r.data.eval ? ['eval'] : [])].filter((s) => !storeComplete(path.join(r.data.store, s)));
      if (missing.length) {
        console.log(`store ${r.data.store} has no complete ${missing.join(' and ')} split: capturing first`);
        await initBackend(r.runtime.backend as never, console.log);
        await runCapture(r, console.log);
      }
    } else if (r.data.regenerate) {
      // Online training reads the regenerated conversations: write them first (a finished file is reused).
      await initBackend(r.runtime.backend as never, console.log);
      const tok = loadTokenizer(r.model.target);
      const model = TfjsTarget.load(r.model.target);
      try {
        await ensureRegenerated(r, model, tok, console.log);
      } finally {
        model.dispose();
      }
    }
    let bar: Progress | undefined;
    const job: TrainJob = { recipe: path.resolve(args.recipe), overrides, resume: args.resume ?? null };
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
    console.log(
      `trained to step ${result.steps} in ${(result.seconds / 60).toFixed(1)} min (${result.tokensPerSecond.toFixed(0)} tok/s); checkpoint ${result.lastCheckpoint}`,
    );
    if (result.eval)
      console.log(
        `held-out: acc ${result.eval.acc.map((a) => a.toFixed(3)).join(' ')}; simulated acceptance length ${result.eval.tau.toFixed(3)} (${result.eval.samples} samples)`,
      );
  },
};
