// The command line as a user meets it: help lists the commands; bad input is a one-line error.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { loadModelConfig } from '../src/io/hf-config.ts';
import { SafetensorsFile, type StoredTensor, writeSafetensors } from '../src/io/safetensors.ts';
import { fixture, makeRandomTarget, removeTempDirs, repoRoot, specforge, tempDir } from './helpers.ts';

after(removeTempDirs);

const run = (...args: string[]) => specforge(args);
const tinyTarget = fileURLToPath(new URL('../data/tiny-target', import.meta.url));

/** The run failed with exactly one line on stderr, `specforge: ...` matching `re`, and no stack trace. */
function oneLineError(r: { status: number | null; stdout: string; stderr: string }, re: RegExp): void {
  assert.equal(r.status, 1, r.stdout + r.stderr);
  const lines = r.stderr.trimEnd().split('\n');
  assert.equal(lines.length, 1, r.stderr);
  assert.match(lines[0], /^specforge: /);
  assert.match(lines[0], re);
}

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
  oneLineError(r, /no-such-checkpoint: not a draft checkpoint \(needs config\.json and model\.safetensors\)/);
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
  oneLineError(bad, /hf-configs\/config\.json: cannot read/);
});

test('train and capture: a missing recipe, an unknown field, a missing target or data file are one-line errors naming it', async () => {
  const dir = tempDir('cli-');
  const write = (name: string, text: string) => {
    const f = path.join(dir, name);
    fs.writeFileSync(f, text);
    return f;
  };
  const base = `data:\n  train: ${path.join(dir, 'none.jsonl')}\n  store: ${path.join(dir, 'store')}\n  cache_dir: ${path.join(dir, 'cache')}\n`;
  const typo = write('typo.yaml', `model:\n  target: ${dir}\n${base}training:\n  batch_sise: 2\n`);
  const dataLines = `data:\n  train: ${path.join(repoRoot, 'data/corpus/reasoning-eval.jsonl')}\n  store: ${path.join(dir, 'store')}\n  cache_dir: ${path.join(dir, 'cache')}\n`;
  const noTarget = write('no-target.yaml', `model:\n  target: ${path.join(dir, 'no-target')}\n${dataLines}`);
  await makeRandomTarget(path.join(dir, 'target'), 1);
  const noData = write('no-data.yaml', `model:\n  target: ${path.join(dir, 'target')}\n  aux_layer_ids: [1, 2, 4]\n${base}`);
  for (const cmd of ['train', 'capture']) {
    oneLineError(run(cmd, '--recipe', path.join(dir, 'missing.yaml')), /missing\.yaml: cannot read \(ENOENT/);
    oneLineError(run(cmd, '--recipe', typo), /typo\.yaml:8: unknown field 'training\.batch_sise'; training takes .*batch_size/);
    oneLineError(run(cmd, '--recipe', noTarget), /no-target\/config\.json: cannot read \(ENOENT/);
    oneLineError(run(cmd, '--recipe', noData), /none\.jsonl(: cannot read data file \(ENOENT| does not exist)/);
  }
  assert.ok(!fs.existsSync(path.join(dir, 'store')), 'nothing written');
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
