// Trains a shipped target from scratch on the synthetic corpus (npm run tiny:data writes it) and writes it
// as a Hugging Face folder with bf16 safetensors: the tiny target (tests, quickstart) or the demo target
// (--model demo, the speedup demo). Data-parallel over worker_threads; resumable: the full training state
// is saved every --save-every steps and picked up on the next run.
//
//   npm run tiny:train -- [--model tiny|demo] [--workers N] [--steps N] [--batch 32] [--fresh]
//   npm run demo:train   (= --model demo)
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import yargs from 'yargs';
import { hideBin } from 'yargs/helpers';
import { BACKENDS, type BackendName } from '../backend/backend.ts';
import { launchRanks } from '../parallel/launch.ts';
import { progress } from '../util/progress.ts';
import { CORPUS_DIR, REPO_ROOT, TARGET_SIZES, TARGETS, TINY_TARGET_DIR, type TargetSize } from './config.ts';
import type { TrainTargetArgs, TrainTargetResult } from './train-target-rank.ts';

const args = await yargs(hideBin(process.argv))
  .option('model', { choices: TARGET_SIZES, default: 'tiny' as TargetSize, describe: 'which shipped target (its size and defaults)' })
  .option('engine', {
    choices: ['auto', 'ort', 'tfjs'] as const,
    default: 'auto' as const,
    describe:
      'ort: the loss and gradients as one ONNX Runtime graph; auto: what the shipped model was trained with (tiny: tfjs, demo: ort)',
  })
  .option('workers', {
    type: 'number',
    describe: 'data-parallel ranks (worker_threads); default tiny 2, demo 1 (with 2 ONNX Runtime threads)',
  })
  .option('steps', { type: 'number', describe: 'optimizer steps (default tiny 1100, demo 600)' })
  .option('batch', { type: 'number', default: 32, describe: 'conversations per step (all ranks together)' })
  .option('lr', { type: 'number', describe: 'peak learning rate (default tiny 3e-3, demo 2e-3)' })
  .option('warmup', { type: 'number', describe: 'linear warmup steps, then cosine to 10% of lr (default tiny 100, demo 60)' })
  .option('clip', { type: 'number', default: 1.0, describe: 'gradient-norm clip' })
  .option('max-length', { type: 'number', default: 192, describe: 'tokens per conversation (longer ones are cut)' })
  .option('seed', { type: 'number', default: 1234 })
  .option('backend', { choices: BACKENDS, default: 'auto' as BackendName })
  .option('corpus', { type: 'string', default: CORPUS_DIR })
  .option('tokenizer', { type: 'string', default: TINY_TARGET_DIR, describe: 'folder with tokenizer.json' })
  .option('out', { type: 'string', describe: 'model folder to write (default data/<model>-target)' })
  .option('state', { type: 'string', describe: 'resumable training state (default checkpoints/<model>-target-train)' })
  .option('save-every', { type: 'number', default: 200 })
  .option('fresh', { type: 'boolean', default: false, describe: 'ignore a saved state and start over' })
  .strict()
  .parseAsync();

const preset = TARGETS[args.model];
const workers = args.workers ?? Math.min(preset.train.workers, os.availableParallelism());
const engine = args.engine === 'auto' ? (args.model === 'tiny' ? 'tfjs' : 'ort') : args.engine;
// --steps, --lr or --warmup make one stage of their own; otherwise the preset's stages run in turn, each
// (but the first) starting from the model the one before it wrote.
const stages =
  args.steps !== undefined || args.lr !== undefined || args.warmup !== undefined
    ? [
        {
          steps: args.steps ?? preset.train.stages[0].steps,
          lr: args.lr ?? preset.train.stages[0].lr,
          warmup: args.warmup ?? preset.train.stages[0].warmup,
        },
      ]
    : preset.train.stages;
const out = args.out ?? preset.dir;
const state = args.state ?? path.join(REPO_ROOT, 'checkpoints', `${args.model}-target-train`);
let offset = 0;
for (const [k, stage] of stages.entries()) {
  const last = k === stages.length - 1;
  const stageDir = stages.length > 1 ? path.join(state, `stage-${k + 1}`) : state;
  const stageOut = last ? out : path.join(stageDir, 'model');
  const payload: TrainTargetArgs = {
    model: args.model,
    engine,
    threads: Math.max(1, Math.floor(os.availableParallelism() / workers)),
    steps: stage.steps,
    init: k > 0 ? path.join(state, `stage-${k}`, 'model') : undefined,
    stepOffset: offset,
    batch: args.batch,
    splits: 'splits' in stage ? stage.splits : undefined,
    lr: stage.lr,
    warmup: stage.warmup,
    clip: args.clip,
    maxLength: args.maxLength,
    seed: args.seed,
    backend: args.backend,
    corpus: args.corpus,
    tokenizer: args.tokenizer,
    out: stageOut,
    state: stageDir,
    saveEvery: args.saveEvery,
    fresh: args.fresh,
  };
  offset += stage.steps;
  const name = stages.length > 1 ? `stage ${k + 1}/${stages.length}: ` : '';
  // An earlier stage whose model is written (config.json comes last) and whose state is gone is done.
  if (
    !last &&
    !args.fresh &&
    fs.existsSync(path.join(stageOut, 'config.json')) &&
    !fs.existsSync(path.join(stageDir, 'state.safetensors'))
  ) {
    console.log(`${name}done before (${stageOut})`);
    continue;
  }
  let bar: ReturnType<typeof progress> | undefined;
  const result = (await launchRanks({
    module: new URL('./train-target-rank.ts', import.meta.url).href,
    worldSize: workers,
    payload,
    onLog: (m) => console.log(name + m),
    onProgress: (done, fields) => {
      bar ??= progress(`${name}train ${args.model} target`, stage.steps, 'step', { start: done - 1 });
      bar.update(done, fields);
    },
  })) as TrainTargetResult;
  bar?.stop();
  console.log(
    `${name}trained steps ${result.startStep}..${stage.steps} (lr ${stage.lr}) in ${result.minutes.toFixed(1)} min on ${workers} x ${engine === 'ort' ? 'onnxruntime' : result.backend}` +
      ` (${result.tokensPerSecond} tok/s incl. padding); final loss (EMA) ${result.finalLoss.toFixed(4)}; wrote ${stageOut}`,
  );
}
