// The eval report (aggregation, table, SVG) on hand-made decode results, and the eval prompt readers.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, test } from 'node:test';
import { parsePromptLine, promptTurns, readPromptFile } from '../src/decode/prompts.ts';
import { acceptanceSvg, buildReport, type PromptRecord, reportTable } from '../src/decode/report.ts';
import type { SpecResult } from '../src/decode/speculative.ts';
import { removeTempDirs, tempDir } from './helpers.ts';

after(removeTempDirs);

function spec(tokens: number[], acceptLengths: number[], k: number, seconds: number): SpecResult {
  const drafted = new Array(k).fill(acceptLengths.length);
  const accepted = Array.from({ length: k }, (_, i) => acceptLengths.filter((a) => a > i).length);
  const passes = acceptLengths.length;
  return {
    tokens,
    finish: 'length',
    verifyPasses: passes,
    verifyTokens: tokens.length - 1,
    tau: passes ? (tokens.length - 1) / passes : null,
    acceptLengths,
    drafted,
    accepted,
    exits: 0,
    seconds,
    prefillSeconds: 0.1,
    draftSeconds: 0.2,
    verifySeconds: seconds - 0.3,
    draftSteps: k * passes,
    draftStepSeconds: 0.15,
  };
}

test('buildReport: tau over all verify passes, per-position rates, speeds and speedup', () => {
  const records: PromptRecord[] = [
    // 1 + (2+1) + (0+1) + (3+1) = 9 tokens in 3 passes; identical to plain.
    {
      id: 'a',
      promptTokens: 5,
      spec: spec([1, 2, 3, 4, 5, 6, 7, 8, 9], [2, 0, 3], 3, 1),
      plain: { tokens: [1, 2, 3, 4, 5, 6, 7, 8, 9], seconds: 2 },
    },
    // 1 + (1+1) = 3 tokens in 1 pass; differs from plain.
    { id: 'b', category: 'math', promptTokens: 3, spec: spec([4, 5, 6], [1], 3, 0.5), plain: { tokens: [4, 5, 7], seconds: 1 } },
  ];
  const r = buildReport(records, { temperature: 0 });
  assert.equal(r.prompts, 2);
  assert.equal(r.generatedTokens, 12);
  assert.equal(r.verifyPasses, 4);
  assert.equal(r.verifyTokens, 10);
  assert.equal(r.tau, 10 / 4);
  // Latencies: verify time over passes, draft-forward time over draft forwards (3 per pass at k = 3).
  assert.ok(Math.abs(r.speculative.verifyPassMs! - (1000 * (0.7 + 0.2)) / 4) < 1e-9);
  assert.ok(Math.abs(r.speculative.draftStepMs! - (1000 * 0.3) / 12) < 1e-9);
  assert.deepEqual(r.acceptLengthHistogram, [1, 1, 1, 1]);
  assert.deepEqual(
    r.positions.map((p) => [p.drafted, p.accepted]),
    [
      [4, 3],
      [4, 2],
      [4, 1],
    ],
  );
  assert.deepEqual(
    r.positions.map((p) => p.rate),
    [3 / 4, 2 / 4, 1 / 4],
  );
  assert.deepEqual(
    r.positions.map((p) => p.conditional),
    [3 / 4, 2 / 3, 1 / 2],
  );
  assert.equal(r.speculative.tokensPerSecond, 12 / 1.5);
  assert.equal(r.plain.tokensPerSecond, 12 / 3);
  assert.equal(r.speedup, 2);
  assert.deepEqual(r.identicalToPlain, { identical: 1, of: 2 });
  assert.deepEqual(
    r.perPrompt.map((p) => p.identical),
    [true, false],
  );
  assert.equal(r.perPrompt[1].category, 'math');
  assert.equal(buildReport(records, { temperature: 0.7 }).identicalToPlain, null);

  const table = reportTable(r);
  assert.match(table, /tau 2\.500/);
  assert.match(table, /rate\s+0\.750\s+0\.500\s+0\.250/);
  assert.match(table, /speedup\s+2\.00x/);
  const svg = acceptanceSvg(r, 'A < B & C');
  assert.match(svg, /^<svg xmlns="http:\/\/www\.w3\.org\/2000\/svg"/);
  assert.match(svg, /<\/svg>\n$/);
  assert.equal(svg.match(/class="bar"/g)!.length, 3);
  assert.match(svg, /A &lt; B &amp; C/);
  assert.match(svg, /position 1: 3\/4/);
  // Balanced tags (a cheap well-formedness check: every opened element is closed).
  const opened = (svg.match(/<(rect|text|line|svg|title)\b/g) ?? []).length;
  const closed = (svg.match(/<\/(rect|text|line|svg|title)>|\/>/g) ?? []).length;
  assert.equal(opened, closed);
});

test('an empty run reports no tau and no speed rather than dividing by zero', () => {
  const r = buildReport([{ id: 'x', promptTokens: 2, spec: spec([7], [], 2, 0.1), plain: { tokens: [7], seconds: 0.1 } }], {
    temperature: 0,
  });
  assert.equal(r.tau, null);
  assert.equal(r.verifyPasses, 0);
  assert.match(acceptanceSvg(r), /<\/svg>/);
});

test('prompts: MT-bench (first turn), GSM8K (question), conversations (turns before the first reply)', async () => {
  const mt = parsePromptLine(
    JSON.stringify({ question_id: 81, category: 'writing', turns: ['Compose a blog post.', 'Rewrite it.'] }),
    'q.jsonl:1',
  );
  assert.deepEqual(mt, { id: '81', category: 'writing', messages: [{ role: 'user', content: 'Compose a blog post.' }] });
  const gsm = parsePromptLine(JSON.stringify({ question: 'What is 2 + 3?', answer: '#### 5' }), 'g.jsonl:4');
  assert.deepEqual(gsm, { id: 'g.jsonl:4', category: null, messages: [{ role: 'user', content: 'What is 2 + 3?' }] });
  const conv = parsePromptLine(
    JSON.stringify({
      id: 'c',
      conversations: [
        { from: 'system', value: 'Be brief.' },
        { from: 'human', value: 'Hi' },
        { from: 'gpt', value: 'Hello' },
        { from: 'human', value: 'More' },
      ],
    }),
    'c.jsonl:1',
  );
  assert.deepEqual(conv.messages, [
    { role: 'system', content: 'Be brief.' },
    { role: 'user', content: 'Hi' },
  ]);
  assert.throws(() => parsePromptLine('{"text": "x"}', 'bad.jsonl:3'), /bad\.jsonl:3: expected an MT-bench question/);
  assert.throws(() => parsePromptLine('{"turns": []}', 'bad.jsonl:5'), /bad\.jsonl:5: "turns"/);
  assert.equal(promptTurns([{ role: 'assistant', content: 'x' }]), null);

  const dir = tempDir('prompts-');
  const file = path.join(dir, 'q.jsonl');
  fs.writeFileSync(
    file,
    [1, 2, 3].map((i) => JSON.stringify({ question_id: i, category: 'c', turns: [`question ${i}`] })).join('\n\n') + '\n',
  );
  assert.deepEqual(
    (await readPromptFile(file, null)).map((p) => p.id),
    ['1', '2', '3'],
  );
  assert.deepEqual(
    (await readPromptFile(file, 2)).map((p) => p.id),
    ['1', '2'],
  );
});
