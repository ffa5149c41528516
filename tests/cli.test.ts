// The command line as a user meets it: help lists the commands; bad input is a one-line error.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, test } from 'node:test';
import { fixture, makeRandomTarget, removeTempDirs, specforge, tempDir } from './helpers.ts';

after(removeTempDirs);

const run = (...args: string[]) => specforge(args);

/** The run failed with exactly one line on stderr, `specforge: ...` matching `re`, and no stack trace. */
function oneLineError(r: { status: number | null; stdout: string; stderr: string }, re: RegExp): void {
  assert.equal(r.status, 1, r.stdout + r.stderr);
  const lines = r.stderr.trimEnd().split('\n');
  assert.equal(lines.length, 1, r.stderr);
  assert.match(lines[0], /^specforge: /);
  assert.match(lines[0], re);
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
  const ok = run('inspect', fixture('golden/targets/llama'));
  assert.equal(ok.status, 0, ok.stderr);
  assert.match(ok.stdout, /LlamaForCausalLM/);
  assert.match(ok.stdout, /llama3 x8/);
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
  const noTarget = write('no-target.yaml', `model:\n  target: ${path.join(dir, 'no-target')}\n${base}`);
  await makeRandomTarget(path.join(dir, 'target'), 1);
  const noData = write('no-data.yaml', `model:\n  target: ${path.join(dir, 'target')}\n  aux_layer_ids: [1, 2, 4]\n${base}`);
  for (const cmd of ['train', 'capture']) {
    oneLineError(run(cmd, '--recipe', path.join(dir, 'missing.yaml')), /missing\.yaml: cannot read \(ENOENT/);
    oneLineError(run(cmd, '--recipe', typo), /typo\.yaml:8: unknown field 'training\.batch_sise'; training takes .*batch_size/);
    oneLineError(run(cmd, '--recipe', noTarget), /no-target\/config\.json: cannot read \(ENOENT/);
    oneLineError(run(cmd, '--recipe', noData), /none\.jsonl: cannot read data file \(ENOENT/);
  }
  // --backend auto takes the first backend that loads, and says which.
  const auto = run('capture', '--recipe', noData, '--backend', 'auto');
  oneLineError(auto, /none\.jsonl: cannot read data file/);
  assert.match(auto.stdout, /^backend: (node-gpu|node|wasm) \(tfjs '(tensorflow|wasm)'\)$/m);
  assert.ok(!fs.existsSync(path.join(dir, 'store')), 'nothing written');
});
