// Data-parallel training equals one worker: 2 ranks with per-rank batch b against 1 rank with batch 2b
// (same seed and data order), and resume with 2 ranks.
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { before, describe, test } from 'node:test';
import { SafetensorsFile } from '../src/io/safetensors.ts';
import { makeRandomTarget, maxAbsDiff } from './helpers.ts';

const repo = fileURLToPath(new URL('..', import.meta.url));
const bin = path.join(repo, 'bin', 'specforge.js');
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'parallel-train-'));
const target = path.join(work, 'target');

before(() => makeRandomTarget(target, 5));

/** A 10-step run with SpecExit heads, the micro-batch run in chunks of at most `chunkTokens` positions. */
function recipe(name: string, batch: number, workers: number, chunkTokens = 100, recompute = 'auto'): string {
  const file = path.join(work, `${name}.yaml`);
  fs.writeFileSync(
    file,
    `model:\n  target: ${target}\n  aux_layer_ids: [1, 2, 4]\n  draft_vocab_size: 100\n` +
      `data:\n  train: ${path.join(repo, 'data/corpus/reasoning-eval.jsonl')}\n  format: sharegpt\n  max_length: 160\n  answer_extractor: gsm8k\n  store: ${path.join(work, 'store')}\n  cache_dir: ${path.join(work, 'cache')}\n` +
      `capture:\n  batch_size: 4\n  dtype: float32\n  limit: 48\n` +
      `training:\n  batch_size: ${batch}\n  max_steps: 10\n  learning_rate: 0.003\n  output_dir: ${path.join(work, 'ckpt')}\n  log_interval: 1\n  save_interval: 5\n  specexit: true\n  chunk_tokens: ${chunkTokens}\n  recompute: ${recompute}\n` +
      `parallel:\n  workers: ${workers}\nruntime:\n  backend: wasm\n  seed: 3\n`,
  );
  return file;
}

const train = (...args: string[]) => spawnSync(process.execPath, [bin, 'train', ...args], { encoding: 'utf8' });
const lossRows = (run: string) =>
  fs
    .readFileSync(path.join(work, 'ckpt', run, 'metrics.jsonl'), 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l))
    .filter((m) => m.split === 'train');
const weights = (run: string, step: number) => new SafetensorsFile(path.join(work, 'ckpt', run, `step-${step}`, 'model.safetensors'));
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
    const one = train('--recipe', recipe('one', 4, 1));
    assert.equal(one.status, 0, one.stderr + one.stdout);
    const two = train('--recipe', recipe('two', 2, 2));
    assert.equal(two.status, 0, two.stderr + two.stdout);
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
    const whole = train('--recipe', recipe('whole', 4, 1, 0));
    assert.equal(whole.status, 0, whole.stderr + whole.stdout);
    const a = lossRows('one');
    const b = lossRows('whole');
    for (let i = 0; i < 10; i++) {
      assert.ok(maxAbsDiff(a[i].loss, b[i].loss) <= 1e-5, `step ${i + 1} losses`);
      assert.ok(maxAbsDiff(a[i].specexit_loss, b[i].specexit_loss) <= 1e-5, `step ${i + 1} SpecExit losses`);
      assert.deepEqual(a[i].acc, b[i].acc, `step ${i + 1} accuracies`);
    }
    assertSameWeights('one', 'whole', 10, 1e-5);
  });

  test('recomputing the TTT steps in the backward pass equals the taped run: losses and weights within 1e-5 after 10 steps', () => {
    const re = train('--recipe', recipe('recompute', 2, 2, 100, 'on'));
    assert.equal(re.status, 0, re.stderr + re.stdout);
    const a = lossRows('one');
    const b = lossRows('recompute');
    for (let i = 0; i < 10; i++) {
      assert.ok(maxAbsDiff(a[i].loss, b[i].loss) <= 1e-5, `step ${i + 1} losses`);
      assert.ok(maxAbsDiff(a[i].specexit_loss, b[i].specexit_loss) <= 1e-5, `step ${i + 1} SpecExit losses`);
      assert.deepEqual(a[i].acc, b[i].acc, `step ${i + 1} accuracies`);
    }
    assertSameWeights('one', 'recompute', 10, 1e-5);
  });

  test('resume works with 2 workers', async () => {
    const file = recipe('killed2', 2, 2);
    const runDir = path.join(work, 'ckpt', 'killed2');
    const child = spawn(process.execPath, [bin, 'train', '--recipe', file], { stdio: 'ignore' });
    await new Promise<void>((resolve) => {
      const poll = setInterval(() => {
        if (fs.existsSync(path.join(runDir, 'step-5', 'training_state', 'trainer_state.json'))) {
          clearInterval(poll);
          child.kill('SIGKILL');
          resolve();
        }
      }, 10);
    });
    await new Promise((r) => child.once('exit', r));
    assert.ok(!fs.existsSync(path.join(runDir, 'step-10')));
    const resumed = train('--recipe', file, '--resume', 'latest');
    assert.equal(resumed.status, 0, resumed.stderr);
    assertSameWeights('two', 'killed2', 10, 1e-6);
  });

  test('a rank that fails stops the run with its error; the last checkpoint stays valid and resumes', () => {
    const file = recipe('fault', 2, 2);
    const failed = spawnSync(process.execPath, [bin, 'train', '--recipe', file], {
      encoding: 'utf8',
      env: { ...process.env, SPECFORGE_INJECT_FAULT: '1:7' },
      timeout: 120_000, // a hang fails the test instead of blocking the suite
    });
    assert.equal(failed.signal, null, 'the run ended by itself');
    assert.notEqual(failed.status, 0);
    assert.match(failed.stderr, /rank 1: injected fault at step 7/);
    const runDir = path.join(work, 'ckpt', 'fault');
    // Step 5 was saved before the failure; nothing later and no half-written folder is left.
    assert.deepEqual(
      fs.readdirSync(runDir).filter((f) => f.startsWith('step-')),
      ['step-5'],
    );
    // The checkpoint is whole: resuming from it ends where the uninterrupted 2-worker run ended.
    const resumed = train('--recipe', file, '--resume', 'latest');
    assert.equal(resumed.status, 0, resumed.stderr);
    assertSameWeights('two', 'fault', 10, 1e-6);
  });
});
