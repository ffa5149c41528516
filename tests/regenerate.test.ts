// Regeneration on the shipped tiny target: every assistant turn is rewritten by the target, turn by turn
// (checked against a plain full-forward greedy loop over the regenerated context), stops at the end of
// turn, is deterministic, and a run interrupted after a batch resumes to the same bytes.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../src/backend/backend.ts';
import { regenerate } from '../src/capture/regenerate.ts';
import { regenerateKey, type RegenerateOptions } from '../src/data/train-files.ts';
import type { Message } from '../src/data/chat.ts';
import { readAllConversations } from '../src/data/datasets.ts';
import { tokenizeConversation } from '../src/data/templates.ts';
import { loadTokenizer } from '../src/io/tokenizer.ts';
import { ArrowStore } from '../src/store/reader.ts';
import { TfjsTarget } from '../src/target/tfjs-target.ts';
import { removeTempDirs, specforge, tempDir } from './helpers.ts';

const repo = fileURLToPath(new URL('..', import.meta.url));
const tiny = path.join(repo, 'data', 'tiny-target');
const work = tempDir('regenerate-test-');
// 4 reasoning problems and 3 multi-turn chats (2-4 assistant turns each) in one file.
const input = path.join(work, 'mixed.jsonl');

let model: TfjsTarget;
const tok = loadTokenizer(tiny);

before(async () => {
  await initBackend('wasm');
  model = TfjsTarget.load(tiny);
  const take = (f: string, n: number) =>
    fs
      .readFileSync(path.join(repo, 'data/corpus', f), 'utf8')
      .split('\n')
      .slice(0, n);
  fs.writeFileSync(input, [...take('reasoning-eval.jsonl', 4), ...take('chat-eval.jsonl', 3)].join('\n') + '\n');
});
after(() => {
  model.dispose();
  removeTempDirs();
});

const options = (out: string, over: Partial<RegenerateOptions> = {}): RegenerateOptions => ({
  targetDir: tiny,
  files: [input],
  format: 'sharegpt',
  skipInvalid: false,
  limit: null,
  template: 'tokenizer',
  maxLength: 512,
  batchSize: 3,
  maxNewTokens: 160,
  temperature: 0,
  topP: 1,
  seed: 1,
  out,
  log: () => {},
  ...over,
});

/** Greedy continuation by full forwards over the whole sequence (no cache, no batching). */
function naiveGreedy(prompt: number[], maxNew: number, stop: number): number[] {
  const seq = [...prompt];
  const out: number[] = [];
  while (out.length < maxNew) {
    const r = model.forward({ ids: [seq] });
    const V = model.config.vocabSize;
    const last = (r.logits!.dataSync() as Float32Array).subarray((seq.length - 1) * V, seq.length * V);
    let best = 0;
    for (let i = 1; i < V; i++) if (last[i] > last[best]) best = i;
    tf.dispose([r.logits!, r.finalNormed]);
    out.push(best);
    if (best === stop) break;
    seq.push(best);
  }
  return out;
}

