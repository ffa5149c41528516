// One rank of bench/train-step.ts: a draft of the chosen shape on random features, timed over optimizer
// steps (the all-reduce and update included). Run by launchAllRanks, so N ranks share one process as
// `specforge train --workers N` does.
import { fileURLToPath } from 'node:url';
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../src/backend/backend.ts';
import { useOrtGemm } from '../src/backend/matmul.ts';
import { wasmHeapBytes } from '../src/backend/memory.ts';
import type { DraftConfig } from '../src/draft/config.ts';
import { Eagle3Draft } from '../src/draft/eagle3.ts';
import type { RankContext } from '../src/parallel/launch.ts';
import { loadRecipe } from '../src/recipe/recipe.ts';
import type { FeatureSample } from '../src/store/schema.ts';
import { AdamW } from '../src/train/optimizer.ts';
import { PHASES } from '../src/train/phases.ts';
import { OptimizerStep } from '../src/train/step.ts';
import { TeacherHead } from '../src/train/teacher-head.ts';
import { Rng } from '../src/util/random.ts';

export const SHAPES = {
  Q: { H: 96, heads: 4, kv: 2, hd: 24, inter: 256, V: 335, Vd: 256, B: 8, T: 128 },
  M: { H: 896, heads: 14, kv: 2, hd: 64, inter: 4864, V: 151936, Vd: 16000, B: 1, T: 512 },
  L: { H: 1024, heads: 16, kv: 8, hd: 128, inter: 3072, V: 151936, Vd: 16000, B: 1, T: 2048 },
} as const;
export type Shape = keyof typeof SHAPES;
export const TTT = 7;

// Engines: tfjs = every op and product in tfjs (wasm); gemm = tfjs ops with large products on ONNX Runtime's
// GEMM; graph = the whole TTT forward and backward pass as one ONNX Runtime graph (runtime.train_step ort).
export const ENGINES = {
  tfjs: { gemm: 'tfjs', step: 'tfjs' },
  gemm: { gemm: 'ort', step: 'tfjs' },
  graph: { gemm: 'ort', step: 'ort' },
} as const;
export type Engine = keyof typeof ENGINES;

export interface RankPayload {
  shape: Shape;
  engine: Engine;
  steps: number;
  /** ONNX Runtime threads of this rank. */
  threads: number;
  minMacs: number;
  kernels: boolean;
  /** training.recompute: auto, on or off. */
  recompute: 'auto' | 'on' | 'off';
}

export interface RankResult {
  runs: number[];
  phases: Record<string, number>;
  heap: number | null;
}

export async function runRank(ctx: RankContext): Promise<RankResult> {
  const { shape, engine, steps, threads, minMacs, kernels, recompute } = ctx.payload as RankPayload;
  const { rank } = ctx.collective;
  const c = SHAPES[shape];
  const { gemm, step: trainStep } = ENGINES[engine];
  await initBackend('wasm');
  if (gemm === 'ort') await useOrtGemm(threads, minMacs);
  const rng = new Rng(0); // the same draft and teacher on every rank
  const data = new Rng(1 + rank); // each rank its own samples
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
    inputIds: Int32Array.from({ length: c.T }, () => data.int(c.V)),
    lossMask: new Uint8Array(c.T).fill(1),
    aux: Float32Array.from(data.normalArray(c.T * 3 * c.H)),
    finalHidden: Float32Array.from(data.normalArray(c.T * c.H)),
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
    'training.recompute': recompute,
    'runtime.gemm': gemm,
    'runtime.train_step': trainStep,
  });
  const model = { draft, head, vocab: { used, t2d }, auxWidth: 3 * c.H, hidden: c.H };
  const step = new OptimizerStep(model, new AdamW(), ctx.collective, recipe);
  const ms: number[] = [];
  let warm = new Map<string, number>();
  for (let i = 0; i <= steps; i++) {
    const t0 = performance.now();
    step.microBatch(samples);
    step.update(1e-4);
    if (i === 0) warm = new Map(step.phases.ms);
    else ms.push(performance.now() - t0);
  }
  if (kernels && rank === 0)
    await printKernels(() => {
      step.microBatch(samples);
      step.update(1e-4);
    });
  const phases = Object.fromEntries(PHASES.map((p) => [p, (step.phases.ms.get(p)! - warm.get(p)!) / steps]));
  return { runs: ms, phases, heap: wasmHeapBytes() };
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
