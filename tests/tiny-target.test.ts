// The shipped tiny target loads through the ordinary Hugging Face folder path and answers held-out
// reasoning prompts correctly with greedy decoding.
import assert from 'node:assert/strict';
import path from 'node:path';
import { before, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { initBackend } from '../src/backend/backend.ts';
import { extractAnswer } from '../src/data/answers.ts';
import { readAllConversations } from '../src/data/datasets.ts';
import { tokenizeConversation } from '../src/data/templates.ts';
import { loadModelConfig } from '../src/io/hf-config.ts';
import { loadTokenizer } from '../src/io/tokenizer.ts';
import { generate } from '../src/target/generate.ts';
import { TfjsTarget } from '../src/target/tfjs-target.ts';

const repo = fileURLToPath(new URL('..', import.meta.url));
const dir = path.join(repo, 'data', 'tiny-target');

before(async () => {
  await initBackend('wasm');
});

test('the shipped target is a GQA Llama with distinct default aux layers, stored in bf16', () => {
  const c = loadModelConfig(dir);
  assert.equal(c.architecture, 'LlamaForCausalLM');
  assert.ok(c.numKvHeads < c.numHeads);
  assert.equal(c.tieWordEmbeddings, false);
  assert.equal(c.torchDtype, 'bfloat16');
  assert.equal(new Set([1, Math.floor(c.numLayers / 2) - 1, c.numLayers - 4]).size, 3);
});

test('answers held-out reasoning prompts in the trained format, mostly correctly (greedy, full thinking)', async () => {
  const tok = loadTokenizer(dir);
  const model = TfjsTarget.load(dir);
  const problems = await readAllConversations(path.join(repo, 'data/corpus/reasoning-eval.jsonl'), { limit: 12 });
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
  const correct = problems.filter((p, i) => extractAnswer(texts[i], 'gsm8k') === String(p.extra.answer)).length;
  for (const t of texts)
    assert.match(t, /^<think>\n[\s\S]*\n<\/think>\n\n[\s\S]*#### \d+<\|im_end\|>$/, 'thinks, then answers in GSM8K form');
  // The shipped model answers 93.75% of the 400 held-out prompts (quality.json); chance is a few percent.
  assert.ok(correct >= 10, `${correct} of 12 correct`);
  model.dispose();
});