describe('regenerate', () => {
  test("greedy: every assistant turn is the target's own answer to the regenerated context, ended at end of turn", async () => {
    const out = path.join(work, 'greedy.jsonl');
    const res = await regenerate(model, tok, options(out));
    assert.equal(res.conversations, 7);
    assert.equal(res.truncatedTurns, 0);
    const original = await readAllConversations(input);
    const regen = await readAllConversations(out);
    assert.equal(regen.length, 7);
    assert.equal(
      res.turns,
      original.reduce((n, c) => n + c.messages.filter((m) => m.role === 'assistant').length, 0),
    );
    const eot = tok.requireId('<|im_end|>');
    let changed = 0;
    for (let i = 0; i < 7; i++) {
      const a = original[i];
      const b = regen[i];
      assert.equal(b.id, a.id);
      assert.deepEqual(b.extra, a.extra, "the record's other fields are kept");
      assert.deepEqual(
        b.messages.map((m) => m.role),
        a.messages.map((m) => m.role),
      );
      const context: Message[] = [];
      for (let k = 0; k < a.messages.length; k++) {
        if (a.messages[k].role !== 'assistant') {
          assert.equal(b.messages[k].content, a.messages[k].content, 'user turns are kept');
        } else {
          const prompt = tokenizeConversation(context, tok, { template: 'tokenizer', addGenerationPrompt: true }).ids;
          const ref = naiveGreedy(prompt, 160, eot);
          assert.equal(ref[ref.length - 1], eot, 'the reference ends its turn');
          assert.equal(b.messages[k].content, tok.decode(ref.slice(0, -1)), `conversation ${i} turn ${k}`);
          if (b.messages[k].content !== a.messages[k].content) changed++;
        }
        context.push(b.messages[k]);
      }
    }
    assert.ok(changed > 0, 'some answers differ from the data set (the target is not a lookup table)');
    // Deterministic and independent of the batch: a second run, all 7 conversations in one batch (other
    // padding, other batch shapes), writes the same bytes.
    const again = path.join(work, 'greedy-again.jsonl');
    await regenerate(model, tok, options(again, { batchSize: 7 }));
    assert.ok(fs.readFileSync(again).equals(fs.readFileSync(out)));
    // A finished output is reused, not regenerated.
    const cached = await regenerate(model, tok, options(out));
    assert.equal(cached.cached, true);
  });

  test('a turn that reaches max_new_tokens is cut and counted', async () => {
    const out = path.join(work, 'short.jsonl');
    const res = await regenerate(model, tok, options(out, { maxNewTokens: 4 }));
    assert.equal(res.truncatedTurns, res.turns);
    for (const c of await readAllConversations(out))
      for (const m of c.messages) if (m.role === 'assistant') assert.ok(tok.encode(m.content).length <= 4, m.content);
  });

  test('turns whose prompt reaches max_length are dropped with the turns after them', async () => {
    const out = path.join(work, 'cut.jsonl');
    const res = await regenerate(model, tok, options(out, { maxLength: 60 }));
    assert.ok(res.droppedTurns > 0, 'the long chats lose turns');
    const original = await readAllConversations(input);
    const greedy = await readAllConversations(path.join(work, 'greedy.jsonl'));
    const regen = await readAllConversations(out);
    assert.equal(
      res.turns + res.droppedTurns,
      original.reduce((n, c) => n + c.messages.filter((m) => m.role === 'assistant').length, 0),
    );
    for (const c of regen) {
      const full = greedy.find((g) => g.id === c.id)!;
      assert.equal(c.messages[c.messages.length - 1].role, 'assistant', 'ends with an answer');
      // What is kept is the prefix of the uncut regeneration, and every kept prompt is under 60 tokens.
      assert.deepEqual(c.messages, full.messages.slice(0, c.messages.length));
      const lastPrompt = tokenizeConversation(c.messages.slice(0, -1), tok, { template: 'tokenizer', addGenerationPrompt: true }).ids;
      assert.ok(lastPrompt.length < 60);
    }
  });

  test('sampled: deterministic for a seed, and a run interrupted after a batch resumes to the same bytes', async () => {
    const sampled = { temperature: 1.0, topP: 0.9, seed: 5 };
    const full = path.join(work, 'sampled.jsonl');
    await regenerate(model, tok, options(full, sampled));
    const other = path.join(work, 'sampled-seed6.jsonl');
    await regenerate(model, tok, options(other, { ...sampled, seed: 6 }));
    assert.ok(!fs.readFileSync(other).equals(fs.readFileSync(full)), 'another seed samples other answers');

    // The state a crash after the first batch leaves: its lines recorded, half a line after them.
    const out = path.join(work, 'resumed.jsonl');
    const lines = fs.readFileSync(full, 'utf8').split('\n');
    const first = lines.slice(0, 3).join('\n') + '\n';
    fs.writeFileSync(`${out}.partial`, first + lines[3].slice(0, 20));
    const key = regenerateKey(options(out, sampled));
    fs.writeFileSync(`${out}.progress.json`, JSON.stringify({ key, done: 3, bytes: Buffer.byteLength(first), complete: false }));
    const logs: string[] = [];
    const res = await regenerate(model, tok, { ...options(out, sampled), log: (m) => logs.push(m) });
    assert.match(logs.join('\n'), /resuming; 3 conversations are done/);
    assert.equal(res.regenerated, 4);
    assert.ok(fs.readFileSync(out).equals(fs.readFileSync(full)));
    assert.ok(!fs.existsSync(`${out}.partial`));
  });

  test('other settings on an existing output, and bad input lines, are clear errors', async () => {
    const out = path.join(work, 'greedy.jsonl');
    await assert.rejects(regenerate(model, tok, options(out, { maxNewTokens: 50 })), /regenerated with other settings/);
    const bad = path.join(work, 'bad.jsonl');
    fs.writeFileSync(bad, fs.readFileSync(input, 'utf8').split('\n')[0] + '\n{"conversations": [{"from": "human"}]}\n');
    await assert.rejects(
      regenerate(model, tok, options(path.join(work, 'bad-out.jsonl'), { files: [bad] })),
      /bad\.jsonl:2: conversations\[0\]\.value/,
    );
    const skipped = await regenerate(model, tok, options(path.join(work, 'bad-skip.jsonl'), { files: [bad], skipInvalid: true }));
    assert.equal(skipped.invalidLines, 1);
    assert.equal(skipped.conversations, 1);
  });

  test("specforge capture --regenerate captures the target's answers", async () => {
    const recipe = path.join(work, 'recipe.yaml');
    fs.writeFileSync(
      recipe,
      `model:\n  target: ${tiny}\n  draft_vocab_size: 64\n` +
        `data:\n  train: ${input}\n  format: sharegpt\n  template: tokenizer\n  max_length: 256\n  store: ${path.join(work, 'store')}\n  cache_dir: ${path.join(work, 'cache')}\n` +
        `regenerate:\n  max_new_tokens: 160\n  batch_size: 3\n  output: ${path.join(work, 'cli.jsonl')}\n` +
        `capture:\n  batch_size: 4\n  samples_per_shard: 4\nruntime:\n  backend: wasm\n`,
    );
    const r = specforge(['capture', '--recipe', recipe, '--regenerate']);
    assert.equal(r.status, 0, r.stderr + r.stdout);
    assert.match(r.stdout, /regenerate: 7 conversations, \d+ turns, \d+ tokens in [\d.]+ s \(\d+ tok\/s\)/);
    assert.ok(fs.readFileSync(path.join(work, 'cli.jsonl')).equals(fs.readFileSync(path.join(work, 'greedy.jsonl'))));
    const store = await ArrowStore.open(path.join(work, 'store', 'train'));
    const regen = await readAllConversations(path.join(work, 'cli.jsonl'));
    for (let i = 0; i < 7; i++) {
      const s = await store.get(i);
      assert.deepEqual(Array.from(s.inputIds), tokenizeConversation(regen[i].messages, tok, { template: 'tokenizer', maxLength: 256 }).ids);
    }
    await store.close();
  });
});
