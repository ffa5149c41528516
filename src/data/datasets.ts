// Streaming conversation readers for JSONL training data: ShareGPT, OpenAI chat messages and GSM8K
// question/answer records, one JSON object per line. Files are read line by line (readline over a
// read stream), so a file larger than memory is fine. Every error names file:line and what was expected.
import fs from 'node:fs';
import readline from 'node:readline';
import type { Message, Role } from './chat.ts';

export class DatasetError extends Error {}

export type DatasetFormat = 'sharegpt' | 'openai' | 'gsm8k' | 'auto';
export const DATASET_FORMATS: readonly DatasetFormat[] = ['sharegpt', 'openai', 'gsm8k', 'auto'];

export interface Conversation {
  /** The record's `id` (string or number) or, without one, its source. */
  id: string;
  messages: Message[];
  /** The record's other fields (everything but its id and the fields turned into messages). */
  extra: Record<string, unknown>;
  /** `file:line` (1-based). */
  source: string;
}

export interface ReadStats {
  /** Conversations yielded so far. */
  read: number;
  /** Invalid lines skipped so far (only with skipInvalid). */
  skipped: number;
  /** The messages of the first MAX_REPORTED_ERRORS skipped lines. */
  firstErrors: string[];
}

export interface ReadOptions {
  /** Default 'auto': the format is decided per line from its keys. */
  format?: DatasetFormat;
  /** Skip (and count) bad lines instead of throwing. */
  skipInvalid?: boolean;
  /** Stop after this many conversations. */
  limit?: number;
}

export const MAX_REPORTED_ERRORS = 10;

/** ShareGPT `from` values. */
const SHAREGPT_FROM: Record<string, Role> = { human: 'user', user: 'user', gpt: 'assistant', assistant: 'assistant', system: 'system' };
/** OpenAI `role` values. */
const OPENAI_ROLES: Record<string, Role> = { system: 'system', user: 'user', assistant: 'assistant' };

type Obj = Record<string, unknown>;

const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);
const show = (v: unknown): string => (v === undefined ? 'missing' : JSON.stringify(v));

function recordId(obj: Obj, where: string): string {
  return typeof obj.id === 'string' || typeof obj.id === 'number' ? String(obj.id) : where;
}

function withoutKeys(obj: Obj, keys: string[]): Obj {
  const out: Obj = {};
  for (const [k, v] of Object.entries(obj)) if (!keys.includes(k)) out[k] = v;
  return out;
}

function checkConversation(messages: Message[], where: string, field: string): Message[] {
  if (messages.length === 0)
    throw new DatasetError(`${where}: "${field}" is an empty conversation; expected at least one user and one assistant message`);
  if (!messages.some((m) => m.role === 'assistant')) {
    throw new DatasetError(`${where}: "${field}" has no assistant message; expected at least one (nothing to train on)`);
  }
  return messages;
}

function parseShareGpt(obj: Obj, where: string): Conversation {
  const conv = obj.conversations;
  if (!Array.isArray(conv))
    throw new DatasetError(`${where}: "conversations" is ${show(conv)}; expected a list of {from, value} (sharegpt)`);
  const messages = conv.map((m, i): Message => {
    if (!isObj(m)) throw new DatasetError(`${where}: conversations[${i}] is ${show(m)}; expected an object {from, value}`);
    const role = typeof m.from === 'string' ? SHAREGPT_FROM[m.from] : undefined;
    if (!role)
      throw new DatasetError(`${where}: conversations[${i}].from is ${show(m.from)}; expected human, gpt or system (or user, assistant)`);
    if (typeof m.value !== 'string') throw new DatasetError(`${where}: conversations[${i}].value is ${show(m.value)}; expected a string`);
    return { role, content: m.value };
  });
  checkConversation(messages, where, 'conversations');
  return { id: recordId(obj, where), messages, extra: withoutKeys(obj, ['id', 'conversations']), source: where };
}

/** OpenAI content: a string, or a list of {type: 'text', text} parts (joined). */
function openAiContent(c: unknown, at: string, where: string): string {
  if (typeof c === 'string') return c;
  if (Array.isArray(c)) {
    return c
      .map((p, j) => {
        if (isObj(p) && p.type === 'text' && typeof p.text === 'string') return p.text;
        throw new DatasetError(`${where}: ${at}.content[${j}] is ${show(p)}; expected a {type: "text", text} part`);
      })
      .join('');
  }
  throw new DatasetError(`${where}: ${at}.content is ${show(c)}; expected a string`);
}

function parseOpenAi(obj: Obj, where: string): Conversation {
  const field = Array.isArray(obj.messages) || !('conversations' in obj) ? 'messages' : 'conversations';
  const list = obj[field];
  if (!Array.isArray(list)) throw new DatasetError(`${where}: "${field}" is ${show(list)}; expected a list of {role, content} (openai)`);
  const messages = list.map((m, i): Message => {
    const at = `${field}[${i}]`;
    if (!isObj(m)) throw new DatasetError(`${where}: ${at} is ${show(m)}; expected an object {role, content}`);
    const role = typeof m.role === 'string' ? OPENAI_ROLES[m.role] : undefined;
    if (!role) throw new DatasetError(`${where}: ${at}.role is ${show(m.role)}; expected system, user or assistant`);
    return { role, content: openAiContent(m.content, at, where) };
  });
  checkConversation(messages, where, field);
  return { id: recordId(obj, where), messages, extra: withoutKeys(obj, ['id', field]), source: where };
}

