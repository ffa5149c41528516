// The tiny target's synthetic corpus (determinism, held-out prompts, correct facts and arithmetic,
// answer offsets) and its word-level tokenizer (loads through our loader, round-trips exactly).
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';
import { loadTokenizer } from '../src/io/tokenizer.ts';
import { generateCorpus, promptOf, toJsonl, type Corpus, type ReasoningRecord } from '../src/tiny/corpus.ts';
import { buildTokenizer, chatMLText, MAX_VOCAB } from '../src/tiny/tokenizer-builder.ts';
import { findPerson } from '../src/tiny/world.ts';

const SMALL = { chatTrain: 300, chatEval: 60, reasoningTrain: 300, reasoningEval: 60 };
const corpus = generateCorpus({ seed: 7, ...SMALL });
const allRecords = (c: Corpus) => [...c.chatTrain, ...c.chatEval, ...c.reasoningTrain, ...c.reasoningEval];
const bytes = (c: Corpus) => [c.chatTrain, c.chatEval, c.reasoningTrain, c.reasoningEval].map(toJsonl).join('');

test('tiny corpus: same seed, same bytes; another seed, other bytes', () => {
  const again = generateCorpus({ seed: 7, ...SMALL });
  assert.equal(bytes(again), bytes(corpus));
  assert.notEqual(bytes(generateCorpus({ seed: 8, ...SMALL })), bytes(corpus));
  // One JSON object per line, newline-terminated.
  const lines = toJsonl(corpus.reasoningEval).split('\n');
  assert.equal(lines.pop(), '');
  assert.equal(lines.length, SMALL.reasoningEval);
  assert.deepEqual(Object.keys(JSON.parse(lines[0])), ['id', 'conversations', 'answer', 'answer_char', 'answer_step', 'redundant_steps']);
});

test('tiny corpus: no eval prompt appears in train', () => {
  const big = generateCorpus({ seed: 3, chatTrain: 3000, chatEval: 400, reasoningTrain: 200, reasoningEval: 50 });
  const evalPrompts = new Set([...big.chatEval, ...big.reasoningEval].map(promptOf));
  for (const r of [...big.chatTrain, ...big.reasoningTrain]) assert.ok(!evalPrompts.has(promptOf(r)), `${r.id}: ${promptOf(r)}`);
});

test('tiny corpus: conversations alternate human/gpt, 1-4 turns', () => {
  for (const r of allRecords(corpus)) {
    const n = r.conversations.length;
    assert.ok(n % 2 === 0 && n >= 2 && n <= 8, r.id);
    r.conversations.forEach((t, i) => assert.equal(t.from, i % 2 === 0 ? 'human' : 'gpt', r.id));
  }
});

/** Every "a + b - c = y" in `text` must be true (left to right). */
function checkArithmetic(id: string, text: string): number {
  let n = 0;
  for (const m of text.matchAll(/(\d+(?: [+-] \d+)+) = (\d+)/g)) {
    const parts = m[1].split(' ');
    let v = Number(parts[0]);
    for (let i = 1; i < parts.length; i += 2) v += parts[i] === '+' ? Number(parts[i + 1]) : -Number(parts[i + 1]);
    assert.equal(v, Number(m[2]), `${id}: ${m[0]}`);
    n++;
  }
  return n;
}

