// specforge train and capture under mpirun: 2 MPI processes at per-rank batch b equal 1 process at batch
// 2b (and 2 worker_threads, to the bit); a checkpoint written under one launcher resumes exactly under the
// other; a rank that throws or is killed ends the job, leaving the last checkpoint whole; 2 processes
// regenerate and capture the same bytes as 1. Some jobs run over TCP (shared memory off), the transport
// between machines. Without Open MPI or the built binding the tests skip, naming what is missing.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { setTimeout } from 'node:timers/promises';
import { SafetensorsFile } from '../src/io/safetensors.ts';
import {
  assertExactResume,
  CHILD_TIMEOUT_MS,
  makeRandomTarget,
  maxAbsDiff,
  metricsRows,
  mpiMissing,
  mpirunAtMarker,
  mpirunOptions,
  mpirunSpecforge,
  once,
  removeTempDirs,
  repoRoot as repo,
  specforge,
  stepDirs,
  tempDir,
} from './helpers.ts';

const skip = mpiMissing();
const work = tempDir('mpi-train-');
const target = path.join(work, 'target');

before(() => (skip ? undefined : makeRandomTarget(target, 5)));
after(removeTempDirs);

/** A 10-step run with SpecExit heads (the recipe of tests/parallel-train.test.ts). */
function recipe(name: string, batch: number, workers: number): string {
  const file = path.join(work, `${name}.yaml`);
  fs.writeFileSync(
    file,
    `model:\n  target: ${target}\n  aux_layer_ids: [1, 2, 4]\n  draft_vocab_size: 100\n` +
      `data:\n  train: ${path.join(repo, 'data/corpus/reasoning-eval.jsonl')}\n  format: sharegpt\n  max_length: 160\n  answer_extractor: gsm8k\n  store: ${path.join(work, 'store')}\n  cache_dir: ${path.join(work, 'cache')}\n` +
      `capture:\n  batch_size: 4\n  dtype: float32\n  limit: 48\n` +
      `training:\n  batch_size: ${batch}\n  max_steps: 10\n  learning_rate: 0.003\n  output_dir: ${path.join(work, 'ckpt')}\n  log_interval: 1\n  save_interval: 5\n  specexit: true\n  chunk_tokens: 100\n` +
      `parallel:\n  workers: ${workers}\nruntime:\n  backend: wasm\n  seed: 3\n`,
  );
  return file;
}

const runDir = (run: string) => path.join(work, 'ckpt', run);
const lossRows = (run: string) => metricsRows(runDir(run)).filter((m) => m.split === 'train') as Record<string, number[]>[];
const untimed = ({ time: _t, tokens_per_s: _r, ...row }: Record<string, unknown>) => row;
const ok = (r: { status: number | null; stdout: string; stderr: string }) => assert.equal(r.status, 0, r.stderr + r.stdout);

/** The runs several tests compare against, each made by the first test that needs it. */
const one = once(() => ok(specforge(['train', '--recipe', recipe('one', 4, 1)])));
const threads = once(() => ok(specforge(['train', '--recipe', recipe('threads', 2, 2)])));
// The recipe says 1 worker: under mpirun the process count decides.
const mpi = once(() => ok(mpirunSpecforge(mpirunOptions(2), ['train', '--recipe', recipe('mpi', 2, 1)])));

/**
 * Resolves once the process holding `run`'s lock (if a killed rank left one) no longer exists: mpirun may
 * end before its other ranks are gone or reaped, and a resume would find the lock held.
 */
async function lockHolderGone(run: string): Promise<void> {
  let text: string;
  try {
    text = fs.readFileSync(path.join(runDir(run), 'train.lock'), 'utf8');
  } catch {
    return; // released
  }
  await processGone(JSON.parse(text).pid);
}

/** Resolves once process `pid` no longer exists; throws after CHILD_TIMEOUT_MS. */
async function processGone(pid: number): Promise<void> {
  for (const t0 = Date.now(); Date.now() - t0 < CHILD_TIMEOUT_MS; await setTimeout(100)) {
    try {
      process.kill(pid, 0);
    } catch {
      return;
    }
  }
  throw new Error(`process ${pid} still exists ${CHILD_TIMEOUT_MS / 1000} s after its job ended`);
}

