// `specforge train` end to end on a small random-weight target: offline and online give the same
// losses; a run interrupted after a checkpoint and resumed ends with the uninterrupted run's weights;
// checkpoints have the SGLang EAGLE-3 layout.
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
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'train-test-'));
const target = path.join(work, 'target');

before(() => makeRandomTarget(target, 5));

function recipe(name: string, training: Record<string, unknown>, captureDtype = 'float32', store = `store-${captureDtype}`): string {
  const file = path.join(work, `${name}.yaml`);
  const t = Object.entries({ batch_size: 2, learning_rate: 0.003, output_dir: path.join(work, 'ckpt'), log_interval: 1, ...training })
    .map(([k, v]) => `  ${k}: ${v}\n`)
    .join('');
  fs.writeFileSync(
    file,
    `model:\n  target: ${target}\n  aux_layer_ids: [1, 2, 4]\n  draft_vocab_size: 100\n` +
      `data:\n  train: ${path.join(repo, 'data/corpus/reasoning-eval.jsonl')}\n  format: sharegpt\n  max_length: 64\n  store: ${path.join(work, store)}\n  cache_dir: ${path.join(work, 'cache')}\n` +
      `capture:\n  batch_size: 4\n  dtype: ${captureDtype}\n  samples_per_shard: 16\n  limit: 40\n` +
      `training:\n${t}runtime:\n  backend: wasm\n  seed: 7\n`,
  );
  return file;
}

const run = (...args: string[]) => spawnSync(process.execPath, [bin, 'train', ...args], { encoding: 'utf8' });
const metrics = (run: string) =>
  fs
    .readFileSync(path.join(work, 'ckpt', run, 'metrics.jsonl'), 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l))
    .filter((m) => m.split === 'train');

describe('train', () => {
  test('offline (captured first, float32 store) and online give the same losses over 20 steps', () => {
    const off = run('--recipe', recipe('offline', { max_steps: 20 }));
    assert.equal(off.status, 0, off.stderr + off.stdout);
    assert.match(off.stdout, /capturing first/);
    const on = run('--recipe', recipe('online', { max_steps: 20, mode: 'online' }, 'float32', 'store-online'));
    assert.equal(on.status, 0, on.stderr + on.stdout);
    const a = metrics('offline');
    const b = metrics('online');
    assert.equal(a.length, 20);
    for (let i = 0; i < 20; i++) assert.ok(maxAbsDiff(a[i].loss, b[i].loss) <= 1e-4, `step ${i + 1}: ${a[i].loss[0]} vs ${b[i].loss[0]}`);
    const mean = (rows: { loss: number[] }[]) => rows.reduce((x, r) => x + r.loss[0], 0) / rows.length;
    assert.ok(mean(a.slice(15)) < mean(a.slice(0, 5)), 'the loss goes down');
  });

  test('checkpoints hold the SGLang EAGLE-3 layout', () => {
    const dir = path.join(work, 'ckpt', 'offline', 'step-20');
    const config = JSON.parse(fs.readFileSync(path.join(dir, 'config.json'), 'utf8'));
    assert.deepEqual(config.architectures, ['LlamaForCausalLMEagle3']);
    assert.equal(config.num_hidden_layers, 1);
    assert.equal(config.draft_vocab_size, 100);
    assert.equal(config.vocab_size, 335);
    assert.deepEqual(config.eagle_config.eagle_aux_hidden_state_layer_ids, [1, 2, 4]);
    const f = new SafetensorsFile(path.join(dir, 'model.safetensors'));
    assert.ok(!f.names().some((n) => n.includes('embed')), 'no embedding');
    assert.deepEqual(f.info('fc.weight'), { dtype: 'F32', shape: [32, 96] });
    assert.deepEqual(f.info('midlayer.self_attn.q_proj.weight'), { dtype: 'F32', shape: [32, 64] });
    assert.deepEqual(f.info('midlayer.self_attn.k_proj.weight'), { dtype: 'F32', shape: [16, 64] });
    assert.deepEqual(f.info('lm_head.weight'), { dtype: 'F32', shape: [100, 32] });
    assert.deepEqual(f.info('d2t'), { dtype: 'I64', shape: [100] });
    assert.deepEqual(f.info('t2d'), { dtype: 'BOOL', shape: [335] });
    const d2t = f.read('d2t').data as BigInt64Array;
    const t2d = f.read('t2d').data as Uint8Array;
    d2t.forEach((o, i) => assert.equal(t2d[i + Number(o)], 1));
    assert.equal(
      t2d.reduce((a, b) => a + b, 0),
      100,
    );
    assert.deepEqual(
      fs.readdirSync(path.join(work, 'ckpt', 'offline')).filter((d) => d.startsWith('step-')),
      ['step-20'],
    );
    // Serving loaders glob *.safetensors in the folder: only the model may be there.
    assert.deepEqual(
      fs.readdirSync(dir).filter((f) => f.endsWith('.safetensors')),
      ['model.safetensors'],
    );
  });

  test('a run killed after a checkpoint and resumed ends with the uninterrupted weights', async () => {
    const whole = run('--recipe', recipe('whole', { max_steps: 8, save_interval: 4 }));
    assert.equal(whole.status, 0, whole.stderr);
    const file = recipe('killed', { max_steps: 8, save_interval: 4 });
    const runDir = path.join(work, 'ckpt', 'killed');
    const child = spawn(process.execPath, [bin, 'train', '--recipe', file], { stdio: 'ignore' });
    await new Promise<void>((resolve) => {
      const poll = setInterval(() => {
        if (fs.existsSync(path.join(runDir, 'step-4', 'training_state', 'trainer_state.json'))) {
          clearInterval(poll);
          child.kill('SIGKILL');
          resolve();
        }
      }, 10);
    });
    await new Promise((r) => child.once('exit', r));
    assert.ok(!fs.existsSync(path.join(runDir, 'step-8')), 'killed before the end');
    const resumed = run('--recipe', file, '--resume', 'latest');
    assert.equal(resumed.status, 0, resumed.stderr);
    assert.match(resumed.stdout, /resumed from .*step-4 at step 4/);
    const a = new SafetensorsFile(path.join(work, 'ckpt', 'whole', 'step-8', 'model.safetensors'));
    const b = new SafetensorsFile(path.join(runDir, 'step-8', 'model.safetensors'));
    for (const n of a.names()) {
      const x = a.read(n).data;
      const y = b.read(n).data;
      if (x instanceof Float32Array) assert.ok(maxAbsDiff(x, y as Float32Array) <= 1e-6, n);
      else assert.deepEqual(x, y, n);
    }
  });

  test('resuming with a changed recipe is refused, naming the fields that differ', () => {
    const changed = recipe('killed', { max_steps: 8, save_interval: 4, learning_rate: 0.01 });
    const r = run('--recipe', changed, '--resume', 'latest');
    assert.notEqual(r.status, 0);
    assert.match(
      r.stderr,
      /step-8: written by a run with other model, data or training settings \(training\.learning_rate is 0\.003 in the checkpoint, 0\.01 in the recipe\)/,
    );
    assert.doesNotMatch(r.stdout, /capturing/, 'refused before any work');
  });
});
