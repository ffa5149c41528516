// The shipped tiny target loads through the ordinary Hugging Face folder path and answers held-out
// reasoning prompts correctly with greedy decoding.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { initBackend } from '../src/backend/backend.ts';
import { extractAnswer } from '../src/data/answers.ts';
import { readAllConversations } from '../src/data/datasets.ts';
import { tokenizeConversation } from '../src/data/templates.ts';
import { loadModelConfig, parameterCount } from '../src/io/hf-config.ts';
import { loadTokenizer, type Tokenizer } from '../src/io/tokenizer.ts';
import { generate } from '../src/target/generate.ts';
import { loadTarget } from '../src/target/load.ts';
import type { TargetModel } from '../src/target/runtime.ts';
import { TfjsTarget } from '../src/target/tfjs-target.ts';
import { targetConfig } from '../src/tiny/config.ts';
import { removeTempDirs, tempDir } from './helpers.ts';

const repo = fileURLToPath(new URL('..', import.meta.url));
const dir = path.join(repo, 'data', 'tiny-target');

before(async () => {
  await initBackend('wasm');
});
after(() => removeTempDirs());

/** Greedy answers (full thinking) to the first n held-out reasoning prompts: each in the trained format; returns how many are right. */
async function answerHeldOut(model: TargetModel, tok: Tokenizer, n: number): Promise<number> {
  const problems = await readAllConversations(path.join(repo, 'data/corpus/reasoning-eval.jsonl'), { limit: n });
  const prompts = problems.map(
    (p) =>
      tokenizeConversation(
        p.messages.filter((m) => m.role === 'user'),
        tok,
        { template: 'tokenizer', addGenerationPrompt: true },
      ).ids,
  );
  const outs = generate(model, prompts, { maxNewTokens: 200, stopIds: [tok.requireId('<|im_end|>')] });
  const texts = outs.map((o) => tok.decode(o));
  for (const t of texts)
    assert.match(t, /^<think>\n[\s\S]*\n<\/think>\n\n[\s\S]*#### \d+<\|im_end\|>$/, 'thinks, then answers in GSM8K form');
  return problems.filter((p, i) => extractAnswer(texts[i], 'gsm8k') === String(p.extra.answer)).length;
}

test('the shipped target is a GQA Llama with distinct default aux layers, stored in bf16', () => {
  const c = loadModelConfig(dir);
  assert.equal(c.architecture, 'LlamaForCausalLM');
  assert.ok(c.numKvHeads < c.numHeads);
  assert.equal(c.tieWordEmbeddings, false);
  assert.equal(c.torchDtype, 'bfloat16');
  assert.equal(new Set([1, Math.floor(c.numLayers / 2) - 1, c.numLayers - 4]).size, 3);
  const tok = loadTokenizer(dir);
  assert.deepEqual(
    JSON.parse(fs.readFileSync(path.join(dir, 'config.json'), 'utf8')),
    targetConfig('tiny', tok.vocabSize, { eos: tok.requireId('<|im_end|>'), pad: tok.requireId('<|endoftext|>') }),
  );
});

test('answers held-out reasoning prompts in the trained format, mostly correctly (greedy, full thinking)', async () => {
  const model = TfjsTarget.load(dir);
  const correct = await answerHeldOut(model, loadTokenizer(dir), 12);
  // The shipped model answers 93.75% of the 400 held-out prompts (quality.json); chance is a few percent.
  assert.ok(correct >= 10, `${correct} of 12 correct`);
  model.dispose();
});

// The demo target (data/demo-target, `npm run demo:train`): big enough that a decode step is bound by
// reading its weights, small enough to ship; run here through ONNX Runtime, as eval runs it.
const demoDir = path.join(repo, 'data', 'demo-target');

test('the demo target is a GQA Llama of at least 16M parameters in bf16, at most 64 MB, with the config its trainer writes', () => {
  const c = loadModelConfig(demoDir);
  const tok = loadTokenizer(demoDir);
  assert.deepEqual(
    JSON.parse(fs.readFileSync(path.join(demoDir, 'config.json'), 'utf8')),
    targetConfig('demo', tok.vocabSize, { eos: tok.requireId('<|im_end|>'), pad: tok.requireId('<|endoftext|>') }),
  );
  assert.ok(parameterCount(c) >= 16e6, `${parameterCount(c)} parameters`);
  assert.ok(c.numKvHeads < c.numHeads);
  assert.equal(c.torchDtype, 'bfloat16');
  const bytes = fs.statSync(path.join(demoDir, 'model.safetensors')).size;
  assert.ok(bytes <= 64e6 && bytes >= 2 * parameterCount(c), `${bytes} bytes`);
  assert.deepEqual(fs.readFileSync(path.join(demoDir, 'tokenizer.json')), fs.readFileSync(path.join(dir, 'tokenizer.json')));
});

test('the demo target answers held-out reasoning prompts in the trained format (ONNX Runtime, greedy, full thinking)', async () => {
  const tok = loadTokenizer(demoDir);
  const model = await loadTarget(demoDir, { engine: 'ort', threads: 1, cacheDir: tempDir('demo-target-') });
  try {
    const correct = await answerHeldOut(model, tok, 16);
    // All 16 are right (98% of all 400 held-out prompts, quality.json); chance is a few percent.
    assert.ok(correct >= 14, `${correct} of 16 correct`);
  } finally {
    model.dispose();
  }
});