test('tiny corpus: reasoning records: format, answer offsets, correct arithmetic', () => {
  for (const r of [...corpus.reasoningTrain, ...corpus.reasoningEval] as ReasoningRecord[]) {
    const v = r.conversations[1].value;
    assert.ok(v.startsWith('<think>\n'), r.id);
    assert.equal(v.split('</think>').length, 2, `${r.id}: exactly one </think>`);
    assert.ok(v.endsWith('#### ' + r.answer), r.id);
    assert.match(r.answer, /^\d+$/);
    assert.ok(v.slice(r.answer_char).startsWith(r.answer), r.id);
    assert.ok(!/\d/.test(v[r.answer_char - 1]) && !/\d/.test(v[r.answer_char + r.answer.length]), `${r.id}: whole number at answer_char`);
    const thinking = v.slice('<think>\n'.length, v.indexOf('\n</think>'));
    const steps = thinking.split('\n\n');
    assert.ok(steps[r.answer_step].includes('= ' + r.answer), r.id);
    assert.equal(r.redundant_steps, steps.length - 1 - r.answer_step, r.id);
    assert.ok(r.redundant_steps >= 0 && r.redundant_steps <= 5, r.id);
    // answer_char falls inside the answer step.
    const stepStart = '<think>\n'.length + steps.slice(0, r.answer_step).reduce((s, t) => s + t.length + 2, 0);
    assert.ok(r.answer_char > stepStart && r.answer_char < stepStart + steps[r.answer_step].length, r.id);
    // Steps 1..answer_step are the operations "<clause>: x + b = y." / "<clause>: x - c = y.", chained, 2-4 of them,
    // each quoting its clause of the prompt, in order.
    const q = r.conversations[0].value;
    let clauseAt = 0;
    const ops = steps.slice(1, r.answer_step + 1);
    assert.ok(ops.length >= 2 && ops.length <= 4, r.id);
    let x = Number(/starts with (\d+) /.exec(steps[0])![1]);
    for (const s of ops) {
      const m = /^([a-z ]+ (\d+)(?: more)?): (\d+) ([+-]) (\d+) = (\d+)\.$/.exec(s);
      assert.ok(m, `${r.id}: ${s}`);
      const found = q.indexOf(m[1], clauseAt);
      assert.ok(found > clauseAt, `${r.id}: "${m[1]}" is the prompt's next clause`);
      clauseAt = found + m[1].length;
      assert.equal(m[2], m[5], `${r.id}: the clause's number is the operand`);
      assert.equal(m[4] === '+', m[1].endsWith(' more'), `${r.id}: gains add, losses subtract`);
      const [a, b, y] = [m[3], m[5], m[6]].map(Number);
      assert.equal(a, x, `${r.id}: chained`);
      assert.equal(m[4] === '+' ? a + b : a - b, y, `${r.id}: ${s}`);
      assert.ok(b >= 1 && b <= 9 && y >= 0 && y <= 30, `${r.id}: ${s}`);
      x = y;
    }
    assert.equal(String(x), r.answer, r.id);
    assert.ok(checkArithmetic(r.id, thinking) >= ops.length);
    // The prompt's numbers are the operands, in order.
    const nums = (q.match(/\d+/g) ?? []).map(Number);
    assert.deepEqual(
      nums.slice(1),
      ops.map((s) => Number(/(\d+) = \d+\.$/.exec(s)![1])),
      r.id,
    );
  }
});