function parseGsm8k(obj: Obj, where: string): Conversation {
  for (const k of ['question', 'answer']) {
    if (typeof obj[k] !== 'string')
      throw new DatasetError(`${where}: "${k}" is ${show(obj[k])}; expected a string (gsm8k: question, answer)`);
  }
  const messages: Message[] = [
    { role: 'user', content: obj.question as string },
    { role: 'assistant', content: obj.answer as string },
  ];
  return { id: recordId(obj, where), messages, extra: withoutKeys(obj, ['id', 'question', 'answer']), source: where };
}

/** The format of one record, from its keys. */
export function detectFormat(obj: Obj, where: string): Exclude<DatasetFormat, 'auto'> {
  if (Array.isArray(obj.messages)) return 'openai';
  if (Array.isArray(obj.conversations)) {
    const first = obj.conversations[0];
    if (first === undefined)
      throw new DatasetError(`${where}: "conversations" is an empty conversation; expected at least one user and one assistant message`);
    if (isObj(first) && 'from' in first) return 'sharegpt';
    if (isObj(first) && 'role' in first) return 'openai';
    throw new DatasetError(`${where}: conversations[0] is ${show(first)}; expected {from, value} (sharegpt) or {role, content} (openai)`);
  }
  if ('question' in obj && 'answer' in obj) return 'gsm8k';
  throw new DatasetError(
    `${where}: cannot tell the format from the keys ${show(Object.keys(obj))}; expected "conversations" (sharegpt), "messages" (openai) or "question" and "answer" (gsm8k)`,
  );
}

/** One JSONL line -> a conversation; `where` is its file:line. Throws DatasetError. */
export function parseConversationLine(line: string, format: DatasetFormat, where: string): Conversation {
  let obj: unknown;
  try {
    obj = JSON.parse(line);
  } catch (e) {
    throw new DatasetError(`${where}: not valid JSON (${(e as Error).message})`);
  }
  if (!isObj(obj)) throw new DatasetError(`${where}: expected a JSON object, got ${Array.isArray(obj) ? 'a list' : typeof obj}`);
  const f = format === 'auto' ? detectFormat(obj, where) : format;
  switch (f) {
    case 'sharegpt':
      return parseShareGpt(obj, where);
    case 'openai':
      return parseOpenAi(obj, where);
    case 'gsm8k':
      return parseGsm8k(obj, where);
    default:
      throw new DatasetError(`unknown dataset format ${show(f)}; expected one of ${DATASET_FORMATS.join(', ')}`);
  }
}

/**
 * The non-blank lines of a JSONL file, streamed (a BOM on line 1 dropped), each with its `file:line`.
 * Stopping early closes the file.
 */
export async function* jsonlLines(file: string): AsyncGenerator<{ line: string; where: string }> {
  const stream = fs.createReadStream(file, { encoding: 'utf8' });
  const lines = readline.createInterface({ input: stream, crlfDelay: Infinity });
  let lineNo = 0;
  try {
    for await (const raw of lines) {
      lineNo++;
      const line = lineNo === 1 ? raw.replace(/^\uFEFF/, '') : raw;
      if (line.trim()) yield { line, where: `${file}:${lineNo}` };
    }
  } finally {
    lines.close();
    stream.destroy();
  }
}

/**
 * Streams the conversations of a JSONL file. Blank lines are ignored. A bad line throws DatasetError
 * (file:line and what was expected) from the generator, or with skipInvalid is skipped and counted.
 * `stats` fills in as the generator is consumed; stopping early (break, limit) closes the file.
 */
export function readConversations(file: string, opts: ReadOptions = {}): { conversations: AsyncGenerator<Conversation>; stats: ReadStats } {
  const format = opts.format ?? 'auto';
  if (!DATASET_FORMATS.includes(format))
    throw new DatasetError(`unknown dataset format ${show(format)}; expected one of ${DATASET_FORMATS.join(', ')}`);
  const limit = opts.limit;
  if (limit !== undefined && !(Number.isInteger(limit) && limit >= 0))
    throw new DatasetError(`limit is ${limit}; expected a non-negative integer`);
  const stats: ReadStats = { read: 0, skipped: 0, firstErrors: [] };

  async function* conversations(): AsyncGenerator<Conversation> {
    try {
      await fs.promises.access(file, fs.constants.R_OK);
    } catch (e) {
      throw new DatasetError(`${file}: cannot read (${(e as Error).message})`);
    }
    if (limit === 0) return;
    for await (const { line, where } of jsonlLines(file)) {
      let conv: Conversation;
      try {
        conv = parseConversationLine(line, format, where);
      } catch (e) {
        if (!opts.skipInvalid || !(e instanceof DatasetError)) throw e;
        stats.skipped++;
        if (stats.firstErrors.length < MAX_REPORTED_ERRORS) stats.firstErrors.push(e.message);
        continue;
      }
      stats.read++;
      yield conv;
      if (limit !== undefined && stats.read >= limit) return;
    }
  }

  return { conversations: conversations(), stats };
}

/** Reads a whole (small) file into memory: for held-out splits and the tiny corpus. */
export async function readAllConversations(file: string, opts: ReadOptions = {}): Promise<Conversation[]> {
  const out: Conversation[] = [];
  for await (const c of readConversations(file, opts).conversations) out.push(c);
  return out;
}

/** Non-empty lines over dataset files (a progress bar's total); a missing file counts 0, as reading reports it. */
export async function countDataLines(files: string[]): Promise<number> {
  let n = 0;
  for (const f of files) {
    const text = await fs.promises.readFile(f, 'utf8').catch(() => '');
    for (const line of text.split('\n')) if (line.trim()) n++;
  }
  return n;
}
