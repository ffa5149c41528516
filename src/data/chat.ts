// The chat data types shared by dataset readers and templates: a conversation's messages, and its
// tokenisation (token ids plus the loss mask: 1 on what the assistant writes, its content and its
// end-of-turn token; 0 on system and user turns and on role headers).

export type Role = 'system' | 'user' | 'assistant';

export interface Message {
  role: Role;
  content: string;
}

export interface Tokenized {
  ids: number[];
  lossMask: number[];
}
