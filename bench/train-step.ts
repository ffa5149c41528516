// One draft-training optimizer step on random features at three shapes, the same work as a plainly written
// PyTorch step (teacher logits rebuilt from the final hidden state with the target's lm_head [V, Ht] and cut
// to the draft vocabulary; fc; one decoder layer over 7 TTT steps; loss 0.8^i; clipping 0.5; AdamW):
//   Q  the quickstart draft (H 96, 4/2 heads, intermediate 256, V 335, Vd 256), batch 8 x T 128
//   M  a Qwen2.5-0.5B-sized draft (H 896, 14/2 heads of 64, intermediate 4864, V 151936, Vd 16000), 1 x 512
//   L  a Qwen3-0.6B-sized draft (H 1024, 16/8 heads of 128, intermediate 3072, V 151936, Vd 16000), 1 x 2048
// Usage: npm run bench:train-step -- [--shape Q,M,L] [--engine tfjs,gemm,graph] [--workers 1,2] [--threads 1]
//        [--steps 5] [--phases] [--kernels] [--recompute auto|on|off] [--torch PATH/torch_ttt_bench.py [--torch-threads 1,2] [--python /usr/bin/python3]]
// Each (shape, engine, workers) runs in a fresh process, its ranks as worker_threads as `specforge train
// --workers N` runs them (each rank a batch of its own, the all-reduce and update included): median ms per
// step after a warm-up step, tokens/s (all ranks' tokens), rank 0's wasm heap and the process's peak RSS.
// --threads sets each rank's ONNX Runtime threads (1 by default: compare 1 worker with PyTorch on 1 thread,
// 2 workers with PyTorch on 2). --phases adds rank 0's wall time per phase (teacher, forward, backward,
// signals, host, all-reduce, optimizer); --kernels one step's tfjs kernels by time; --recompute sets the
// recipe's training.recompute (auto: as a training run decides, by each rank's share of memory). --torch runs a PyTorch
// reference of the same step (python3 with torch, e.g. Debian's python3-torch with libopenblas0; never a
// dependency of this project) right after each shape, so the ratio compares runs made side by side.
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { ORT_GEMM_MIN_MACS } from '../src/backend/matmul.ts';
import { peakRssBytes } from '../src/backend/memory.ts';
import { launchAllRanks } from '../src/parallel/launch.ts';
import { PHASES } from '../src/train/phases.ts';
import { retainingMallocEnv } from '../src/util/malloc-env.ts';
import { ENGINES, type Engine, type RankPayload, type RankResult, SHAPES, type Shape, TTT } from './train-step-rank.ts';

const arg = (name: string, dflt: string) =>
  process.argv.includes(`--${name}`) ? process.argv[process.argv.indexOf(`--${name}`) + 1] : dflt;
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

if (process.argv.includes('--child')) {
  const [shape, engine, steps, workers] = process.argv.slice(process.argv.indexOf('--child') + 1);
  const payload: RankPayload = {
    shape: shape as Shape,
    engine: engine as Engine,
    steps: Number(steps),
    threads: Number(arg('threads', '1')),
    minMacs: Number(arg('min-macs', String(ORT_GEMM_MIN_MACS))),
    kernels: process.argv.includes('--kernels'),
    recompute: arg('recompute', 'auto') as RankPayload['recompute'],
  };
  const results = (await launchAllRanks({
    module: new URL('./train-step-rank.ts', import.meta.url).href,
    worldSize: Number(workers),
    payload,
  })) as RankResult[];
  const c = SHAPES[payload.shape];
  // A step ends when the slowest rank has its update: take each step's slowest rank.
  const runs = results[0].runs.map((_, i) => Math.max(...results.map((r) => r.runs[i])));
  console.log(
    JSON.stringify({
      msPerStep: median(runs),
      runs,
      phases: results[0].phases,
      heap: results[0].heap,
      rss: peakRssBytes(),
      tokens: Number(workers) * c.B * c.T,
    }),
  );
  process.exit(0);
}

const shapes = arg('shape', 'Q,M,L').split(',') as Shape[];
for (const s of shapes) if (!(s in SHAPES)) throw new Error(`--shape ${s}: expected Q, M or L`);
const engines = arg('engine', 'tfjs,gemm,graph').split(',') as Engine[];
for (const e of engines) if (!(e in ENGINES)) throw new Error(`--engine ${e}: expected tfjs, gemm or graph`);
const steps = Number(arg('steps', '5'));
const torch = arg('torch', '');
// --kernels prints one step's kernels by time; --min-macs N routes products of N multiply-adds or more to ORT.
const childFlags = [
  ...(process.argv.includes('--kernels') ? ['--kernels'] : []),
  ...(process.argv.includes('--min-macs') ? ['--min-macs', arg('min-macs', '0')] : []),
  ...['--threads', arg('threads', '1')],
  ...['--recompute', arg('recompute', 'auto')],
];
const gib = (b: number | null) => (b === null ? 'n/a' : `${(b / 2 ** 30).toFixed(2)} GiB`);

for (const shape of shapes) {
  const c = SHAPES[shape];
  console.log(
    `shape ${shape} (H ${c.H}, ${c.heads}/${c.kv} heads of ${c.hd}, I ${c.inter}, V ${c.V}, Vd ${c.Vd}, B ${c.B} x T ${c.T}, TTT ${TTT})`,
  );
  for (const engine of engines)
    for (const workers of arg('workers', '1').split(',')) {
      const r = spawnSync(
        process.execPath,
        ['--import', 'tsx', fileURLToPath(import.meta.url), '--child', shape, engine, String(steps), workers, ...childFlags],
        // The malloc settings that bin/specforge.js gives training (src/util/malloc-env.ts).
        { encoding: 'utf8', maxBuffer: 1 << 26, env: retainingMallocEnv() ?? process.env },
      );
      const line = r.stdout.trim().split('\n').pop() ?? '';
      const what = `specforge ${engine.padEnd(5)} ${workers} worker(s)`;
      if (r.status !== 0 || !line.startsWith('{')) {
        console.log(`  ${what}: failed (exit ${r.status})\n${r.stderr.slice(-2000)}`);
        continue;
      }
      const res = JSON.parse(line);
      console.log(
        `  ${what}: ${res.msPerStep.toFixed(0)} ms/step, ${((1000 * res.tokens) / res.msPerStep).toFixed(0)} tokens/s ` +
          `(median of ${steps}: ${res.runs.map((x: number) => x.toFixed(0)).join(' ')}); wasm heap ${gib(res.heap)}, peak RSS ${gib(res.rss)}`,
      );
      if (process.argv.includes('--phases'))
        console.log(`    rank 0 per step: ${PHASES.map((p) => `${p} ${res.phases[p].toFixed(0)} ms`).join(', ')}`);
      if (process.argv.includes('--kernels')) console.log(r.stderr.slice(r.stderr.indexOf('kernels:')).trimEnd());
    }
  if (torch) {
    const env = { ...process.env };
    delete env.OPENBLAS_CORETYPE;
    delete env.OPENBLAS_L2_SIZE;
    // Several thread counts (e.g. 1,2) compare 1 and 2 workers with PyTorch at its own thread counts.
    for (const threads of arg('torch-threads', '2').split(',')) {
      const r = spawnSync(arg('python', 'python3'), [torch, shape, '--steps', String(steps), '--threads', threads], {
        encoding: 'utf8',
        env,
      });
      const out = r.status === 0 ? r.stdout.trim() : `failed (exit ${r.status}) ${r.stderr.slice(-500)}`;
      console.log(`  PyTorch reference, ${threads} thread(s): ${out}`);
    }
  }
}
