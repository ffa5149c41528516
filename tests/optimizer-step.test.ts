// One rank's optimizer step (src/train/step.ts) over several steps: the gradients it applies are the TTT
// loss's, clipped by their float64 global norm, and nothing it makes outlives the step.
import assert from 'node:assert/strict';
import { before, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../src/backend/backend.ts';
import type { DraftConfig } from '../src/draft/config.ts';
import { Eagle3Draft } from '../src/draft/eagle3.ts';
import { SoloCollective } from '../src/parallel/collective.ts';
import { loadRecipe } from '../src/recipe/recipe.ts';
import type { FeatureSample } from '../src/store/schema.ts';
import { AdamW } from '../src/train/optimizer.ts';
import { OptimizerStep } from '../src/train/step.ts';
import { TeacherHead } from '../src/train/teacher-head.ts';
import { Rng } from '../src/util/random.ts';

before(async () => {
  await initBackend('wasm');
});

const config: DraftConfig = {
  hiddenSize: 16,
  targetHiddenSize: 16,
  intermediateSize: 24,
  numHeads: 2,
  numKvHeads: 1,
  headDim: 8,
  vocabSize: 30,
  draftVocabSize: 20,
  rmsNormEps: 1e-6,
  ropeTheta: 10000,
  ropeScaling: null,
  maxPositionEmbeddings: 64,
  auxLayerIds: [1, 2, 3],
};

function setup(maxGradNorm: number) {
  const rng = new Rng(3);
  const draft = Eagle3Draft.init(config, 1);
  const H = config.hiddenSize;
  const V = config.vocabSize;
  const table = tf.tensor2d(rng.normalArray(V * H, 0.5), [V, H]);
  const head = new TeacherHead(table, tf.tensor2d(rng.normalArray(H * V, 0.5), [H, V]), 1);
  const used = Int32Array.from({ length: config.draftVocabSize }, (_, i) => i + 5);
  const t2d = new Uint8Array(V);
  for (const u of used) t2d[u] = 1;
  const sample = (i: number, T: number): FeatureSample => ({
    id: `s${i}`,
    inputIds: Int32Array.from({ length: T }, () => rng.int(V)),
    lossMask: Uint8Array.from({ length: T }, (_, t) => (t > 1 ? 1 : 0)),
    aux: Float32Array.from(rng.normalArray(T * 3 * H)),
    finalHidden: Float32Array.from(rng.normalArray(T * H)),
    thinkSpans: new Int32Array(0),
    answerPositions: new Int32Array(0),
    answer: '',
  });
  const samples = [sample(0, 7), sample(1, 5), sample(2, 6)];
  const recipe = loadRecipe(fileURLToPath(new URL('../recipes/quickstart.yaml', import.meta.url)), {
    'training.batch_size': samples.length,
    'training.specexit': false,
    'training.max_grad_norm': maxGradNorm,
    'runtime.gemm': 'tfjs',
    'runtime.train_step': 'tfjs',
  });
  const model = { draft, head, vocab: { used, t2d }, auxWidth: 3 * H, hidden: H };
  const opt = new AdamW({ beta1: 0.9, beta2: 0.95, weightDecay: 0.01 });
  const step = new OptimizerStep(model, opt, new SoloCollective(), recipe);
  const weights = () => draft.variables().map((v) => Float32Array.from(v.dataSync() as Float32Array));
  const dispose = () => {
    opt.dispose();
    draft.dispose();
    head.dispose(); // and the table
  };
  return { draft, opt, step, samples, weights, dispose };
}

test('an optimizer step clips by the float64 global norm, applies AdamW once, and leaves no tensor behind', () => {
  // With a norm limit far above the gradients', the first AdamW step moves each weight by lr * (1 - lr wd)
  // decay plus lr * sign(g) (|m / c1| / sqrt(v / c2) = 1 when m and v hold one gradient), so the update
  // reads back the gradients' signs; with a tight limit the moments hold the clipped gradients.
  const lr = 1e-3;
  const loose = setup(1e9);
  const before = loose.weights();
  loose.step.microBatch(loose.samples);
  const norm = loose.step.update(lr);
  const after = loose.weights();
  const m1 = loose.opt.state().m;
  let squares = 0;
  loose.draft.variables().forEach((v) => {
    const m = m1.get(v.name)!;
    for (const x of m) squares += (x / 0.1) ** 2; // m = (1 - beta1) g after one step
  });
  assert.ok(Math.abs(Math.sqrt(squares) - norm) <= 1e-5 * norm, `norm ${norm} vs ${Math.sqrt(squares)} from the moments`);
  loose.draft.variables().forEach((v, k) => {
    const m = m1.get(v.name)!;
    for (let i = 0; i < m.length; i++) {
      if (Math.abs(m[i] / 0.1) < 1e-4) continue; // sign(g) needs |g| well above eps

      const want = before[k][i] * (1 - lr * 0.01) - lr * Math.sign(m[i]);
      assert.ok(Math.abs(after[k][i] - want) <= 1e-6, `${v.name}[${i}]: ${after[k][i]} vs ${want}`);
    }
  });

  const tight = setup(norm / 4);
  tight.step.microBatch(tight.samples);
  assert.equal(tight.step.update(lr), norm, 'the same first gradients');
  const m2 = tight.opt.state().m;
  const scale = norm / 4 / (norm + 1e-6); // torch's clip_grad_norm_ factor
  const tightVars = tight.draft.variables(); // the same weights under their own variable names
  loose.draft.variables().forEach((v, k) => {
    const a = m1.get(v.name)!;
    const b = m2.get(tightVars[k].name)!;
    for (let i = 0; i < a.length; i++)
      assert.ok(Math.abs(b[i] - a[i] * scale) <= 1e-5 * Math.abs(a[i]) + 1e-12, `${v.name}[${i}]: ${b[i]} vs ${a[i] * scale} clipped`);
  });

  // Later steps: the tensor count stays where the first step left it.
  const count = tf.memory().numTensors;
  for (let s = 0; s < 3; s++) {
    tight.step.microBatch(tight.samples);
    tight.step.update(lr);
  }
  assert.equal(tf.memory().numTensors, count, 'tensors after three more steps');
  loose.dispose();
  tight.dispose();
});
