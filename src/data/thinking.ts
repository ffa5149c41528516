// Thinking spans of a tokenized conversation and where each first states the final answer: the raw
// material of SpecExit's labels. Positions are token indices: `start` is the first token after <think>,
// `end` is the </think> token.
import { type AnswerExtractor, extractAnswer, statesAnswer } from './answers.ts';

export interface ThinkingSpan {
  start: number;
  end: number;
  /** First position t in [start, end) whose thinking text up to t states the answer; -1 if none. */
  answerAt: number;
  /** The final answer of the reply holding the span ("" when none can be extracted). */
  answer: string;
}

/**
 * Finds <think> ... </think> spans inside assistant replies (maximal runs of lossMask = 1). A span cut
 * by truncation or by the end of its turn (no </think>) is dropped: how far it had come is unknown.
 * The answer is extracted from the reply's text after </think>.
 */
export function findThinkingSpans(
  ids: ArrayLike<number>,
  lossMask: ArrayLike<number>,
  tokens: { think: number; endThink: number },
  decode: (ids: number[]) => string,
  extractor: AnswerExtractor,
): ThinkingSpan[] {
  const spans: ThinkingSpan[] = [];
  let i = 0;
  while (i < ids.length) {
    if (!lossMask[i]) {
      i++;
      continue;
    }
    let j = i;
    while (j < ids.length && lossMask[j]) j++;
    const reply = Array.from({ length: j - i }, (_, k) => ids[i + k]);
    const answer = extractor === 'none' ? null : extractAnswer(decode(reply), extractor);
    let open = -1;
    for (let t = i; t < j; t++) {
      if (ids[t] === tokens.think) open = t + 1;
      else if (ids[t] === tokens.endThink && open >= 0) {
        let answerAt = -1;
        if (answer) {
          let text = '';
          for (let p = open; p < t; p++) {
            text += decode([ids[p]]);
            if (statesAnswer(text, answer)) {
              answerAt = p;
              break;
            }
          }
        }
        spans.push({ start: open, end: t, answerAt, answer: answer ?? '' });
        open = -1;
      }
    }
    i = j;
  }
  return spans;
}
