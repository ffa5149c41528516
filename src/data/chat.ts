// Conversations -> token ids and the loss mask (1 on what the assistant writes: its content and its
// end-of-turn token; 0 on system and user turns and on role headers).
import type { Tokenizer } from '../io/tokenizer.ts';
import { tokenizeConversation } from './templates.ts';

export type Role = 'system' | 'user' | 'assistant';

export interface Message {
  role: Role;
  content: string;
}

export interface Tokenized {
  ids: number[];
  lossMask: number[];
}

/**
 * ChatML (`<|im_start|>role\n content <|im_end|>\n`), the format of Qwen and of the shipped tiny target:
 * the same as tokenizeConversation(messages, tok, { template: 'chatml' }) (no default system message).
 * Runs of equal mask are encoded separately, so a mask boundary never falls inside a token.
 */
export function renderChatML(messages: Message[], tok: Tokenizer, opts: { addGenerationPrompt?: boolean } = {}): Tokenized {
  const { ids, lossMask } = tokenizeConversation(messages, tok, { template: 'chatml', addGenerationPrompt: opts.addGenerationPrompt });
  return { ids, lossMask };
}
