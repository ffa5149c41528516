// Draft training throughput at the quickstart shape (tiny target, batch 8 per rank, TTT 7), with 1 and 2
// worker ranks, on a store captured once into a temporary folder.
// Usage: npm run bench:train [-- --steps 30 --runs 3 --chunk-tokens N]  (N: training.chunk_tokens; 0 runs each
// micro-batch whole, as before chunking)
//
// Every run is a fresh process, as `specforge train` is: a run inside this process would reuse the capture's
// warmed-up tfjs and JIT on one rank only (a single rank runs on the launching thread), which favoured 1 rank.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { initBackend } from '../src/backend/backend.ts';
import { runCapture } from '../src/capture/run.ts';
import { launchRanks } from '../src/parallel/launch.ts';
import { loadRecipe } from '../src/recipe/recipe.ts';
import type { TrainJob, TrainResult } from '../src/train/trainer.ts';

const arg = (name: string, dflt: string) =>
  process.argv.includes(`--${name}`) ? process.argv[process.argv.indexOf(`--${name}`) + 1] : dflt;
const steps = Number(arg('steps', '30'));
const runs = Number(arg('runs', '3'));
const chunkTokens = arg('chunk-tokens', '');
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const recipe = fileURLToPath(new URL('../recipes/quickstart.yaml', import.meta.url));
const overridesFor = (work: string) => ({
  'data.store': path.join(work, 'store'),
  'data.cache_dir': path.join(work, 'cache'),
  'capture.limit': 1000,
  'training.output_dir': path.join(work, 'ckpt'),
  'training.max_steps': steps,
  'training.eval_interval': 100000,
  'training.save_interval': 100000,
  ...(chunkTokens ? { 'training.chunk_tokens': Number(chunkTokens) } : {}),
});

if (process.argv.includes('--child')) {
  // One training run: --child <work dir> <workers>; prints its tokens/s as JSON.
  const [work, workers] = process.argv.slice(process.argv.indexOf('--child') + 1);
  const job: TrainJob = {
    recipe: loadRecipe(recipe, {
      ...overridesFor(work),
      'data.eval': null,
      'parallel.workers': Number(workers),
      'training.run_id': `bench-${workers}-${process.pid}`,
    }),
    resume: null,
  };
  const res = (await launchRanks({
    module: new URL('../src/train/trainer.ts', import.meta.url).href,
    worldSize: Number(workers),
    payload: job,
  })) as TrainResult;
  console.log(JSON.stringify({ tokensPerSecond: res.tokensPerSecond }));
  process.exit(0);
}

const work = fs.mkdtempSync(path.join(os.tmpdir(), 'bench-train-'));
const r = loadRecipe(recipe, overridesFor(work));
await initBackend(r.runtime.backend);
await runCapture({ ...r, data: { ...r.data, eval: null } }, () => {});

const rates = new Map<number, number[]>();
for (let run = 0; run < runs; run++) {
  for (const workers of [1, 2]) {
    const child = spawnSync(
      process.execPath,
      [...process.execArgv, fileURLToPath(import.meta.url), '--child', work, String(workers), ...process.argv.slice(2)],
      { encoding: 'utf8' },
    );
    if (child.status !== 0) throw new Error(`training run with ${workers} worker(s) failed:\n${child.stderr}`);
    const { tokensPerSecond } = JSON.parse(child.stdout.trim().split('\n').pop()!);
    rates.set(workers, [...(rates.get(workers) ?? []), tokensPerSecond]);
  }
}
fs.rmSync(work, { recursive: true, force: true });
const one = median(rates.get(1)!);
const two = median(rates.get(2)!);
console.log(
  `draft training at the quickstart shape (batch ${r.training.batch_size} per rank, ttt ${r.training.ttt_length}, chunk_tokens ${r.training.chunk_tokens}), ${steps} steps, median of ${runs} runs, one process per run`,
);
console.log(
  `runs: 1 worker ${rates
    .get(1)!
    .map((x) => x.toFixed(0))
    .join(' ')}; 2 workers ${rates
    .get(2)!
    .map((x) => x.toFixed(0))
    .join(' ')} tokens/s`,
);
console.log(`1 worker    ${one.toFixed(0)} tokens/s`);
console.log(`2 workers   ${two.toFixed(0)} tokens/s  (${(two / one).toFixed(2)}x)`);
