// ShareGPT JSONL ({"id", "conversations": [{"from", "value"}]}) into chat messages.
import fs from 'node:fs';
import { type Message, SHAREGPT_ROLES } from './chat.ts';

export class DatasetError extends Error {}

export interface ShareGptRecord {
  id: string;
  messages: Message[];
  /** Any other fields of the record (answer, answer_char, ...). */
  extra: Record<string, unknown>;
}

export function parseShareGptLine(line: string, where: string): ShareGptRecord {
  let obj: Record<string, unknown>;
  try {
    obj = JSON.parse(line);
  } catch (e) {
    throw new DatasetError(`${where}: not valid JSON (${(e as Error).message})`);
  }
  const conv = obj.conversations;
  if (!Array.isArray(conv) || conv.length === 0) throw new DatasetError(`${where}: expected a non-empty "conversations" list`);
  const messages = conv.map((m, i) => {
    const role = SHAREGPT_ROLES[(m as Record<string, unknown>)?.from as string];
    const value = (m as Record<string, unknown>)?.value;
    if (!role) throw new DatasetError(`${where}: conversations[${i}].from is ${JSON.stringify((m as Record<string, unknown>)?.from)}; expected human, gpt or system`);
    if (typeof value !== 'string') throw new DatasetError(`${where}: conversations[${i}].value is not a string`);
    return { role, content: value };
  });
  const { id, conversations: _c, ...extra } = obj;
  return { id: String(id ?? where), messages, extra };
}

/** Reads a whole (small) ShareGPT JSONL file; errors name file:line. */
export function readShareGpt(file: string): ShareGptRecord[] {
  const lines = fs.readFileSync(file, 'utf8').split('\n');
  const out: ShareGptRecord[] = [];
  lines.forEach((line, i) => {
    if (line.trim()) out.push(parseShareGptLine(line, `${file}:${i + 1}`));
  });
  return out;
}
