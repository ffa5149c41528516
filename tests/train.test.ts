// `specforge train` end to end on a small random-weight target: offline and online give the same
// losses; a run killed after a checkpoint resumes from it and ends bit-identical to the uninterrupted run;
// checkpoints have the SGLang EAGLE-3 layout.
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

const work = tempDir('train-test-');
const target = path.join(work, 'target');

before(() => makeRandomTarget(target, 5));
after(removeTempDirs);

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

const run = (...args: string[]) => specforge(['train', ...args]);
const runDir = (name: string) => path.join(work, 'ckpt', name);
const metrics = (name: string) => metricsRows(runDir(name)).filter((m) => m.split === 'train') as { loss: number[] }[];

/** The 20-step offline run (captured first, float32 store) that two tests read. */
const offline = once(() => {
  const r = run('--recipe', recipe('offline', { max_steps: 20 }));
  assert.equal(r.status, 0, r.stderr + r.stdout);
  return r;
});
/** Checkpoints every 2 steps of 8, the newest 2 kept. */
const rotating = { max_steps: 8, save_interval: 2, keep_last: 2 };
/** The uninterrupted run that the interrupted one is compared with. */
const whole = once(() => {
  const r = run('--recipe', recipe('whole', rotating));
  assert.equal(r.status, 0, r.stderr + r.stdout);
  return r;
});

describe('train', () => {
  test('offline (captured first, float32 store) and online give the same losses over 20 steps', () => {
    const off = offline();
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
    offline();
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

  test('a run killed after a checkpoint resumes from it and ends bit-identical to the uninterrupted run', async () => {
    whole();
    // keep_last 2: of the checkpoints at 2, 4, 6 and 8, the last two are left.
    assert.deepEqual(stepDirs(runDir('whole')), ['step-6', 'step-8']);
    const file = recipe('killed', rotating);
    // Stopped for good before step 6 (steps 1-5 trained and logged, step-2 and step-4 saved), then killed.
    await killAtMarker(['train', '--recipe', file], /rank 0: injected hang at step 5 /, { env: { SPECFORGE_INJECT_FAULT: '0:5:hang' } });
    assert.deepEqual(stepDirs(runDir('killed')), ['step-2', 'step-4']);
    const killedRows = metricsRows(runDir('killed'));
    assert.deepEqual(
      killedRows.map((r) => r.step),
      [1, 2, 3, 4, 5],
    );
    const resumed = run('--recipe', file, '--resume', 'latest');
    await assertExactResume({ runDir: runDir('killed'), reference: runDir('whole'), from: 4, to: 8, killedRows, resumed });
    assert.deepEqual(stepDirs(runDir('killed')), ['step-6', 'step-8']);
  });

  test('gradient accumulation: 2 micro-batches of 2 per step equal 1 of 4 (samples of one length): losses, gradient norms and weights within 1e-6', () => {
    // Each micro-batch's loss is normalised by its own batch x padded length; cut to 64 tokens, every sample
    // here has the same length (75 to 150 tokens, the answer from token 42 at the latest), so two halves weigh
    // exactly what the whole batch does.
    const four = run('--recipe', recipe('batch4', { batch_size: 4, max_steps: 4 }));
    assert.equal(four.status, 0, four.stderr + four.stdout);
    const acc = run('--recipe', recipe('accumulated', { batch_size: 2, accumulation_steps: 2, max_steps: 4 }));
    assert.equal(acc.status, 0, acc.stderr + acc.stdout);
    const a = metrics('batch4') as unknown as { loss: number[]; acc: number[]; grad_norm: number }[];
    const b = metrics('accumulated') as unknown as typeof a;
    assert.equal(a.length, 4);
    assert.equal(b.length, 4);
    for (let i = 0; i < 4; i++) {
      assert.ok(maxAbsDiff(a[i].loss, b[i].loss) <= 1e-6, `step ${i + 1} losses ${a[i].loss} vs ${b[i].loss}`);
      assert.deepEqual(a[i].acc, b[i].acc, `step ${i + 1} accuracies`);
      assert.ok(
        a[i].grad_norm > 0 && Math.abs(a[i].grad_norm - b[i].grad_norm) <= 1e-6,
        `step ${i + 1} gradient norms ${a[i].grad_norm} vs ${b[i].grad_norm}`,
      );
    }
    const wa = new SafetensorsFile(path.join(runDir('batch4'), 'step-4', 'model.safetensors'));
    const wb = new SafetensorsFile(path.join(runDir('accumulated'), 'step-4', 'model.safetensors'));
    for (const n of wa.names()) {
      const x = wa.read(n).data;
      if (x instanceof Float32Array) assert.ok(maxAbsDiff(x, wb.read(n).data as Float32Array) <= 1e-6, n);
    }
  });

  test('resuming with a changed recipe is refused, naming the fields that differ, and changes nothing', () => {
    whole();
    const before = fs.readFileSync(path.join(runDir('whole'), 'metrics.jsonl'));
    // Another file of the same name (so the same run folder), with another learning rate.
    fs.mkdirSync(path.join(work, 'changed'), { recursive: true });
    const changed = recipe(path.join('changed', 'whole'), { ...rotating, learning_rate: 0.01 });
    const r = run('--recipe', changed, '--resume', 'latest');
    assert.equal(r.status, 1, r.stdout);
    assert.match(
      r.stderr,
      /whole\/step-8: written by a run with other model, data or training settings \(training\.learning_rate is 0\.003 in the checkpoint, 0\.01 in the recipe\)/,
    );
    assert.doesNotMatch(r.stdout, /capturing/, 'refused before any work');
    assert.ok(fs.readFileSync(path.join(runDir('whole'), 'metrics.jsonl')).equals(before));
    assert.deepEqual(stepDirs(runDir('whole')), ['step-6', 'step-8']);
  });
});
