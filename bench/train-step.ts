// One draft-training optimizer step on random features at three shapes, the same work as a plainly written
// PyTorch step (teacher logits rebuilt from the final hidden state with the target's lm_head [V, Ht] and cut
// to the draft vocabulary; fc; one decoder layer over 7 TTT steps; loss 0.8^i; clipping 0.5; AdamW):
//   Q  the quickstart draft (H 96, 4/2 heads, intermediate 256, V 335, Vd 256), batch 8 x T 128
//   M  a Qwen2.5-0.5B-sized draft (H 896, 14/2 heads of 64, intermediate 4864, V 151936, Vd 16000), 1 x 512
//   L  a Qwen3-0.6B-sized draft (H 1024, 16/8 heads of 128, intermediate 3072, V 151936, Vd 16000), 1 x 2048
// Usage: npm run bench:train-step -- [--shape Q,M,L] [--engine tfjs,gemm,graph] [--threads 1] [--steps 5] [--phases]
//        [--torch PATH/torch_ttt_bench.py [--torch-threads 1,2] [--python /usr/bin/python3]]
// Each (shape, GEMM engine) runs in a fresh process on one rank (wasm backend): median ms per step after a
// warm-up step, tokens/s (batch x T per step), the wasm heap and peak RSS; --phases adds the wall time per
// phase (teacher, forward, backward, signals, host, all-reduce, optimizer). --torch runs a PyTorch reference
// of the same step (python3 with torch, e.g. Debian's python3-torch; never a dependency of this project)
// right after each shape, so the ratio compares runs made side by side on the same machine.
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../src/backend/backend.ts';
import { ORT_GEMM_MIN_MACS, useOrtGemm } from '../src/backend/matmul.ts';
import { peakRssBytes, wasmHeapBytes } from '../src/backend/memory.ts';
import type { DraftConfig } from '../src/draft/config.ts';
import { Eagle3Draft } from '../src/draft/eagle3.ts';
import { SoloCollective } from '../src/parallel/collective.ts';
import { loadRecipe } from '../src/recipe/recipe.ts';
import type { FeatureSample } from '../src/store/schema.ts';
import { AdamW } from '../src/train/optimizer.ts';
import { PHASES } from '../src/train/phases.ts';
import { OptimizerStep } from '../src/train/step.ts';
import { TeacherHead } from '../src/train/teacher-head.ts';
import { Rng } from '../src/util/random.ts';

const SHAPES = {
  Q: { H: 96, heads: 4, kv: 2, hd: 24, inter: 256, V: 335, Vd: 256, B: 8, T: 128 },
  M: { H: 896, heads: 14, kv: 2, hd: 64, inter: 4864, V: 151936, Vd: 16000, B: 1, T: 512 },
  L: { H: 1024, heads: 16, kv: 8, hd: 128, inter: 3072, V: 151936, Vd: 16000, B: 1, T: 2048 },
} as const;
type Shape = keyof typeof SHAPES;
const TTT = 7;

const arg = (name: string, dflt: string) =>
  process.argv.includes(`--${name}`) ? process.argv[process.argv.indexOf(`--${name}`) + 1] : dflt;
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

// Engines: tfjs = every op and product in tfjs (wasm); gemm = tfjs ops with large products on ONNX Runtime's
// GEMM; graph = the whole TTT forward and backward pass as one ONNX Runtime graph (runtime.train_step ort).
const ENGINES = {
  tfjs: { gemm: 'tfjs', step: 'tfjs' },
  gemm: { gemm: 'ort', step: 'tfjs' },
  graph: { gemm: 'ort', step: 'ort' },
} as const;
type Engine = keyof typeof ENGINES;

