// Trains the shipped tiny target from scratch on the synthetic corpus (npm run tiny:data writes it) and
// writes it as a Hugging Face folder with bf16 safetensors. Data-parallel over worker_threads;
// resumable: the full training state is saved every --save-every steps and picked up on the next run.
//
//   npm run tiny:train -- [--workers 2] [--steps N] [--batch 32] [--fresh]
import os from 'node:os';
import path from 'node:path';
import yargs from 'yargs';
import { hideBin } from 'yargs/helpers';
import { BACKENDS, type BackendName } from '../backend/backend.ts';
import { launchRanks } from '../parallel/launch.ts';
import { progress } from '../util/progress.ts';
import { CORPUS_DIR, REPO_ROOT, TINY_TARGET_DIR } from './config.ts';
import type { TrainTargetArgs, TrainTargetResult } from './train-target-rank.ts';

const args = await yargs(hideBin(process.argv))
  .option('workers', { type: 'number', default: Math.min(2, os.availableParallelism()), describe: 'data-parallel ranks (worker_threads)' })
  .option('steps', { type: 'number', default: 1100, describe: 'optimizer steps' })
  .option('batch', { type: 'number', default: 32, describe: 'conversations per step (all ranks together)' })
  .option('lr', { type: 'number', default: 3e-3 })
  .option('warmup', { type: 'number', default: 100, describe: 'linear warmup steps, then cosine to 10% of lr' })
  .option('clip', { type: 'number', default: 1.0, describe: 'gradient-norm clip' })
  .option('max-length', { type: 'number', default: 192, describe: 'tokens per conversation (longer ones are cut)' })
  .option('seed', { type: 'number', default: 1234 })
  .option('backend', { choices: BACKENDS, default: 'auto' as BackendName })
  .option('corpus', { type: 'string', default: CORPUS_DIR })
  .option('tokenizer', { type: 'string', default: TINY_TARGET_DIR, describe: 'folder with tokenizer.json' })
  .option('out', { type: 'string', default: TINY_TARGET_DIR, describe: 'model folder to write' })
  .option('state', {
    type: 'string',
    default: path.join(REPO_ROOT, 'checkpoints', 'tiny-target-train'),
    describe: 'resumable training state',
  })
  .option('save-every', { type: 'number', default: 200 })
  .option('fresh', { type: 'boolean', default: false, describe: 'ignore a saved state and start over' })
  .strict()
  .parseAsync();

const payload: TrainTargetArgs = {
  steps: args.steps,
  batch: args.batch,
  lr: args.lr,
  warmup: args.warmup,
  clip: args.clip,
  maxLength: args.maxLength,
  seed: args.seed,
  backend: args.backend,
  corpus: args.corpus,
  tokenizer: args.tokenizer,
  out: args.out,
  state: args.state,
  saveEvery: args.saveEvery,
  fresh: args.fresh,
};
let bar: ReturnType<typeof progress> | undefined;
const result = (await launchRanks({
  module: new URL('./train-target-rank.ts', import.meta.url).href,
  worldSize: args.workers,
  payload,
  onLog: (m) => console.log(m),
  onProgress: (done, fields) => {
    bar ??= progress('train tiny target', args.steps, 'step', { start: done - 1 });
    bar.update(done, fields);
  },
})) as TrainTargetResult;
bar?.stop();
console.log(
  `trained steps ${result.startStep}..${args.steps} in ${result.minutes.toFixed(1)} min on ${args.workers} x ${result.backend}` +
    ` (${result.tokensPerSecond} tok/s incl. padding); final loss (EMA) ${result.finalLoss.toFixed(4)}; wrote ${args.out}`,
);
