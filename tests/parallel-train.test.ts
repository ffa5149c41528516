// Data-parallel training equals one worker: 2 ranks with per-rank batch b against 1 rank with batch 2b
// (same seed and data order), and resume with 2 ranks (after a kill, and after a failing rank) is exact.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { SafetensorsFile } from '../src/io/safetensors.ts';
import {
  assertExactResume,
  killAtMarker,
  makeRandomTarget,
  maxAbsDiff,
  metricsRows,
  once,
  removeTempDirs,
  repoRoot as repo,
  specforge,
  stepDirs,
  tempDir,
} from './helpers.ts';

const work = tempDir('parallel-train-');
const target = path.join(work, 'target');

before(() => makeRandomTarget(target, 5));
after(removeTempDirs);

/** A 10-step run with SpecExit heads, the micro-batch run in chunks of at most `chunkTokens` positions. */
function recipe(name: string, batch: number, workers: number, chunkTokens = 100, recompute = 'auto', step = 'auto'): string {
  const file = path.join(work, `${name}.yaml`);
  fs.writeFileSync(
    file,
    `model:\n  target: ${target}\n  aux_layer_ids: [1, 2, 4]\n  draft_vocab_size: 100\n` +
      `data:\n  train: ${path.join(repo, 'data/corpus/reasoning-eval.jsonl')}\n  format: sharegpt\n  max_length: 160\n  answer_extractor: gsm8k\n  store: ${path.join(work, 'store')}\n  cache_dir: ${path.join(work, 'cache')}\n` +
      `capture:\n  batch_size: 4\n  dtype: float32\n  limit: 48\n` +
      `training:\n  batch_size: ${batch}\n  max_steps: 10\n  learning_rate: 0.003\n  output_dir: ${path.join(work, 'ckpt')}\n  log_interval: 1\n  save_interval: 5\n  specexit: true\n  chunk_tokens: ${chunkTokens}\n  recompute: ${recompute}\n` +
      `parallel:\n  workers: ${workers}\nruntime:\n  backend: wasm\n  seed: 3\n  train_step: ${step}\n`,
  );
  return file;
}

const train = (...args: string[]) => specforge(['train', ...args]);
const runDir = (run: string) => path.join(work, 'ckpt', run);
const lossRows = (run: string) => metricsRows(runDir(run)).filter((m) => m.split === 'train') as Record<string, number[]>[];
/** A run of the recipe `name` (batch, workers, chunk_tokens, recompute, train_step), made once by the first test that reads it. */
const runs = new Map<string, () => void>();
function ran(name: string, batch: number, workers: number, chunkTokens?: number, recompute?: string, step?: string): void {
  if (!runs.has(name))
    runs.set(
      name,
      once(() => {
        const r = train('--recipe', recipe(name, batch, workers, chunkTokens, recompute, step));
        assert.equal(r.status, 0, r.stderr + r.stdout);
      }),
    );
  runs.get(name)!();
}
const one = () => ran('one', 4, 1);
const two = () => ran('two', 2, 2);
const weights = (run: string, step: number) => new SafetensorsFile(path.join(runDir(run), `step-${step}`, 'model.safetensors'));
/** Every float tensor of two runs' step-`step` checkpoints agrees within `tol`. */
function assertSameWeights(runA: string, runB: string, step: number, tol: number): void {
  const wa = weights(runA, step);
  const wb = weights(runB, step);
  for (const n of wa.names()) {
    const x = wa.read(n).data;
    if (x instanceof Float32Array) assert.ok(maxAbsDiff(x, wb.read(n).data as Float32Array) <= tol, n);
  }
}

