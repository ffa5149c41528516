// The command line as a user meets it: help lists the commands; bad input is a one-line error.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';
import fs from 'node:fs';
import path from 'node:path';
import { after } from 'node:test';
import { loadModelConfig } from '../src/io/hf-config.ts';
import { SafetensorsFile, type StoredTensor, writeSafetensors } from '../src/io/safetensors.ts';
import { fixture, removeTempDirs, tempDir } from './helpers.ts';

const bin = fileURLToPath(new URL('../bin/specforge.js', import.meta.url));
const run = (...args: string[]) => spawnSync(process.execPath, [bin, ...args], { encoding: 'utf8' });
const tinyTarget = fileURLToPath(new URL('../data/tiny-target', import.meta.url));
after(removeTempDirs);

/** A copy of the tiny target, with `change` applied to its files. */
function damagedTarget(change: (dir: string) => void): string {
  const dir = tempDir('inspect-');
  for (const f of fs.readdirSync(tinyTarget)) fs.copyFileSync(path.join(tinyTarget, f), path.join(dir, f));
  change(dir);
  return dir;
}

test('--help lists the four commands with descriptions', () => {
  const r = run('--help');
  assert.equal(r.status, 0);
  for (const c of ['capture', 'train', 'eval', 'export-onnx']) assert.match(r.stdout, new RegExp(`specforge ${c}\\s+\\S`));
});

test('export-onnx on a missing checkpoint is a one-line error naming the folder', () => {
  const r = run('export-onnx', '--checkpoint', 'no-such-checkpoint', '--out', 'none');
  assert.equal(r.status, 1);
  assert.match(r.stderr, /no-such-checkpoint: not a draft checkpoint \(needs config\.json and model\.safetensors\)/);
  assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace');
});

test('inspect reads a model folder; a bad folder is a one-line error naming the file', () => {
  const ok = run('inspect', tinyTarget);
  assert.equal(ok.status, 0, ok.stderr);
  assert.match(ok.stdout, /LlamaForCausalLM/);
  assert.match(ok.stdout, /tokenizer\s+335 tokens; chat template yes/);
  // A folder without a tokenizer: what it has is printed, and it fails as capture would.
  const noTokenizer = run('inspect', fixture('golden/targets/llama'));
  assert.equal(noTokenizer.status, 1);
  assert.match(noTokenizer.stdout, /llama3 x8/);
  assert.match(noTokenizer.stderr, /golden\/targets\/llama\/tokenizer\.json: missing/);
  const bad = run('inspect', fixture('hf-configs'));
  assert.equal(bad.status, 1);
  assert.match(bad.stderr, /hf-configs\/config\.json: cannot read/);
  assert.doesNotMatch(bad.stderr, /\n\s+at /, 'no stack trace');
});

test('inspect runs the checks loading does: swapped tensor shapes and a tokenizer.json that is not JSON exit 1 naming them', async () => {
  const swapped = damagedTarget((dir) => {
    const file = path.join(dir, 'model.safetensors');
    const f = new SafetensorsFile(file);
    const tensors = new Map<string, StoredTensor>();
    for (const n of f.names()) tensors.set(n, { ...f.read(n), dtype: f.info(n).dtype });
    // gate_proj is [I, H]; stored transposed, as a converter that forgot PyTorch's [out, in] would.
    const gate = tensors.get('model.layers.2.mlp.gate_proj.weight')!;
    tensors.set('model.layers.2.mlp.gate_proj.weight', { ...gate, shape: [...gate.shape].reverse() });
    writeSafetensors(file, tensors);
  });
  const c = loadModelConfig(tinyTarget);
  const a = run('inspect', swapped);
  assert.equal(a.status, 1, a.stdout);
  assert.match(
    a.stderr,
    new RegExp(
      `tensor 'model\\.layers\\.2\\.mlp\\.gate_proj\\.weight' has shape \\[${c.hiddenSize},${c.intermediateSize}\\], expected \\[${c.intermediateSize},${c.hiddenSize}\\] from config\\.json`,
    ),
  );
  assert.match(a.stderr, /1 problem\(s\) above; capture and training would refuse this folder/);
  assert.doesNotMatch(a.stderr, /\n\s+at /, 'no stack trace');

  const notJson = damagedTarget((dir) => fs.writeFileSync(path.join(dir, 'tokenizer.json'), '{"version": "1.0", "model": '));
  const b = run('inspect', notJson);
  assert.equal(b.status, 1, b.stdout);
  assert.match(b.stderr, /tokenizer\.json: not valid JSON/);
  assert.match(b.stdout, /tokenizer\s+unusable/);
});
