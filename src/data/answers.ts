// Final-answer extractors (GSM8K "#### N", LaTeX \boxed{...}, the last number) and where a thinking span
// first states the answer: the raw material of SpecExit's confidence label.

export type AnswerExtractor = 'gsm8k' | 'boxed' | 'last-number' | 'none';

const NUMBER = /-?\d[\d,]*(?:\.\d+)?/g;

function normaliseNumber(s: string): string {
  const n = s.replace(/,/g, '');
  return /\.\d*$/.test(n) ? n.replace(/\.?0+$/, '') : n; // 12.50 -> 12.5, 3.0 -> 3
}

/** Contents of the last \boxed{...}, with nested braces balanced. */
function lastBoxed(text: string): string | null {
  const at = text.lastIndexOf('\\boxed{');
  if (at < 0) return null;
  let depth = 0;
  for (let i = at + 6; i < text.length; i++) {
    if (text[i] === '{') depth++;
    else if (text[i] === '}' && --depth === 0) return text.slice(at + 7, i).trim();
  }
  return null; // unbalanced
}

/** The final answer of a reply (the text after </think> when there is one), or null. */
export function extractAnswer(reply: string, extractor: AnswerExtractor): string | null {
  const close = reply.lastIndexOf('</think>');
  const text = close >= 0 ? reply.slice(close + '</think>'.length) : reply;
  switch (extractor) {
    case 'none':
      return null;
    case 'gsm8k': {
      const m = [...text.matchAll(/####\s*(-?[\d,]+(?:\.\d+)?)/g)].pop();
      return m ? normaliseNumber(m[1]) : null;
    }
    case 'boxed':
      return lastBoxed(text);
    case 'last-number': {
      const m = [...text.matchAll(NUMBER)].pop();
      return m ? normaliseNumber(m[0]) : null;
    }
  }
}

/** Whether `text` states `answer`: numbers must match whole (7 is not in 17 or 7.5), other answers as substrings. */
export function statesAnswer(text: string, answer: string): boolean {
  if (/^-?\d+(\.\d+)?$/.test(answer)) {
    for (const m of text.matchAll(NUMBER)) if (normaliseNumber(m[0]) === answer) return true;
    return false;
  }
  return text.includes(answer);
}
