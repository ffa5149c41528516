// Prompts for `specforge eval`: the recipe's held-out conversations, or an --input file of MT-bench
// questions ({"question_id", "category", "turns": [...]}: the first turn) or GSM8K records ({"question"}).
// A conversation's prompt is its messages before the first assistant turn (system and user), rendered with
// the chat template and the generation prompt.
import fs from 'node:fs';
import type { Message } from '../data/chat.ts';
import { DatasetError, type DatasetFormat, jsonlLines, parseConversationLine, readConversations } from '../data/datasets.ts';
import { tokenizeConversation, type TemplateName } from '../data/templates.ts';
import type { Tokenizer } from '../io/tokenizer.ts';

export interface EvalPrompt {
  id: string;
  category: string | null;
  messages: Message[];
  /** The reference reply (the first assistant turn after the prompt), when the data has one. */
  reference?: string;
}

export interface TokenizedPrompt extends EvalPrompt {
  ids: number[];
}

/** The messages before the first assistant turn, when they hold a user turn. */
export function promptTurns(messages: Message[]): Message[] | null {
  const end = messages.findIndex((m) => m.role === 'assistant');
  const head = end < 0 ? messages : messages.slice(0, end);
  return head.some((m) => m.role === 'user') ? head : null;
}

const isObj = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** One line of an --input file: MT-bench, GSM8K, or a conversation (ShareGPT / OpenAI messages). */
export function parsePromptLine(line: string, where: string): EvalPrompt {
  let obj: unknown;
  try {
    obj = JSON.parse(line);
  } catch (e) {
    throw new DatasetError(`${where}: not valid JSON (${(e as Error).message})`);
  }
  if (!isObj(obj)) throw new DatasetError(`${where}: expected a JSON object`);
  const id = (key: string) => (typeof obj[key] === 'string' || typeof obj[key] === 'number' ? String(obj[key]) : where);
  const category = typeof obj.category === 'string' ? obj.category : null;
  if ('turns' in obj) {
    const turns = obj.turns;
    if (!Array.isArray(turns) || typeof turns[0] !== 'string' || !turns[0])
      throw new DatasetError(`${where}: "turns" is ${JSON.stringify(turns)}; expected a list of strings (MT-bench)`);
    return { id: id('question_id'), category, messages: [{ role: 'user', content: turns[0] }] };
  }
  if ('question' in obj && !('conversations' in obj) && !('messages' in obj)) {
    if (typeof obj.question !== 'string' || !obj.question)
      throw new DatasetError(`${where}: "question" is ${JSON.stringify(obj.question)}; expected a non-empty string (GSM8K)`);
    return { id: id('id'), category, messages: [{ role: 'user', content: obj.question }] };
  }
  let conv: ReturnType<typeof parseConversationLine>;
  try {
    conv = parseConversationLine(line, 'auto', where);
  } catch (e) {
    if (e instanceof DatasetError && /cannot tell the format/.test(e.message)) {
      throw new DatasetError(
        `${where}: expected an MT-bench question ("turns"), a GSM8K record ("question") or a conversation ("conversations" / "messages"); got keys ${JSON.stringify(Object.keys(obj))}`,
      );
    }
    throw e;
  }
  const messages = promptTurns(conv.messages);
  if (!messages) throw new DatasetError(`${where}: the conversation has no user turn before its first assistant turn`);
  return { id: conv.id, category, messages };
}

/** Prompts of an --input JSONL file (blank lines skipped). */
export async function readPromptFile(file: string, limit: number | null): Promise<EvalPrompt[]> {
  if (!fs.existsSync(file)) throw new DatasetError(`${file}: cannot read (no such file)`);
  const out: EvalPrompt[] = [];
  for await (const { line, where } of jsonlLines(file)) {
    out.push(parsePromptLine(line, where));
    if (limit !== null && out.length >= limit) break;
  }
  return out;
}

/** Prompts of the recipe's held-out conversations (data.eval), in file order. */
export async function readRecipePrompts(
  files: string[],
  opts: { format: DatasetFormat; skipInvalid: boolean; limit: number | null },
): Promise<EvalPrompt[]> {
  const out: EvalPrompt[] = [];
  for (const file of files) {
    for await (const c of readConversations(file, { format: opts.format, skipInvalid: opts.skipInvalid }).conversations) {
      if (opts.limit !== null && out.length >= opts.limit) return out;
      const messages = promptTurns(c.messages);
      const reply = c.messages[messages?.length ?? 0];
      if (messages)
        out.push({
          id: c.id,
          category: typeof c.extra.category === 'string' ? c.extra.category : null,
          messages,
          ...(reply?.role === 'assistant' ? { reference: reply.content } : {}),
        });
    }
  }
  return out;
}

export function tokenizePrompts(prompts: EvalPrompt[], tok: Tokenizer, template: TemplateName): TokenizedPrompt[] {
  return prompts.map((p) => ({ ...p, ids: tokenizeConversation(p.messages, tok, { template, addGenerationPrompt: true }).ids }));
}
