// `specforge eval` end to end on a small random-weight target and a random draft checkpoint: the recipe's
// held-out prompts (chain, greedy: identical to plain decoding) and an MT-bench file (tree, sampling);
// report.json and acceptance.svg are written where asked; the same draft exported to ONNX and run with
// --draft-onnx decodes identically; without --checkpoint eval takes the run's step-best.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { before, describe, test } from 'node:test';
import { initBackend } from '../src/backend/backend.ts';
import { draftConfigFor } from '../src/draft/config.ts';
import { Eagle3Draft } from '../src/draft/eagle3.ts';
import { parseModelConfig } from '../src/io/hf-config.ts';
import { writeSafetensors } from '../src/io/safetensors.ts';
import { loadTokenizer } from '../src/io/tokenizer.ts';
import { pointBest } from '../src/train/best.ts';
import { saveCheckpoint } from '../src/train/checkpoint.ts';
import { randomWeights } from './helpers.ts';

const repo = fileURLToPath(new URL('..', import.meta.url));
const bin = path.join(repo, 'bin', 'specforge.js');
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'eval-test-'));
const target = path.join(work, 'target');
const recipe = path.join(work, 'evalrun.yaml');

before(async () => {
  await initBackend('wasm');
  const tok = loadTokenizer(path.join(repo, 'data', 'tiny-target'));
  const eos = tok.requireId('<|im_end|>');
  const raw = {
    architectures: ['LlamaForCausalLM'],
    hidden_size: 32,
    intermediate_size: 48,
    num_hidden_layers: 4,
    num_attention_heads: 4,
    num_key_value_heads: 2,
    vocab_size: tok.vocabSize,
    eos_token_id: eos,
  };
  fs.mkdirSync(target, { recursive: true });
  fs.writeFileSync(path.join(target, 'config.json'), JSON.stringify(raw));
  const config = parseModelConfig(raw);
  writeSafetensors(path.join(target, 'model.safetensors'), randomWeights(config, 8));
  for (const f of ['tokenizer.json', 'tokenizer_config.json'])
    fs.copyFileSync(path.join(repo, 'data', 'tiny-target', f), path.join(target, f));
  // A random draft over the first 64 token ids (eos among them), saved as training would.
  const Vd = 64;
  const draftConfig = draftConfigFor(config, [1, 2, 3], Vd);
  const draft = Eagle3Draft.init(draftConfig, 3);
  const weights = draft.exportWeights();
  const zeros = new Map([...weights].map(([n, w]) => [n, new Float32Array(w.data.length)]));
  const t2d = new Uint8Array(tok.vocabSize);
  for (let i = 0; i < Vd; i++) t2d[i] = 1;
  const state = { step: 5, epoch: 0, batchInEpoch: 5, totalSteps: 5, seed: 1, learningRate: 0, recipeKey: 'test' };
  saveCheckpoint(
    path.join(work, 'ckpt', 'evalrun'),
    draftConfig,
    weights,
    { d2t: new BigInt64Array(Vd), t2d },
    { m: zeros, v: zeros },
    state,
    3,
  );
  draft.dispose();

  const chat = (q: string, a: string) =>
    JSON.stringify({
      conversations: [
        { from: 'human', value: q },
        { from: 'gpt', value: a },
      ],
    });
  fs.writeFileSync(
    path.join(work, 'eval.jsonl'),
    [
      chat('What does Julia do for a living?', 'She is a pilot.'),
      chat('Where does Mark live?', 'Mark is from Oslo.'),
      chat('Who is Lucy?', 'A friend.'),
    ].join('\n') + '\n',
  );
  fs.writeFileSync(
    path.join(work, 'mtbench.jsonl'),
    [1, 2]
      .map((i) => JSON.stringify({ question_id: 80 + i, category: 'writing', turns: [`Where does Mark live? ${i}`, 'And then?'] }))
      .join('\n') + '\n',
  );
  fs.writeFileSync(
    recipe,
    `model:\n  target: ${target}\n  aux_layer_ids: [1, 2, 3]\n  draft_vocab_size: ${Vd}\n` +
      `data:\n  train: ${path.join(work, 'eval.jsonl')}\n  eval: ${path.join(work, 'eval.jsonl')}\n  format: sharegpt\n  template: chatml\n  store: ${path.join(work, 'store')}\n` +
      `training:\n  output_dir: ${path.join(work, 'ckpt')}\n` +
      `eval:\n  draft_steps: 4\n  max_new_tokens: 10\n` +
      `runtime:\n  backend: wasm\n  seed: 3\n`,
  );
});

const run = (...args: string[]) => spawnSync(process.execPath, [bin, 'eval', '--recipe', recipe, ...args], { encoding: 'utf8' });

