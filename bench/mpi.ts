// MPI against worker_threads on this machine: draft training tokens/s at the quickstart shape with 1 process,
// 2 worker_threads, 2 MPI processes over shared memory and 2 over TCP (--mca btl tcp,self, the transport
// between machines); the share of a 2-rank step spent waiting at the all-reduce and in it; and the time of
// one all-reduce of a 50 MB float32 buffer over MPI shared memory, MPI TCP and the SharedArrayBuffer
// all-reduce of worker_threads. Medians of several runs, every run a fresh process (or mpirun job).
// Usage: npm run bench:mpi [-- --steps 30 --runs 3 --reps 10]   (needs Open MPI and the specforge-mpi binding)
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { initBackend } from '../src/backend/backend.ts';
import { runCapture } from '../src/capture/run.ts';
import { launchRanks } from '../src/parallel/launch.ts';
import { joinMpiWorld, loadMpi } from '../src/parallel/mpi.ts';
import { loadRecipe } from '../src/recipe/recipe.ts';
import type { TrainJob } from '../src/train/trainer.ts';
import type { AllReduceTimes, BenchJob, TimedTrain } from './mpi-rank.ts';

const arg = (name: string, dflt: string) =>
  process.argv.includes(`--${name}`) ? process.argv[process.argv.indexOf(`--${name}`) + 1] : dflt;
const steps = Number(arg('steps', '30'));
const runs = Number(arg('runs', '3'));
const reps = Number(arg('reps', '10'));
const FLOATS = (50 * 2 ** 20) / 4; // 50 MiB of float32
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const recipe = fileURLToPath(new URL('../recipes/quickstart.yaml', import.meta.url));
const rankModule = new URL('./mpi-rank.ts', import.meta.url).href;
const self = fileURLToPath(import.meta.url);

function trainJob(work: string, workers: number): TrainJob {
  const r = loadRecipe(recipe, {
    'data.store': path.join(work, 'store'),
    'data.cache_dir': path.join(work, 'cache'),
    'data.eval': null,
    'capture.limit': 1000,
    'training.output_dir': path.join(work, 'ckpt'),
    'training.max_steps': steps,
    'training.eval_interval': 100000,
    'training.save_interval': 100000,
    'parallel.workers': workers,
    'training.run_id': `bench-${workers}-${process.pid}`,
  });
  return { recipe: r, resume: null };
}

if (process.argv.includes('--child')) {
  // One job: --child <payload JSON file> <workers>. Under mpirun each process is a rank (workers ignored).
  const [file, workers] = process.argv.slice(process.argv.indexOf('--child') + 1);
  const w = joinMpiWorld();
  const result = await launchRanks({
    module: rankModule,
    worldSize: w ? w.size : Number(workers),
    payload: JSON.parse(fs.readFileSync(file, 'utf8')),
  });
  if (!w || w.rank === 0) console.log(JSON.stringify(result));
  process.exit(0);
}

loadMpi(); // says how to get MPI before any work when it is missing
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'bench-mpi-'));
type Launch = 'process' | 'threads' | 'mpi-shm' | 'mpi-tcp';
const MPI_ENV = { OMPI_ALLOW_RUN_AS_ROOT: '1', OMPI_ALLOW_RUN_AS_ROOT_CONFIRM: '1' };

/** Runs `job` as a fresh process (1 or 2 worker_threads ranks) or a 2-process mpirun job; rank 0's result. */
function run<T>(launch: Launch, job: BenchJob): T {
  const file = path.join(work, `job-${Math.random().toString(36).slice(2)}.json`);
  fs.writeFileSync(file, JSON.stringify(job));
  const node = [...process.execArgv, self, '--child', file, launch === 'process' ? '1' : '2'];
  const mpi = launch === 'mpi-tcp' ? ['-np', '2', '--mca', 'btl', 'tcp,self'] : ['-np', '2'];
  const child = launch.startsWith('mpi')
    ? spawnSync('mpirun', [...mpi, process.execPath, ...node], { encoding: 'utf8', env: { ...process.env, ...MPI_ENV } })
    : spawnSync(process.execPath, node, { encoding: 'utf8' });
  if (child.status !== 0) throw new Error(`${launch} run failed:\n${child.stderr}\n${child.stdout}`);
  return JSON.parse(child.stdout.trim().split('\n').pop()!);
}

// The store, captured once.
const base = trainJob(work, 1).recipe;
await initBackend(base.runtime.backend);
await runCapture(base, () => {});

const launches: Launch[] = ['process', 'threads', 'mpi-shm', 'mpi-tcp'];
const trains = new Map<Launch, TimedTrain[]>(launches.map((l) => [l, []]));
for (let i = 0; i < runs; i++)
  for (const l of launches) trains.get(l)!.push(run<TimedTrain>(l, { kind: 'train', job: trainJob(work, l === 'process' ? 1 : 2) }));
const reduces = new Map<Launch, number[]>();
for (const l of ['threads', 'mpi-shm', 'mpi-tcp'] as Launch[])
  for (let i = 0; i < runs; i++)
    reduces.set(l, [...(reduces.get(l) ?? []), ...run<AllReduceTimes>(l, { kind: 'allreduce', floats: FLOATS, reps }).seconds]);
fs.rmSync(work, { recursive: true, force: true });

const NAMES: Record<Launch, string> = {
  process: '1 process',
  threads: '2 worker_threads (SharedArrayBuffer)',
  'mpi-shm': '2 MPI processes, shared memory',
  'mpi-tcp': '2 MPI processes, TCP (btl tcp,self)',
};
const one = median(trains.get('process')!.map((t) => t.tokensPerSecond));
console.log(
  `draft training at the quickstart shape (batch ${base.training.batch_size} per rank, ttt ${base.training.ttt_length}), ${steps} steps, median of ${runs} runs; ${os.availableParallelism()} cores`,
);
for (const l of launches) {
  const ts = trains.get(l)!;
  const rate = median(ts.map((t) => t.tokensPerSecond));
  const share = (f: (t: TimedTrain) => number) => (100 * median(ts.map((t) => f(t) / t.seconds))).toFixed(2);
  console.log(
    `${NAMES[l].padEnd(40)} ${rate.toFixed(0).padStart(5)} tokens/s (${(rate / one).toFixed(2)}x)` +
      (l === 'process'
        ? ''
        : `; of the training time: ${share((t) => t.waiting)}% waiting at the all-reduce, ${share((t) => t.reducing)}% in it`) +
      `  [runs: ${ts.map((t) => t.tokensPerSecond.toFixed(0)).join(' ')}]`,
  );
}
console.log(`all-reduce of a 50 MiB float32 buffer, 2 ranks, median of ${runs} x ${reps}`);
for (const [l, s] of reduces) console.log(`${NAMES[l].padEnd(40)} ${(1000 * median(s)).toFixed(1).padStart(7)} ms`);
