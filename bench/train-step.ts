// One draft-training optimizer step on random features at three shapes, the same work as a plainly written
// PyTorch step (teacher logits rebuilt from the final hidden state with the target's lm_head [V, Ht] and cut
// to the draft vocabulary; fc; one decoder layer over 7 TTT steps; loss 0.8^i; clipping 0.5; AdamW):
//   Q  the quickstart draft (H 96, 4/2 heads, intermediate 256, V 335, Vd 256), batch 8 x T 128
//   M  a Qwen2.5-0.5B-sized draft (H 896, 14/2 heads of 64, intermediate 4864, V 151936, Vd 16000), 1 x 512
//   L  a Qwen3-0.6B-sized draft (H 1024, 16/8 heads of 128, intermediate 3072, V 151936, Vd 16000), 1 x 2048
// Usage: npm run bench:train-step -- [--shape Q,M,L] [--gemm tfjs,ort] [--steps 5] [--phases]
//        [--torch PATH/torch_ttt_bench.py [--torch-threads 2]]
// Each (shape, GEMM engine) runs in a fresh process on one rank (wasm backend): median ms per step after a
// warm-up step, tokens/s (batch x T per step), the wasm heap and peak RSS; --phases adds the wall time per
// phase (teacher, forward, backward, signals, host, all-reduce, optimizer). --torch runs a PyTorch reference
// of the same step (python3 with torch, e.g. Debian's python3-torch; never a dependency of this project)
// right after each shape, so the ratio compares runs made side by side on the same machine.
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../src/backend/backend.ts';
import { configureGemm } from '../src/backend/matmul.ts';
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

async function child(shape: Shape, gemm: 'tfjs' | 'ort', steps: number): Promise<void> {
  const c = SHAPES[shape];
  await initBackend('wasm');
  await configureGemm(gemm, 1);
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
  const phases = Object.fromEntries(PHASES.map((p) => [p, (step.phases.ms.get(p)! - warm.get(p)!) / steps]));
  console.log(JSON.stringify({ msPerStep: median(ms), runs: ms, phases, heap: wasmHeapBytes(), rss: peakRssBytes(), tokens: c.B * c.T }));
  process.exit(0);
}

if (process.argv.includes('--child')) {
  const [shape, gemm, steps] = process.argv.slice(process.argv.indexOf('--child') + 1);
  await child(shape as Shape, gemm as 'tfjs' | 'ort', Number(steps));
}

const shapes = arg('shape', 'Q,M,L').split(',') as Shape[];
for (const s of shapes) if (!(s in SHAPES)) throw new Error(`--shape ${s}: expected Q, M or L`);
const engines = arg('gemm', 'tfjs,ort').split(',') as ('tfjs' | 'ort')[];
for (const e of engines) if (e !== 'tfjs' && e !== 'ort') throw new Error(`--gemm ${e}: expected tfjs or ort`);
const steps = Number(arg('steps', '5'));
const torch = arg('torch', '');
const gib = (b: number | null) => (b === null ? 'n/a' : `${(b / 2 ** 30).toFixed(2)} GiB`);

for (const shape of shapes) {
  const c = SHAPES[shape];
  console.log(
    `shape ${shape} (H ${c.H}, ${c.heads}/${c.kv} heads of ${c.hd}, I ${c.inter}, V ${c.V}, Vd ${c.Vd}, B ${c.B} x T ${c.T}, TTT ${TTT})`,
  );
  for (const gemm of engines) {
    const r = spawnSync(process.execPath, ['--import', 'tsx', fileURLToPath(import.meta.url), '--child', shape, gemm, String(steps)], {
      encoding: 'utf8',
      maxBuffer: 1 << 26,
    });
    const line = r.stdout.trim().split('\n').pop() ?? '';
    if (r.status !== 0 || !line.startsWith('{')) {
      console.log(`  gemm ${gemm}: failed (exit ${r.status})\n${r.stderr.slice(-2000)}`);
      continue;
    }
    const res = JSON.parse(line);
    console.log(
      `  specforge, gemm ${gemm.padEnd(4)}: ${res.msPerStep.toFixed(0)} ms/step, ${((1000 * res.tokens) / res.msPerStep).toFixed(0)} tokens/s ` +
        `(median of ${steps}: ${res.runs.map((x: number) => x.toFixed(0)).join(' ')}); wasm heap ${gib(res.heap)}, peak RSS ${gib(res.rss)}`,
    );
    if (process.argv.includes('--phases'))
      console.log(`    per step: ${PHASES.map((p) => `${p} ${res.phases[p].toFixed(0)} ms`).join(', ')}`);
  }
  if (torch) {
    const env = { ...process.env };
    delete env.OPENBLAS_CORETYPE;
    delete env.OPENBLAS_L2_SIZE;
    const r = spawnSync('python3', [torch, shape, '--steps', String(steps), '--threads', arg('torch-threads', '2')], {
      encoding: 'utf8',
      env,
    });
    console.log(`  PyTorch reference: ${r.status === 0 ? r.stdout.trim() : `failed (exit ${r.status}) ${r.stderr.slice(-500)}`}`);
  }
}
