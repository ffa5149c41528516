// The command line as a user meets it: help lists the commands; bad input is a one-line error.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';
import { fixture } from './helpers.ts';

const bin = fileURLToPath(new URL('../bin/specforge.js', import.meta.url));
const run = (...args: string[]) => spawnSync(process.execPath, [bin, ...args], { encoding: 'utf8' });

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
  const ok = run('inspect', fixture('golden/targets/llama'));
  assert.equal(ok.status, 0, ok.stderr);
  assert.match(ok.stdout, /LlamaForCausalLM/);
  assert.match(ok.stdout, /llama3 x8/);
  const bad = run('inspect', fixture('hf-configs'));
  assert.equal(bad.status, 1);
  assert.match(bad.stderr, /hf-configs\/config\.json: cannot read/);
  assert.doesNotMatch(bad.stderr, /\n\s+at /, 'no stack trace');
});
