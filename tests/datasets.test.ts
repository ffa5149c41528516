// Streaming JSONL conversation readers: sharegpt, openai, gsm8k and auto, bad lines and skipInvalid.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { type Conversation, DatasetError, type ReadOptions, readConversations } from '../src/data/datasets.ts';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'specforge-datasets-'));
after(() => fs.rmSync(dir, { recursive: true, force: true }));

let n = 0;
/** A temp JSONL file of these lines (objects are JSON-encoded, strings written as is). */
function jsonl(lines: (object | string)[]): string {
  const file = path.join(dir, `d${n++}.jsonl`);
  fs.writeFileSync(file, lines.map((l) => (typeof l === 'string' ? l : JSON.stringify(l))).join('\n') + '\n');
  return file;
}

async function readAll(file: string, opts: ReadOptions = {}) {
  const r = readConversations(file, opts);
  const out: Conversation[] = [];
  for await (const c of r.conversations) out.push(c);
  return { out, stats: r.stats };
}

/** Asserts reading fails with a DatasetError whose message matches. */
async function rejects(file: string, opts: ReadOptions, re: RegExp) {
  await assert.rejects(readAll(file, opts), (e: Error) => {
    assert.ok(e instanceof DatasetError, `DatasetError, got ${e}`);
    assert.match(e.message, re);
    return true;
  });
}

const share1 = {
  id: 'a1',
  conversations: [
    { from: 'system', value: 'Be brief.' },
    { from: 'human', value: 'Hi' },
    { from: 'gpt', value: 'Hello!' },
  ],
  answer: '42',
};
const share2 = {
  conversations: [
    { from: 'user', value: 'Q?' },
    { from: 'assistant', value: 'A.' },
  ],
};

test('sharegpt: messages, ids, extra fields and file:line sources; blank lines ignored', async () => {
  const file = jsonl([share1, '', '   ', share2]);
  const { out, stats } = await readAll(file, { format: 'sharegpt' });
  assert.equal(out.length, 2);
  assert.deepEqual(out[0], {
    id: 'a1',
    messages: [
      { role: 'system', content: 'Be brief.' },
      { role: 'user', content: 'Hi' },
      { role: 'assistant', content: 'Hello!' },
    ],
    extra: { answer: '42' },
    source: `${file}:1`,
  });
  assert.deepEqual(out[1].messages, [
    { role: 'user', content: 'Q?' },
    { role: 'assistant', content: 'A.' },
  ]);
  assert.equal(out[1].id, `${file}:4`, 'no id: the source');
  assert.equal(out[1].source, `${file}:4`);
  assert.deepEqual(stats, { read: 2, skipped: 0, firstErrors: [] });
});

test('openai: messages (or conversations) of role/content, text parts joined', async () => {
  const file = jsonl([
    {
      id: 7,
      messages: [
        { role: 'system', content: 'S' },
        { role: 'user', content: 'U' },
        { role: 'assistant', content: 'A' },
      ],
      source: 'web',
    },
    '',
    {
      conversations: [
        {
          role: 'user',
          content: [
            { type: 'text', text: 'Part 1, ' },
            { type: 'text', text: 'part 2' },
          ],
        },
        { role: 'assistant', content: 'B' },
      ],
    },
  ]);
  const { out } = await readAll(file, { format: 'openai' });
  assert.equal(out.length, 2);
  assert.equal(out[0].id, '7');
  assert.deepEqual(out[0].extra, { source: 'web' });
  assert.deepEqual(
    out[0].messages.map((m) => m.role),
    ['system', 'user', 'assistant'],
  );
  assert.deepEqual(out[1].messages[0], { role: 'user', content: 'Part 1, part 2' });
  assert.equal(out[1].source, `${file}:3`);
});

test('gsm8k: question -> user, answer -> assistant', async () => {
  const file = jsonl([
    { question: 'Tom has 3 apples and eats 1. How many?', answer: '3 - 1 = 2\n#### 2' },
    '',
    { question: 'What is 2 + 2?', answer: '#### 4', level: 1 },
  ]);
  const { out } = await readAll(file, { format: 'gsm8k' });
  assert.deepEqual(out[0].messages, [
    { role: 'user', content: 'Tom has 3 apples and eats 1. How many?' },
    { role: 'assistant', content: '3 - 1 = 2\n#### 2' },
  ]);
  assert.deepEqual(out[1].extra, { level: 1 });
  assert.equal(out[1].source, `${file}:3`);
});

test('auto: the format is decided per line', async () => {
  const file = jsonl([
    share1,
    {
      messages: [
        { role: 'user', content: 'U' },
        { role: 'assistant', content: 'A' },
      ],
    },
    {
      conversations: [
        { role: 'user', content: 'U2' },
        { role: 'assistant', content: 'A2' },
      ],
    },
    { question: 'Q', answer: 'A3' },
  ]);
  const { out } = await readAll(file); // format defaults to auto
  assert.deepEqual(
    out.map((c) => c.messages.at(-1)!.content),
    ['Hello!', 'A', 'A2', 'A3'],
  );
  await rejects(
    jsonl([share1, { prompt: 'x', completion: 'y' }]),
    {},
    /:2: cannot tell the format .*"conversations" \(sharegpt\), "messages" \(openai\) or "question" and "answer" \(gsm8k\)/,
  );
});