describe('data-parallel training', () => {
  test('2 workers x batch 2 equal 1 worker x batch 4: losses and weights within 1e-5 after 10 steps', () => {
    one();
    two();
    const a = lossRows('one');
    const b = lossRows('two');
    assert.equal(a.length, 10);
    for (let i = 0; i < 10; i++) {
      assert.ok(maxAbsDiff(a[i].loss, b[i].loss) <= 1e-5, `step ${i + 1} losses`);
      assert.deepEqual(a[i].acc, b[i].acc, `step ${i + 1} accuracies`);
    }
    assertSameWeights('one', 'two', 10, 1e-5);
    assert.ok(
      a.every((m) => m.specexit_loss.every((l: number) => l > 0)),
      'the SpecExit heads train',
    );
    a.forEach((m, i) => assert.ok(maxAbsDiff(m.specexit_loss, b[i].specexit_loss) <= 1e-5, `step ${i + 1} SpecExit losses`));
  });

  test('the micro-batch run in chunks equals it run whole: losses and weights within 1e-5 after 10 steps', () => {
    one();
    ran('whole', 4, 1, 0);
    const a = lossRows('one');
    const b = lossRows('whole');
    for (let i = 0; i < 10; i++) {
      assert.ok(maxAbsDiff(a[i].loss, b[i].loss) <= 1e-5, `step ${i + 1} losses`);
      assert.ok(maxAbsDiff(a[i].specexit_loss, b[i].specexit_loss) <= 1e-5, `step ${i + 1} SpecExit losses`);
      assert.deepEqual(a[i].acc, b[i].acc, `step ${i + 1} accuracies`);
    }
    assertSameWeights('one', 'whole', 10, 1e-5);
  });

  // The runs above take the TTT step as one ONNX Runtime graph (runtime.train_step auto); these run tfjs ops.
  const sameRuns = (x: string, y: string) => {
    const a = lossRows(x);
    const b = lossRows(y);
    for (let i = 0; i < 10; i++) {
      assert.ok(maxAbsDiff(a[i].loss, b[i].loss) <= 1e-5, `step ${i + 1} losses`);
      assert.ok(maxAbsDiff(a[i].specexit_loss, b[i].specexit_loss) <= 1e-5, `step ${i + 1} SpecExit losses`);
      assert.deepEqual(a[i].acc, b[i].acc, `step ${i + 1} accuracies`);
    }
    assertSameWeights(x, y, 10, 1e-5);
  };

  test('the TTT step as tfjs ops (taped) equals it as one ONNX Runtime graph: losses and weights within 1e-5 after 10 steps', () => {
    one();
    ran('taped', 4, 1, 100, 'off', 'tfjs');
    sameRuns('one', 'taped');
  });

  test('recomputing the TTT steps in the backward pass (tfjs) equals the taped run: losses and weights within 1e-5 after 10 steps', () => {
    ran('taped', 4, 1, 100, 'off', 'tfjs');
    ran('recompute', 2, 2, 100, 'on', 'tfjs');
    sameRuns('taped', 'recompute');
  });

  test('a 2-worker run killed after a checkpoint resumes from it and ends bit-identical to the uninterrupted run', async () => {
    two();
    const file = recipe('killed2', 2, 2);
    // Rank 1 stops for good before step 7 (steps 1-6 trained, step-5 saved; rank 0 waits for it), then the process is killed.
    await killAtMarker(['train', '--recipe', file], /rank 1: injected hang at step 6 /, { env: { SPECFORGE_INJECT_FAULT: '1:6:hang' } });
    assert.deepEqual(stepDirs(runDir('killed2')), ['step-5']);
    const killedRows = metricsRows(runDir('killed2'));
    const resumed = train('--recipe', file, '--resume', 'latest');
    await assertExactResume({ runDir: runDir('killed2'), reference: runDir('two'), from: 5, to: 10, killedRows, resumed });
  });

  test('a rank that fails stops the run with its error; the last checkpoint stays valid and --resume <it> continues exactly', async () => {
    two();
    const file = recipe('fault', 2, 2);
    const failed = specforge(['train', '--recipe', file], { SPECFORGE_INJECT_FAULT: '1:7' });
    assert.equal(failed.status, 1, failed.stdout);
    assert.match(failed.stderr, /rank 1: injected fault at step 7/);
    // Step 5 was saved before the failure; nothing later and no half-written folder is left.
    assert.deepEqual(
      fs.readdirSync(runDir('fault')).filter((f) => f.startsWith('step-')),
      ['step-5'],
    );
    const killedRows = metricsRows(runDir('fault'));
    assert.deepEqual(
      killedRows.map((r) => r.step),
      [1, 2, 3, 4, 5, 6, 7],
    );
    // The checkpoint is whole: resuming from it (named as a folder) ends where the uninterrupted 2-worker run
    // ended, to the bit.
    const resumed = train('--recipe', file, '--resume', path.join(runDir('fault'), 'step-5'));
    await assertExactResume({ runDir: runDir('fault'), reference: runDir('two'), from: 5, to: 10, killedRows, resumed });
  });
});
