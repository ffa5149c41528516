// The pieces behind a guarded run, one at a time: the divergence rules, the checkpoint writer's refusal of
// weights and moments that are not finite, keep_last sparing the checkpoint just written, the run lock
// (held, stale, foreign) and the fields a resume refusal names.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { draftConfigFor } from '../src/draft/config.ts';
import { parseModelConfig } from '../src/io/hf-config.ts';
import { draftTensorShapes } from '../src/draft/eagle3.ts';
import { CheckpointError, listCheckpoints, pruneCheckpoints, saveCheckpoint, type TrainerState } from '../src/train/checkpoint.ts';
import { DivergenceGuard } from '../src/train/divergence.ts';
import { recipeDifferences } from '../src/train/run-dir.ts';
import { LOCK_FILE, RunLock, RunLockError } from '../src/train/run-lock.ts';
import { removeTempDirs, tempDir } from './helpers.ts';

after(removeTempDirs);

test('divergence: a non-finite loss or gradient norm, a zero gradient with a loss, a loss past the factor times the recent mean', () => {
  const g = new DivergenceGuard(10);
  assert.equal(g.microBatch(3), null);
  assert.equal(g.microBatch(Number.NaN), 'the loss is NaN');
  assert.equal(g.step(5, 0.3), null);
  assert.equal(g.step(4, 0.2), null);
  assert.match(g.step(4, Number.NaN)!, /^the gradient norm is NaN/);
  assert.match(g.step(4, Number.POSITIVE_INFINITY)!, /^the gradient norm is Infinity/);
  assert.match(g.step(4, 0)!, /^the gradient is 0 while the loss is 4/);
  assert.equal(g.step(0, 0), null, 'nothing to learn from (every position masked) is not a divergence');
  // The mean of 5, 4 and 0 is 3: 30 is not past 10 times it, 31 is.
  assert.equal(g.step(30, 1), null);
  const recent = (5 + 4 + 0 + 30) / 4;
  assert.match(g.step(10.01 * recent, 1)!, /times the mean 9\.75 of the previous 4 step\(s\) \(training\.divergence_factor 10\)/);
  // Only the last 10 healthy steps count.
  const h = new DivergenceGuard(10);
  h.step(1000, 1);
  for (let i = 0; i < 10; i++) h.step(1, 1);
  assert.match(h.step(11, 1)!, /the loss 11 is 11 times the mean 1 of the previous 10 step/);
  assert.equal(new DivergenceGuard(null).step(1, 1), null);
  const off = new DivergenceGuard(null);
  off.step(1, 1);
  assert.equal(off.step(1e6, 1), null, 'null: the loss alone never stops the run');
  assert.match(off.evaluation([1, Number.NaN])!, /held-out loss of TTT step 1 is NaN/);
  assert.equal(off.evaluation([1, 2]), null);
});

const modelConfig = parseModelConfig({
  architectures: ['LlamaForCausalLM'],
  hidden_size: 16,
  intermediate_size: 24,
  num_hidden_layers: 4,
  num_attention_heads: 2,
  num_key_value_heads: 1,
  vocab_size: 40,
});
const config = draftConfigFor(modelConfig, [0, 1, 2], 10);

function checkpointParts(step: number, poison?: { where: 'weight' | 'm' | 'v'; name: string; value: number }) {
  const weights = new Map<string, { shape: number[]; data: Float32Array }>();
  const m = new Map<string, Float32Array>();
  const v = new Map<string, Float32Array>();
  for (const [name, shape] of draftTensorShapes(config)) {
    const n = shape.reduce((a, b) => a * b, 1);
    weights.set(name, { shape, data: new Float32Array(n).fill(0.1) });
    m.set(name, new Float32Array(n));
    v.set(name, new Float32Array(n));
  }
  if (poison) {
    const target = poison.where === 'weight' ? weights.get(poison.name)!.data : (poison.where === 'm' ? m : v).get(poison.name)!;
    target[3] = poison.value;
  }
  const vocab = { d2t: new BigInt64Array(10), t2d: new Uint8Array(40).fill(1, 0, 10) };
  const state: TrainerState = { step, epoch: 0, batchInEpoch: step, totalSteps: 10, seed: 1, learningRate: 0.1, recipeKey: 'k' };
  return { weights, vocab, moments: { m, v }, state };
}

function save(
  runDir: string,
  step: number,
  keepLast: number,
  poison?: Parameters<typeof checkpointParts>[1],
  spare: string | null = null,
): string {
  const p = checkpointParts(step, poison);
  return saveCheckpoint(runDir, config, p.weights, p.vocab, p.moments, p.state, keepLast, false, spare);
}