describe('specforge eval', () => {
  test('recipe prompts, greedy chain: table printed, report and chart written under the run folder', () => {
    const r = run('--limit', '2', '--draft-steps', '3');
    assert.equal(r.status, 0, r.stderr + r.stdout);
    assert.match(r.stdout, /eval: 2 prompts, chain of 3, temperature 0/);
    assert.match(r.stdout, /tau \d+\.\d+ tokens\/pass/);
    assert.match(r.stdout, /speedup\s+\d+\.\d+x/);
    const dir = path.join(work, 'ckpt', 'evalrun', 'eval');
    const report = JSON.parse(fs.readFileSync(path.join(dir, 'report.json'), 'utf8'));
    assert.equal(report.prompts, 2);
    assert.equal(report.settings.mode, 'chain');
    assert.equal(report.settings.checkpoint, path.join(work, 'ckpt', 'evalrun', 'step-5'));
    assert.equal(report.positions.length, 3);
    assert.deepEqual(report.identicalToPlain, { identical: 2, of: 2 });
    assert.equal(report.verifyTokens, report.generatedTokens - 2);
    assert.ok(report.speculative.tokensPerSecond > 0 && report.plain.tokensPerSecond > 0 && report.speedup > 0);
    assert.match(fs.readFileSync(path.join(dir, 'acceptance.svg'), 'utf8'), /<svg[^>]*>[\s\S]*<\/svg>/);
  });

  test('MT-bench input, tree drafting with sampling, explicit checkpoint and output folder', () => {
    const out = path.join(work, 'out-tree');
    const r = run(
      '--input',
      path.join(work, 'mtbench.jsonl'),
      '--tree',
      '2,3,5',
      '--temperature',
      '0.8',
      '--top-p',
      '0.9',
      '--checkpoint',
      path.join(work, 'ckpt', 'evalrun', 'step-5'),
      '--out',
      out,
    );
    assert.equal(r.status, 0, r.stderr + r.stdout);
    const report = JSON.parse(fs.readFileSync(path.join(out, 'report.json'), 'utf8'));
    assert.equal(report.prompts, 2);
    assert.deepEqual(report.settings.tree, { topk: 2, depth: 3, tokens: 5 });
    assert.equal(report.identicalToPlain, null);
    assert.deepEqual(
      report.perPrompt.map((p: { id: string; category: string }) => [p.id, p.category]),
      [
        ['81', 'writing'],
        ['82', 'writing'],
      ],
    );
    assert.ok(fs.existsSync(path.join(out, 'acceptance.svg')));
  });

  test('errors: a bad tree shape names the field; a run without checkpoints says to train first', () => {
    const bad = run('--tree', '2,3');
    assert.equal(bad.status, 1);
    assert.match(bad.stderr, /field 'eval\.tree': tree "2,3": expected "topk,depth,tokens"/);
    const other = path.join(work, 'untrained.yaml');
    fs.writeFileSync(other, fs.readFileSync(recipe, 'utf8'));
    const none = spawnSync(process.execPath, [bin, 'eval', '--recipe', other], { encoding: 'utf8' });
    assert.equal(none.status, 1);
    assert.match(none.stderr, /no checkpoint under .*untrained: train first/);
  });

  test('--draft-onnx: the exported ONNX draft, run by ONNX Runtime, decodes exactly as the checkpoint does', () => {
    const ckpt = path.join(work, 'ckpt', 'evalrun', 'step-5');
    const exp = spawnSync(
      process.execPath,
      [bin, 'export-onnx', '--checkpoint', ckpt, '--out', path.join(work, 'export'), '--format', 'onnx', '--target', target],
      { encoding: 'utf8' },
    );
    assert.equal(exp.status, 0, exp.stderr);
    const a = run('--limit', '2', '--draft-steps', '3', '--checkpoint', ckpt, '--out', path.join(work, 'eval-tfjs'));
    const b = run(
      '--limit',
      '2',
      '--draft-steps',
      '3',
      '--draft-onnx',
      path.join(work, 'export', 'onnx'),
      '--out',
      path.join(work, 'eval-onnx'),
    );
    assert.equal(a.status, 0, a.stderr);
    assert.equal(b.status, 0, b.stderr);
    const ra = JSON.parse(fs.readFileSync(path.join(work, 'eval-tfjs', 'report.json'), 'utf8'));
    const rb = JSON.parse(fs.readFileSync(path.join(work, 'eval-onnx', 'report.json'), 'utf8'));
    assert.equal(rb.settings.drafter, 'onnx');
    assert.equal(ra.settings.drafter, 'tfjs');
    assert.equal(rb.tau, ra.tau);
    assert.deepEqual(rb.acceptLengthHistogram, ra.acceptLengthHistogram);
    assert.deepEqual(
      rb.perPrompt.map((p: { tokens: number }) => p.tokens),
      ra.perPrompt.map((p: { tokens: number }) => p.tokens),
    );
    const bad = run('--draft-onnx', ckpt);
    assert.equal(bad.status, 1);
    assert.match(bad.stderr, /step-5: not an exported ONNX draft/);
  });

  test("without --checkpoint, the run's step-best rather than its newest checkpoint", () => {
    const runDir = path.join(work, 'ckpt', 'evalrun');
    fs.cpSync(path.join(runDir, 'step-5'), path.join(runDir, 'step-6'), { recursive: true });
    pointBest(runDir, path.join(runDir, 'step-5'));
    const r = run('--limit', '1', '--draft-steps', '2', '--out', path.join(work, 'eval-best'));
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /checkpoint: the run's best \(step-best\), .*step-5/);
    const report = JSON.parse(fs.readFileSync(path.join(work, 'eval-best', 'report.json'), 'utf8'));
    assert.equal(report.settings.checkpoint, path.join(runDir, 'step-5'));
  });
});