/** Every float tensor of two runs' step-`step` checkpoints agrees within `tol`. */
function assertSameWeights(runA: string, runB: string, step: number, tol: number): void {
  const read = (run: string) => new SafetensorsFile(path.join(runDir(run), `step-${step}`, 'model.safetensors'));
  const wa = read(runA);
  const wb = read(runB);
  for (const n of wa.names()) {
    const x = wa.read(n).data;
    if (x instanceof Float32Array) assert.ok(maxAbsDiff(x, wb.read(n).data as Float32Array) <= tol, n);
  }
}

describe('training under mpirun', () => {
  test('2 MPI processes x batch 2 equal 1 process x batch 4 (losses and weights within 1e-5 after 10 steps), and 2 worker_threads to the bit', {
    skip,
  }, () => {
    one();
    mpi();
    const a = lossRows('one');
    const b = lossRows('mpi');
    assert.equal(b.length, 10);
    for (let i = 0; i < 10; i++) {
      assert.ok(maxAbsDiff(a[i].loss, b[i].loss) <= 1e-5, `step ${i + 1} losses`);
      assert.ok(maxAbsDiff(a[i].specexit_loss, b[i].specexit_loss) <= 1e-5, `step ${i + 1} SpecExit losses`);
      assert.deepEqual(a[i].acc, b[i].acc, `step ${i + 1} accuracies`);
    }
    assert.ok(
      b.every((m) => m.specexit_loss.every((l) => l > 0)),
      'the SpecExit heads train',
    );
    assertSameWeights('one', 'mpi', 10, 1e-5);
    // Two ranks add two numbers: the same float32 sum whichever launcher adds them.
    threads();
    assert.deepEqual(metricsRows(runDir('mpi')).map(untimed), metricsRows(runDir('threads')).map(untimed), 'metrics rows');
    assertSameWeights('threads', 'mpi', 10, 0);
  });

  test('a rank killed with SIGKILL ends the job (over TCP); its last checkpoint resumes under worker_threads, ending as the uninterrupted run', {
    skip,
  }, async () => {
    mpi();
    const file = recipe('killed', 2, 2);
    // Rank 1 stops for good before step 7 (step-5 saved, rank 0 waiting for it in an all-reduce); then it is killed.
    const killed = await mpirunAtMarker(
      mpirunOptions(2, true),
      ['train', '--recipe', file],
      /rank 1: injected hang at step 6 \(SPECFORGE_INJECT_FAULT, pid \d+\)/,
      { SPECFORGE_INJECT_FAULT: '1:6:hang' },
      (output) => process.kill(Number(/injected hang at step 6 \(SPECFORGE_INJECT_FAULT, pid (\d+)\)/.exec(output)![1]), 'SIGKILL'),
    );
    assert.notEqual(killed.status, 0, killed.stdout);
    await lockHolderGone('killed');
    assert.deepEqual(stepDirs(runDir('killed')), ['step-5']);
    const killedRows = metricsRows(runDir('killed'));
    const resumed = specforge(['train', '--recipe', file, '--resume', 'latest', '--workers', '2']);
    await assertExactResume({ runDir: runDir('killed'), reference: runDir('mpi'), from: 5, to: 10, killedRows, resumed });
  });

  test('a rank that throws stops the job with its message (MPI abort); the checkpoint left resumes exactly under mpirun over TCP', {
    skip,
  }, async () => {
    mpi();
    const file = recipe('fault', 2, 2);
    const failed = mpirunSpecforge(mpirunOptions(2), ['train', '--recipe', file], { SPECFORGE_INJECT_FAULT: '1:7' });
    assert.notEqual(failed.status, 0, failed.stdout);
    assert.match(failed.stderr, /specforge: rank 1: injected fault at step 7 \(SPECFORGE_INJECT_FAULT\)/);
    assert.deepEqual(stepDirs(runDir('fault')), ['step-5'], 'nothing later, and no half-written folder');
    await lockHolderGone('fault');
    const killedRows = metricsRows(runDir('fault'));
    assert.deepEqual(
      killedRows.map((r) => r.step),
      [1, 2, 3, 4, 5, 6, 7],
    );
    const resumed = mpirunSpecforge(mpirunOptions(2, true), ['train', '--recipe', file, '--resume', path.join(runDir('fault'), 'step-5')]);
    await assertExactResume({ runDir: runDir('fault'), reference: runDir('mpi'), from: 5, to: 10, killedRows, resumed });
  });

  test('a checkpoint written by worker_threads resumes under mpirun, ending as the uninterrupted run', { skip }, async () => {
    threads();
    // The worker_threads run's folder under another recipe file of the same fields (so the same run key).
    const file = recipe('from-threads', 2, 2);
    fs.cpSync(runDir('threads'), runDir('from-threads'), { recursive: true });
    const killedRows = metricsRows(runDir('from-threads'));
    const resumed = mpirunSpecforge(mpirunOptions(2), [
      'train',
      '--recipe',
      file,
      '--resume',
      path.join(runDir('from-threads'), 'step-5'),
      '--overwrite',
    ]);
    await assertExactResume({ runDir: runDir('from-threads'), reference: runDir('mpi'), from: 5, to: 10, killedRows, resumed });
  });

  test('--workers other than the process count is refused, naming both', { skip }, () => {
    const r = mpirunSpecforge(mpirunOptions(2), ['train', '--recipe', recipe('refused', 2, 2), '--workers', '3']);
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, /--workers 3: under mpirun or srun each process is one rank, and this job has 2; leave --workers out/);
  });
});