test('a checkpoint is written only from finite weights and AdamW moments: otherwise nothing is written, naming the tensor', () => {
  const runDir = tempDir('finite-');
  save(runDir, 1, 3);
  for (const [where, what] of [
    ['weight', "the weight 'fc.weight'"],
    ['m', "the AdamW moment 'exp_avg.fc.weight'"],
    ['v', "the AdamW moment 'exp_avg_sq.fc.weight'"],
  ] as const) {
    for (const value of [Number.NaN, Number.NEGATIVE_INFINITY]) {
      assert.throws(
        () => save(runDir, 2, 3, { where, name: 'fc.weight', value }),
        (e: Error) =>
          e instanceof CheckpointError &&
          e.message === `not writing ${runDir}/step-2: ${what} is not finite (${value} at index 3; 1 of ${16 * 48} values are not finite)`,
      );
    }
  }
  assert.deepEqual(fs.readdirSync(runDir), ['step-1'], 'no step-2, no temporary folder');
});

test('keep_last: the checkpoint just written is kept, and the spared one (the last proven) until the trainer prunes; older runs with higher steps do not push it out', () => {
  const runDir = tempDir('keep-');
  save(runDir, 1, 1);
  save(runDir, 2, 1, undefined, path.join(runDir, 'step-1'));
  save(runDir, 3, 1, undefined, path.join(runDir, 'step-2'));
  assert.deepEqual(
    listCheckpoints(runDir).map((d) => path.basename(d)),
    ['step-2', 'step-3'],
    'keep_last 1, and the spared one',
  );
  pruneCheckpoints(runDir, 1, path.join(runDir, 'step-3'));
  assert.deepEqual(
    listCheckpoints(runDir).map((d) => path.basename(d)),
    ['step-3'],
  );
  // Checkpoints of higher step numbers (left by another run) cannot make the one just written go.
  const other = tempDir('keep-other-');
  for (const s of [4, 6]) save(other, s, 5);
  const written = save(other, 3, 1);
  assert.ok(fs.existsSync(written), 'step-3 is kept');
  assert.deepEqual(
    listCheckpoints(other).map((d) => path.basename(d)),
    ['step-3'],
  );
});

test('the run lock: a live holder is refused naming its pid; a dead one is taken over with a note; a lock of no process is refused; release removes only its own', () => {
  const runDir = tempDir('lock-');
  const notes: string[] = [];
  const a = RunLock.acquire(runDir, (m) => notes.push(m));
  assert.throws(
    () => RunLock.acquire(runDir, () => {}),
    (e: Error) =>
      e instanceof RunLockError &&
      e.message.startsWith(`${runDir} is in use by the train of pid ${process.pid} on ${os.hostname()} (since `) &&
      e.message.endsWith(`(if pid ${process.pid} is no specforge train, remove ${path.join(runDir, LOCK_FILE)})`),
  );
  a.release();
  assert.ok(!fs.existsSync(path.join(runDir, LOCK_FILE)));

  // A process that has exited: its pid runs no more.
  const dead = spawnSync(process.execPath, ['-e', 'console.log(process.pid)'], { encoding: 'utf8' });
  const deadPid = Number(dead.stdout.trim());
  fs.writeFileSync(
    path.join(runDir, LOCK_FILE),
    JSON.stringify({ pid: deadPid, host: os.hostname(), started: '2020-01-01T00:00:00.000Z' }),
  );
  const b = RunLock.acquire(runDir, (m) => notes.push(m));
  assert.deepEqual(notes, [
    `note: ${path.join(runDir, LOCK_FILE)} was left by pid ${deadPid} on ${os.hostname()} (since 2020-01-01T00:00:00.000Z), which no longer runs: taking it over`,
  ]);
  assert.equal(JSON.parse(fs.readFileSync(path.join(runDir, LOCK_FILE), 'utf8')).pid, process.pid);
  // Another run's lock (it took the folder over meanwhile) is not removed by this one's release.
  fs.writeFileSync(path.join(runDir, LOCK_FILE), JSON.stringify({ pid: deadPid, host: 'elsewhere', started: 'x' }));
  b.release();
  assert.ok(fs.existsSync(path.join(runDir, LOCK_FILE)));
  // A host this one cannot check counts as running.
  assert.throws(() => RunLock.acquire(runDir, () => {}), /in use by the train of pid \d+ on elsewhere/);
  fs.writeFileSync(path.join(runDir, LOCK_FILE), 'garbage');
  assert.throws(
    () => RunLock.acquire(runDir, () => {}),
    /train\.lock: not a lock of specforge train \(no pid and host in it\); remove it if no train runs in/,
  );
  assert.deepEqual(
    fs.readdirSync(runDir).filter((f) => f !== LOCK_FILE),
    [],
    'no temporary file is left',
  );
});

test('a resume refusal lists every differing field, both values', () => {
  assert.equal(
    recipeDifferences(
      { 'training.learning_rate': 0.003, 'data.max_length': 64, 'model.aux_layer_ids': [1, 2, 4] },
      { 'training.learning_rate': 0.01, 'data.max_length': 64, 'model.aux_layer_ids': [1, 2, 3], 'training.specexit': false },
    ),
    'training.learning_rate is 0.003 in the checkpoint, 0.01 in the recipe; model.aux_layer_ids is [1,2,4] in the checkpoint, [1,2,3] in the recipe; training.specexit is (absent) in the checkpoint, false in the recipe',
  );
});