test('limit stops early; stats fill in as the generator is consumed', async () => {
  const file = jsonl([share1, share2, share1, share2]);
  const r = readConversations(file, { format: 'sharegpt', limit: 3 });
  assert.equal(r.stats.read, 0);
  const first = await r.conversations.next();
  assert.equal(first.done, false);
  assert.equal(r.stats.read, 1);
  let rest = 0;
  for await (const _ of r.conversations) rest++;
  assert.equal(rest, 2);
  assert.equal(r.stats.read, 3);
  assert.equal((await readAll(file, { limit: 0 })).out.length, 0);
  // Breaking out of the loop closes the file (no hang, no error).
  for await (const _ of readConversations(file).conversations) break;
});

test('bad lines are DatasetErrors naming file:line and what was expected', async () => {
  const good: Record<string, object> = {
    sharegpt: share1,
    auto: share1,
    openai: {
      messages: [
        { role: 'user', content: 'U' },
        { role: 'assistant', content: 'A' },
      ],
    },
    gsm8k: { question: 'Q', answer: 'A' },
  };
  const cases: [object | string, ReadOptions, RegExp][] = [
    ['{"conversations": [', { format: 'sharegpt' }, /not valid JSON/],
    ['[1, 2]', { format: 'auto' }, /expected a JSON object, got a list/],
    [{ id: 1 }, { format: 'sharegpt' }, /"conversations" is missing; expected a list of \{from, value\}/],
    [{ conversations: 'hi' }, { format: 'sharegpt' }, /"conversations" is "hi"; expected a list/],
    [
      {
        conversations: [
          { from: 'bot', value: 'x' },
          { from: 'gpt', value: 'y' },
        ],
      },
      { format: 'sharegpt' },
      /conversations\[0\]\.from is "bot"; expected human, gpt or system/,
    ],
    [
      {
        conversations: [
          { from: 'human', value: 3 },
          { from: 'gpt', value: 'y' },
        ],
      },
      { format: 'sharegpt' },
      /conversations\[0\]\.value is 3; expected a string/,
    ],
    [{ conversations: [] }, { format: 'sharegpt' }, /empty conversation/],
    [{ conversations: [] }, { format: 'auto' }, /empty conversation/],
    [{ conversations: [{ from: 'human', value: 'x' }] }, { format: 'sharegpt' }, /no assistant message/],
    [
      { messages: [{ role: 'tool', content: 'x' }] },
      { format: 'openai' },
      /messages\[0\]\.role is "tool"; expected system, user or assistant/,
    ],
    [{ messages: [{ role: 'user', content: null }] }, { format: 'openai' }, /messages\[0\]\.content is null; expected a string/],
    [{ messages: [{ role: 'user', content: 'x' }] }, { format: 'auto' }, /no assistant message/],
    [{ messages: [] }, { format: 'openai' }, /empty conversation/],
    [{ text: 'x' }, { format: 'openai' }, /"messages" is missing; expected a list of \{role, content\}/],
    [{ question: 'x' }, { format: 'gsm8k' }, /"answer" is missing; expected a string/],
    [{ question: 1, answer: '2' }, { format: 'gsm8k' }, /"question" is 1; expected a string/],
  ];
  for (const [bad, opts, re] of cases) {
    const file = jsonl([good[opts.format!], '', bad]);
    await rejects(file, opts, new RegExp(`^${file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}:3: .*` + re.source));
  }
  await rejects(path.join(dir, 'nope.jsonl'), {}, /nope\.jsonl: cannot read/);
  assert.throws(() => readConversations(jsonl([share1]), { format: 'csv' as never }), /unknown dataset format "csv"/);
});

test('skipInvalid: bad lines are skipped and counted, the first errors kept', async () => {
  const lines: (object | string)[] = [share1, 'not json', '', { conversations: [{ from: 'human', value: 'x' }] }, share2];
  for (let i = 0; i < 12; i++) lines.push({ question: 'only' });
  lines.push(share1);
  const file = jsonl(lines);
  await rejects(file, {}, /:2: not valid JSON/);
  const { out, stats } = await readAll(file, { skipInvalid: true });
  assert.equal(out.length, 3);
  assert.deepEqual(
    out.map((c) => c.source),
    [`${file}:1`, `${file}:5`, `${file}:18`],
  );
  assert.equal(stats.read, 3);
  assert.equal(stats.skipped, 14);
  assert.equal(stats.firstErrors.length, 10);
  assert.match(stats.firstErrors[0], /:2: not valid JSON/);
  assert.match(stats.firstErrors[1], /:4: "conversations" has no assistant message/);
  assert.match(stats.firstErrors[2], /:6: cannot tell the format/);
});