describe('capture under mpirun', () => {
  /** 12 conversations regenerated (8 new tokens a turn) and captured in shards of 3, into `<name>/store`. */
  function captureRecipe(name: string): string {
    const file = path.join(work, `${name}.yaml`);
    const data = path.join(work, 'twelve.jsonl');
    fs.writeFileSync(
      data,
      fs.readFileSync(path.join(repo, 'data/corpus/reasoning-eval.jsonl'), 'utf8').split('\n').slice(0, 12).join('\n'),
    );
    fs.writeFileSync(
      file,
      `model:\n  target: ${target}\n  aux_layer_ids: [1, 2, 4]\n  draft_vocab_size: 64\n` +
        `data:\n  train: ${data}\n  format: sharegpt\n  template: tokenizer\n  max_length: 160\n  regenerate: true\n  store: ${path.join(work, name, 'store')}\n  cache_dir: ${path.join(work, name, 'cache')}\n` +
        `regenerate:\n  max_new_tokens: 8\n  batch_size: 5\n` +
        `capture:\n  batch_size: 2\n  samples_per_shard: 3\n` +
        `runtime:\n  backend: wasm\n`,
    );
    return file;
  }
  /** Every file under `dir` (relative name to bytes). */
  function files(dir: string): Map<string, Buffer> {
    return new Map(
      (fs.readdirSync(dir, { recursive: true }) as string[])
        .filter((f) => fs.statSync(path.join(dir, f)).isFile())
        .sort()
        .map((f) => [f, fs.readFileSync(path.join(dir, f))]),
    );
  }

  test('2 MPI processes regenerate and capture a store byte-identical to 1 process’s', { skip }, () => {
    ok(specforge(['capture', '--recipe', captureRecipe('capture-one')]));
    const two = mpirunSpecforge(mpirunOptions(2), ['capture', '--recipe', captureRecipe('capture-mpi')]);
    ok(two);
    assert.match(two.stdout, /captured 12 samples, \d+ tokens in [\d.]+ s \(\d+ tok\/s on 2 workers\)/);
    const a = files(path.join(work, 'capture-one', 'store', 'train'));
    const b = files(path.join(work, 'capture-mpi', 'store', 'train'));
    assert.deepEqual([...b.keys()], [...a.keys()]);
    assert.equal([...a.keys()].filter((f) => f.endsWith('.arrow')).length, 4, 'four shards of 3');
    for (const [f, bytes] of a) assert.ok(bytes.equals(b.get(f)!), `${f} differs`);
    const regenerated = (name: string) => files(path.join(work, name, 'cache', 'regenerated'));
    const ra = regenerated('capture-one');
    assert.ok(ra.size > 0, 'the answers were regenerated');
    assert.deepEqual(regenerated('capture-mpi'), ra, 'regenerated answers');
  });
});
