// Answer extraction and thinking spans, on hand-written cases (the SpecExit label raw material).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { extractAnswer, statesAnswer } from '../src/data/answers.ts';
import { findThinkingSpans } from '../src/data/thinking.ts';

test('extractors: gsm8k, boxed (nested), last number; only after </think>', () => {
  assert.equal(extractAnswer('<think>#### 3</think> so #### 1,234', 'gsm8k'), '1234');
  assert.equal(extractAnswer('x = \\boxed{\\frac{1}{2}} done', 'boxed'), '\\frac{1}{2}');
  assert.equal(extractAnswer('\\boxed{1} then \\boxed{2}', 'boxed'), '2');
  assert.equal(extractAnswer('\\boxed{unbalanced', 'boxed'), null);
  assert.equal(extractAnswer('<think>7</think>It is 12.50 dollars, not 3.', 'last-number'), '3');
  assert.equal(extractAnswer('about 12.50', 'last-number'), '12.5');
  assert.equal(extractAnswer('<think>42</think> no number', 'last-number'), null);
  assert.equal(extractAnswer('#### 5', 'none'), null);
});

test('statesAnswer matches whole numbers only', () => {
  assert.ok(statesAnswer('so 3 + 4 = 7.', '7'));
  assert.ok(!statesAnswer('17 apples', '7'));
  assert.ok(!statesAnswer('7.5 apples', '7'));
  assert.ok(statesAnswer('x = \\frac{1}{2}', '\\frac{1}{2}'));
});

// A word-level toy vocabulary: each id decodes to one word.
const words = ['<pad>', '<think>', '</think>', ' a', ' 5', ' 7', ' =', '\n\n', ' ####', ' 12', ' end', ' 75'];
const T = { think: 1, endThink: 2 };
const decode = (ids: number[]) => ids.map((i) => words[i]).join('');
const find = (ids: number[], mask: number[]) => findThinkingSpans(ids, mask, T, decode, 'gsm8k');

test('one span: boundaries and the first position stating the answer', () => {
  //          0  1  2  3  4  5  6  7  8  9 10 11
  const ids = [3, 1, 3, 4, 6, 5, 7, 5, 2, 8, 5, 10];
  const mask = [0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1];
  assert.deepEqual(find(ids, mask), [{ start: 2, end: 8, answerAt: 5, answer: '7' }]);
});

test('edge cases: no thinking, unterminated, answer never derived, several turns, truncation', () => {
  assert.deepEqual(find([3, 4, 8, 5], [0, 1, 1, 1]), [], 'no thinking span');
  assert.deepEqual(find([1, 3, 4, 8, 5], [1, 1, 1, 1, 1]), [], 'unterminated <think> (cut by truncation)');
  assert.deepEqual(find([1, 3, 4, 2, 8, 5], [1, 1, 1, 1, 1, 1]), [{ start: 1, end: 3, answerAt: -1, answer: '7' }], 'never derived');
  assert.deepEqual(find([1, 3, 11, 2, 8, 5], [1, 1, 1, 1, 1, 1]), [{ start: 1, end: 3, answerAt: -1, answer: '7' }], '75 does not state 7');
  assert.deepEqual(find([1, 3, 2, 10], [1, 1, 1, 1]), [{ start: 1, end: 2, answerAt: -1, answer: '' }], 'no extractable answer');
  // Two assistant turns separated by an unmasked user turn; each has its own answer.
  const ids = [1, 9, 2, 8, 9, 3, 3, 1, 4, 2, 8, 4];
  const mask = [1, 1, 1, 1, 1, 0, 0, 1, 1, 1, 1, 1];
  assert.deepEqual(find(ids, mask), [
    { start: 1, end: 2, answerAt: 1, answer: '12' },
    { start: 8, end: 9, answerAt: 8, answer: '5' },
  ]);
  // A <think> whose turn ends (mask drops) before </think> is dropped; the next turn's span stands.
  assert.deepEqual(find([1, 4, 3, 1, 5, 2], [1, 1, 0, 1, 1, 1]), [{ start: 4, end: 5, answerAt: -1, answer: '' }]);
});
