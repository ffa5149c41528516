// The token ids SpecExit decoding needs from the target's tokenizer: <think>, </think>, the step split (a
// paragraph break, one token) and what replaces it when an exit closes the thinking the model's own way
// (a newline, then </think>).
import type { Tokenizer } from '../io/tokenizer.ts';

export interface ExitTokenIds {
  thinkId: number;
  endThinkId: number;
  splitIds: number[];
  replaceIds: number[];
}

export function exitTokenIds(tok: Tokenizer): ExitTokenIds {
  const thinkId = tok.requireId('<think>');
  const endThinkId = tok.requireId('</think>');
  const split = tok.encode('\n\n');
  if (split.length !== 1)
    throw new Error(`the tokenizer encodes a paragraph break as ${split.length} tokens; SpecExit needs a single step-split token`);
  return { thinkId, endThinkId, splitIds: split, replaceIds: [...tok.encode('\n'), endThinkId] };
}