test('tiny corpus: chat answers are true of the world', () => {
  const world = corpus.world;
  const checked = { city: 0, age: 0, job: 0, who: 0 };
  // The person a question names (not a pronoun follow-up), or undefined.
  const named = (q: string, re: RegExp) => {
    const m = re.exec(q);
    const name = m?.slice(1).find((g) => g !== undefined);
    return name && name !== 'she' && name !== 'he' ? findPerson(world, name) : undefined;
  };
  for (const r of [...corpus.chatTrain, ...corpus.chatEval]) {
    for (let i = 0; i < r.conversations.length; i += 2) {
      const q = r.conversations[i].value;
      const a = r.conversations[i + 1].value;
      let p: ReturnType<typeof named>;
      let m: RegExpExecArray | null;
      if ((p = named(q, /^(?:Where does (\w+) live|Which city is (\w+) from|In which city does (\w+) live)\?$/))) {
        assert.ok(a.includes(` ${p.city}`), `${r.id}: ${q} -> ${a} (${p.city})`);
        checked.city++;
      } else if ((p = named(q, /^(?:How old is (\w+)|What is (\w+)'s age)\?$/))) {
        assert.ok(a.includes(` ${p.age}`), `${r.id}: ${q} -> ${a} (${p.age})`);
        checked.age++;
      } else if ((p = named(q, /^(?:What does (\w+) do for a living|What is (\w+)'s job)\?$/))) {
        assert.ok(a.includes(` ${p.job}`), `${r.id}: ${q} -> ${a} (${p.job})`);
        checked.job++;
      } else if ((m = /^Who lives in (\w+)\?$/.exec(q))) {
        const city = m[1];
        for (const x of world.people) assert.equal(new RegExp(`\\b${x.name}\\b`).test(a), x.city === city, `${r.id}: ${q} -> ${a}`);
        checked.who++;
      }
    }
  }
  for (const [kind, n] of Object.entries(checked)) assert.ok(n >= 5, `only ${n} ${kind} questions checked`);
});

function writeTokenizer(texts: string[]): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tiny-tok-'));
  const { tokenizerJson, tokenizerConfig } = buildTokenizer(texts);
  fs.writeFileSync(path.join(dir, 'tokenizer.json'), JSON.stringify(tokenizerJson, null, 2) + '\n');
  fs.writeFileSync(path.join(dir, 'tokenizer_config.json'), JSON.stringify(tokenizerConfig, null, 2) + '\n');
  return dir;
}

test('tiny tokenizer: loads, round-trips the corpus, keeps markers and paragraph breaks whole', () => {
  const texts = allRecords(corpus).flatMap((r) => r.conversations.map((t) => t.value));
  const dir = writeTokenizer(texts);
  try {
    const tok = loadTokenizer(dir);
    assert.ok(tok.vocabSize <= MAX_VOCAB);
    for (const t of texts) {
      const ids = tok.encode(t);
      assert.ok(!ids.includes(5), `no <unk> in ${JSON.stringify(t)}`);
      assert.equal(tok.decode(ids), t);
    }
    assert.equal(tok.encode('\n\n').length, 1);
    assert.deepEqual(tok.encode('<think>'), [3]);
    assert.deepEqual(tok.encode('<|im_end|>'), [2]);
    assert.deepEqual(tok.encode('<|im_start|>'), [1]);
    assert.deepEqual(tok.encode('<|endoftext|>'), [0]);
    assert.equal(tok.eosToken, '<|im_end|>');
    assert.equal(tok.padToken, '<|endoftext|>');
    assert.equal(tok.bosToken, null);
    assert.deepEqual([...tok.specialIds].sort(), [0, 1, 2, 5]);
    // Words keep their leading space: " has" is one token, as is " 13".
    assert.equal(tok.encode('Tom has 13.').length, 4);
    // ChatML, as the template renders it.
    const conv = corpus.reasoningEval[0].conversations;
    const rendered = chatMLText(conv);
    assert.equal(rendered, `<|im_start|>user\n${conv[0].value}<|im_end|>\n<|im_start|>assistant\n${conv[1].value}<|im_end|>\n`);
    const ids = tok.encode(rendered);
    assert.equal(tok.decode(ids), rendered);
    assert.equal(ids.filter((i) => i === 2).length, 2);
    assert.equal(ids[0], 1);
    assert.ok(!ids.includes(5));
    assert.match(tok.chatTemplate ?? '', /<\|im_start\|>assistant\\n/);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('tiny tokenizer: unknown words become <unk>; too many words is an error', () => {
  const dir = writeTokenizer(['Tom has 3 apples.']);
  try {
    const tok = loadTokenizer(dir);
    assert.deepEqual(tok.encode('Tom has 4 apples.').filter((i) => i === 5).length, 1);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
  // MAX_VOCAB distinct letter-only words, more than fit beside the 6 added tokens.
  const word = (i: number) => 'w' + [...i.toString(26)].map((c) => String.fromCharCode(97 + parseInt(c, 26))).join('');
  const words = Array.from({ length: MAX_VOCAB }, (_, i) => word(i));
  assert.throws(() => buildTokenizer([words.join(' ')]), /exceeds 4096/);
});

test('tiny tokenizer: the shipped data/tiny-target tokenizer loads, vocabulary <= 4096', () => {
  const dir = fileURLToPath(new URL('../data/tiny-target', import.meta.url));
  const tok = loadTokenizer(dir);
  assert.ok(tok.vocabSize > 6 && tok.vocabSize <= MAX_VOCAB, `vocabulary ${tok.vocabSize}`);
  assert.deepEqual(tok.encode('<think>\n'), [3, tok.requireId('\n')]);
  assert.equal(tok.idToToken(2), '<|im_end|>');
});
