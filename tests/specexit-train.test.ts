// Training with SpecExit heads on: the signal loss joins the TTT loss, held-out signal metrics are
// reported, and the checkpoint stays a plain EAGLE-3 folder with the signal rows in their own file.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';
import { loadDraftCheckpoint } from '../src/draft/load.ts';
import { SafetensorsFile } from '../src/io/safetensors.ts';
import { makeRandomTarget } from './helpers.ts';

const repo = fileURLToPath(new URL('..', import.meta.url));

test('train with training.specexit on a reasoning split', async () => {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'specexit-train-'));
  const target = path.join(work, 'target');
  await makeRandomTarget(target, 5);
  const data = path.join(repo, 'data/corpus/reasoning-eval.jsonl');
  const recipe = path.join(work, 'se.yaml');
  fs.writeFileSync(
    recipe,
    `model:\n  target: ${target}\n  aux_layer_ids: [1, 2, 4]\n  draft_vocab_size: 100\n` +
      `data:\n  train: ${data}\n  eval: ${data}\n  format: sharegpt\n  max_length: 128\n  store: ${path.join(work, 'store')}\n  cache_dir: ${path.join(work, 'cache')}\n` +
      `capture:\n  limit: 24\n` +
      `training:\n  batch_size: 4\n  max_steps: 6\n  learning_rate: 0.003\n  output_dir: ${path.join(work, 'ckpt')}\n  log_interval: 2\n  eval_interval: 6\n  eval_samples: 16\n  specexit: true\n  specexit_weights: [1, 1, 0.1]\n` +
      `runtime:\n  backend: wasm\n`,
  );
  const r = spawnSync(process.execPath, [path.join(repo, 'bin', 'specforge.js'), 'train', '--recipe', recipe], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr + r.stdout);
  const rows = fs
    .readFileSync(path.join(work, 'ckpt', 'se', 'metrics.jsonl'), 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l));
  const train = rows.filter((m) => m.split === 'train');
  assert.ok(train.every((m) => m.specexit_loss.length === 3 && m.specexit_loss.every((x: number) => x > 0)));
  const ev = rows.find((m) => m.split === 'eval');
  assert.ok(ev.specexit.confidence_auc >= 0 && ev.specexit.confidence_auc <= 1);
  assert.ok(ev.specexit.progress_mae > 0 && ev.specexit.remaining_mae_tokens > 0);
  const dir = path.join(work, 'ckpt', 'se', 'step-6');
  assert.deepEqual(new SafetensorsFile(path.join(dir, 'model.safetensors')).info('fc.weight').shape, [32, 96], 'fc stays [H, 3Ht]');
  assert.ok(!new SafetensorsFile(path.join(dir, 'model.safetensors')).names().some((n) => n.startsWith('specexit')));
  assert.deepEqual(new SafetensorsFile(path.join(dir, 'specexit', 'signals.safetensors')).info('specexit.signals.weight').shape, [3, 96]);
  const loaded = loadDraftCheckpoint(dir);
  assert.ok(loaded.config.specExit && loaded.draft.params.has('specexit.signals.weight'));
  loaded.draft.dispose();

  // Serving layouts: plain EAGLE-3 (bf16) and the SpecExit widened fc.
  const out = path.join(work, 'export');
  const e = spawnSync(
    process.execPath,
    [path.join(repo, 'bin', 'specforge.js'), 'export-onnx', '--checkpoint', dir, '--out', out, '--format', 'sglang', 'specexit'],
    { encoding: 'utf8' },
  );
  assert.equal(e.status, 0, e.stderr);
  const plain = new SafetensorsFile(path.join(out, 'sglang', 'model.safetensors'));
  assert.deepEqual(plain.info('fc.weight'), { dtype: 'BF16', shape: [32, 96] });
  assert.deepEqual(plain.info('d2t').dtype, 'I64');
  const wide = new SafetensorsFile(path.join(out, 'specexit', 'model.safetensors'));
  assert.deepEqual(wide.info('fc.weight').shape, [35, 96]);
  const extra = (wide.read('fc.weight').data as Float32Array).slice(32 * 96);
  const signals = new SafetensorsFile(path.join(dir, 'specexit', 'signals.safetensors')).read('specexit.signals.weight')
    .data as Float32Array;
  extra.forEach((x, i) =>
    assert.ok(Math.abs(x - signals[i]) <= Math.abs(signals[i]) / 128 + 1e-6, 'the last three fc rows are the signal rows (bf16)'),
  );
  assert.equal(JSON.parse(fs.readFileSync(path.join(out, 'specexit', 'config.json'), 'utf8')).specexit.layout, 'widened_fc');
  assert.deepEqual(JSON.parse(fs.readFileSync(path.join(out, 'sglang', 'config.json'), 'utf8')).architectures, ['LlamaForCausalLMEagle3']);
});