async function child(shape: Shape, engine: Engine, steps: number): Promise<void> {
  const c = SHAPES[shape];
  const { gemm, step: trainStep } = ENGINES[engine];
  await initBackend('wasm');
  // ORT's threads for this one rank (--threads, 1 by default: compare with PyTorch at the same count).
  if (gemm === 'ort') await useOrtGemm(Number(arg('threads', '1')), Number(arg('min-macs', String(ORT_GEMM_MIN_MACS))));
  const rng = new Rng(0);
  const config: DraftConfig = {
    hiddenSize: c.H,
    targetHiddenSize: c.H,
    intermediateSize: c.inter,
    numHeads: c.heads,
    numKvHeads: c.kv,
    headDim: c.hd,
    vocabSize: c.V,
    draftVocabSize: c.Vd,
    rmsNormEps: 1e-6,
    ropeTheta: 10000,
    ropeScaling: null,
    maxPositionEmbeddings: 4096,
    auxLayerIds: [1, 2, 3],
  };
  const draft = Eagle3Draft.init(config, 1);
  const table = tf.tidy(() => tf.mul(tf.randomNormal([c.V, c.H], 0, 1, 'float32', 1), 0.02)) as tf.Tensor2D;
  const head = new TeacherHead(table, tf.tidy(() => tf.mul(tf.randomNormal([c.H, c.V], 0, 1, 'float32', 2), 0.02)) as tf.Tensor2D, 1);
  const used = Int32Array.from(rng.shuffle(Array.from({ length: c.V }, (_, i) => i)).slice(0, c.Vd)).sort();
  const t2d = new Uint8Array(c.V);
  for (const u of used) t2d[u] = 1;
  const sample = (i: number): FeatureSample => ({
    id: `s${i}`,
    inputIds: Int32Array.from({ length: c.T }, () => rng.int(c.V)),
    lossMask: new Uint8Array(c.T).fill(1),
    aux: Float32Array.from(rng.normalArray(c.T * 3 * c.H)),
    finalHidden: Float32Array.from(rng.normalArray(c.T * c.H)),
    thinkSpans: new Int32Array(0),
    answerPositions: new Int32Array(0),
    answer: '',
  });
  const samples = Array.from({ length: c.B }, (_, i) => sample(i));
  const recipe = loadRecipe(fileURLToPath(new URL('../recipes/quickstart.yaml', import.meta.url)), {
    'training.batch_size': c.B,
    'training.ttt_length': TTT,
    'training.specexit': false,
    'training.max_grad_norm': 0.5,
    'runtime.gemm': gemm,
    'runtime.train_step': trainStep,
  });
  const model = { draft, head, vocab: { used, t2d }, auxWidth: 3 * c.H, hidden: c.H };
  const step = new OptimizerStep(model, new AdamW(), new SoloCollective(), recipe);
  const ms: number[] = [];
  let warm = new Map<string, number>();
  for (let i = 0; i <= steps; i++) {
    const t0 = performance.now();
    step.microBatch(samples);
    step.update(1e-4);
    if (i === 0) warm = new Map(step.phases.ms);
    else ms.push(performance.now() - t0);
  }
  if (process.argv.includes('--kernels'))
    await printKernels(() => {
      step.microBatch(samples);
      step.update(1e-4);
    });
  const phases = Object.fromEntries(PHASES.map((p) => [p, (step.phases.ms.get(p)! - warm.get(p)!) / steps]));
  console.log(JSON.stringify({ msPerStep: median(ms), runs: ms, phases, heap: wasmHeapBytes(), rss: peakRssBytes(), tokens: c.B * c.T }));
  process.exit(0);
}

/** One step under tf.profile: kernels by total time (to stderr, so the JSON line stays last on stdout). */
async function printKernels(run: () => void): Promise<void> {
  const info = await tf.profile(run);
  const by = new Map<string, { n: number; ms: number }>();
  for (const k of info.kernels) {
    const e = by.get(k.name) ?? { n: 0, ms: 0 };
    e.n++;
    e.ms += typeof k.kernelTimeMs === 'number' ? k.kernelTimeMs : 0;
    by.set(k.name, e);
  }
  const rows = [...by].sort((a, b) => b[1].ms - a[1].ms);
  const total = rows.reduce((t, [, e]) => t + e.ms, 0);
  console.error(`kernels: ${info.kernels.length} calls, ${total.toFixed(0)} ms in kernels`);
  for (const [name, e] of rows.slice(0, 25))
    console.error(`  ${name.padEnd(24)} ${String(e.n).padStart(6)} calls ${e.ms.toFixed(1).padStart(9)} ms`);
}

if (process.argv.includes('--child')) {
  const [shape, engine, steps] = process.argv.slice(process.argv.indexOf('--child') + 1);
  await child(shape as Shape, engine as Engine, Number(steps));
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
];
const gib = (b: number | null) => (b === null ? 'n/a' : `${(b / 2 ** 30).toFixed(2)} GiB`);

for (const shape of shapes) {
  const c = SHAPES[shape];
  console.log(
    `shape ${shape} (H ${c.H}, ${c.heads}/${c.kv} heads of ${c.hd}, I ${c.inter}, V ${c.V}, Vd ${c.Vd}, B ${c.B} x T ${c.T}, TTT ${TTT})`,
  );
  for (const engine of engines) {
    const r = spawnSync(
      process.execPath,
      ['--import', 'tsx', fileURLToPath(import.meta.url), '--child', shape, engine, String(steps), ...childFlags],
      {
        encoding: 'utf8',
        maxBuffer: 1 << 26,
      },
    );
    const line = r.stdout.trim().split('\n').pop() ?? '';
    if (r.status !== 0 || !line.startsWith('{')) {
      console.log(`  ${engine}: failed (exit ${r.status})\n${r.stderr.slice(-2000)}`);
      continue;
    }
    const res = JSON.parse(line);
    console.log(
      `  specforge ${engine.padEnd(5)}: ${res.msPerStep.toFixed(0)} ms/step, ${((1000 * res.tokens) / res.msPerStep).toFixed(0)} tokens/s ` +
        `(median of ${steps}: ${res.runs.map((x: number) => x.toFixed(0)).join(' ')}); wasm heap ${gib(res.heap)}, peak RSS ${gib(res.rss)}`,
    );
    if (process.argv.includes('--phases'))
      console.log(`    per step: ${PHASES.map((p) => `${p} ${res.phases[p].toFixed(0)} ms`).join(', ')}`);
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
