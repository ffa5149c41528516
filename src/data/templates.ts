// Chat templates: conversations -> token ids and the loss mask.
//
// The mask is 1 on what the assistant writes (its content and its end-of-turn token: <|eot_id|>,
// <|im_end|>) and 0 on everything else (BOS, role headers, system and user turns, separators, the
// generation prompt). The rendered text is cut into runs of equal mask and each run is encoded on its
// own, so no token straddles a mask boundary; inside a run the text is tokenized as a whole, as an
// inference server tokenizes the rendered prompt.
//
// Built-in templates are plain TypeScript matching the official Jinja templates:
//   llama3          Meta Llama-3 Instruct: <|begin_of_text|> once, then per message
//                   <|start_header_id|>{role}<|end_header_id|>\n\n{content trimmed}<|eot_id|>;
//                   generation prompt <|start_header_id|>assistant<|end_header_id|>\n\n.
//   chatml          Qwen2.5: <|im_start|>{role}\n{content}<|im_end|>\n; generation prompt
//                   <|im_start|>assistant\n. Qwen2.5's default system message ("You are Qwen, created by
//                   Alibaba Cloud. You are a helpful assistant.", QWEN25_DEFAULT_SYSTEM) is added only
//                   when asked for with `defaultSystem`.
//   qwen3-thinking  Qwen3 (thinking) in the ChatML layout. Assistant content is trained on as written,
//                   <think>...</think> included, in every turn. Qwen3's own template strips the
//                   thinking from assistant turns before the last user message (and adds an empty
//                   <think>\n\n</think>\n\n to a final turn that has none); like SpecForge, we do
//                   neither: the draft learns the full text the target produced in each turn. (Use the
//                   'tokenizer' template to train on exactly what Qwen3's Jinja template renders.)
//   tokenizer       The tokenizer's own chat_template (Jinja, rendered with @huggingface/jinja). The mask
//                   boundaries come from rendering prefixes of the conversation: the text of
//                   render(messages[:i], add_generation_prompt) must be a prefix of the whole rendering,
//                   and assistant turn i then runs from there to the end of its first end-of-turn token
//                   (found by probing the template, see endOfTurnIds).
import { Template } from '@huggingface/jinja';
import type { Tokenizer } from '../io/tokenizer.ts';
import type { Message, Tokenized } from './chat.ts';

export type TemplateName = 'llama3' | 'chatml' | 'qwen3-thinking' | 'tokenizer';
export const TEMPLATE_NAMES: readonly TemplateName[] = ['llama3', 'chatml', 'qwen3-thinking', 'tokenizer'];

/** Qwen2.5's default system message (its template adds it when the conversation has none). */
export const QWEN25_DEFAULT_SYSTEM = 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.';

export class TemplateError extends Error {}

export interface TokenizeOptions {
  template: TemplateName;
  /** Cut ids and mask to at most this many tokens. */
  maxLength?: number;
  /** Append the assistant header (for prompts to generate from). */
  addGenerationPrompt?: boolean;
  /** A system message to put first when the conversation has none (e.g. QWEN25_DEFAULT_SYSTEM). */
  defaultSystem?: string;
}

/** A piece of rendered text and its loss mask. */
export interface Segment {
  text: string;
  mask: 0 | 1;
}

/** The special tokens each built-in template writes (checked against the vocabulary). */
const BUILTIN_SPECIALS: Record<Exclude<TemplateName, 'tokenizer'>, { eot: string; specials: string[] }> = {
  llama3: { eot: '<|eot_id|>', specials: ['<|begin_of_text|>', '<|start_header_id|>', '<|end_header_id|>', '<|eot_id|>'] },
  chatml: { eot: '<|im_end|>', specials: ['<|im_start|>', '<|im_end|>'] },
  'qwen3-thinking': { eot: '<|im_end|>', specials: ['<|im_start|>', '<|im_end|>'] },
};

function checkTemplateName(template: unknown): asserts template is TemplateName {
  if (!TEMPLATE_NAMES.includes(template as TemplateName)) {
    throw new TemplateError(`unknown chat template ${JSON.stringify(template)}; expected one of ${TEMPLATE_NAMES.join(', ')}`);
  }
}

function requireSpecials(tok: Tokenizer, template: TemplateName, tokens: string[]): void {
  for (const t of tokens) {
    if (tok.tokenToId(t) === undefined) {
      throw new TemplateError(
        `${tok.dir}: the ${template} chat template needs the token ${t}, which this tokenizer lacks; is it the right template?`,
      );
    }
  }
}

// ---------------------------------------------------------------------------------------------------
// Built-in renderers

function llama3Segments(messages: Message[], addGenerationPrompt: boolean): Segment[] {
  const out: Segment[] = [{ text: '<|begin_of_text|>', mask: 0 }];
  for (const m of messages) {
    const learn = m.role === 'assistant' ? 1 : 0;
    out.push({ text: `<|start_header_id|>${m.role}<|end_header_id|>\n\n`, mask: 0 });
    out.push({ text: m.content.trim(), mask: learn });
    out.push({ text: '<|eot_id|>', mask: learn });
  }
  if (addGenerationPrompt) out.push({ text: '<|start_header_id|>assistant<|end_header_id|>\n\n', mask: 0 });
  return out;
}

/** ChatML, shared by chatml and qwen3-thinking (which differ only in what they document). */
function chatmlSegments(messages: Message[], addGenerationPrompt: boolean): Segment[] {
  const out: Segment[] = [];
  for (const m of messages) {
    const learn = m.role === 'assistant' ? 1 : 0;
    out.push({ text: `<|im_start|>${m.role}\n`, mask: 0 });
    out.push({ text: m.content, mask: learn });
    out.push({ text: '<|im_end|>', mask: learn });
    out.push({ text: '\n', mask: 0 });
  }
  if (addGenerationPrompt) out.push({ text: '<|im_start|>assistant\n', mask: 0 });
  return out;
}

// ---------------------------------------------------------------------------------------------------
// The tokenizer's own Jinja template

const compiled = new WeakMap<Tokenizer, Template>();

function jinjaTemplate(tok: Tokenizer): Template {
  let t = compiled.get(tok);
  if (t) return t;
  if (tok.chatTemplate === null) {
    throw new TemplateError(
      `${tok.dir}: the 'tokenizer' chat template needs a chat_template in tokenizer_config.json, and this tokenizer has none; pick a built-in template (${TEMPLATE_NAMES.filter((n) => n !== 'tokenizer').join(', ')})`,
    );
  }
  try {
    t = new Template(tok.chatTemplate);
  } catch (e) {
    throw new TemplateError(`${tok.dir}: cannot parse the chat_template (${(e as Error).message})`);
  }
  compiled.set(tok, t);
  return t;
}

// @huggingface/jinja provides raise_exception and strftime_now itself (redefining them is an error).
function renderJinja(tok: Tokenizer, messages: Message[], addGenerationPrompt: boolean): string {
  const template = jinjaTemplate(tok);
  try {
    return template.render({
      messages: messages.map((m) => ({ role: m.role, content: m.content })),
      add_generation_prompt: addGenerationPrompt,
      bos_token: tok.bosToken ?? '',
      eos_token: tok.eosToken ?? '',
      pad_token: tok.padToken ?? '',
      unk_token: tok.unkToken ?? '',
    });
  } catch (e) {
    throw new TemplateError(`${tok.dir}: rendering the chat_template of ${messages.length} message(s) failed (${(e as Error).message})`);
  }
}

const eotCache = new WeakMap<Tokenizer, string[]>();

/**
 * The end-of-turn token(s) of the tokenizer's template, found by rendering a probe exchange: the
 * first special token after the assistant's text (or, when none is special, the EOS token if it is
 * there). Empty when the template writes none.
 */
function templateEndOfTurn(tok: Tokenizer): string[] {
  const cached = eotCache.get(tok);
  if (cached) return cached;
  const probe = 'SpecForge probe reply 7391';
  const user: Message = { role: 'user', content: 'SpecForge probe question' };
  const text = renderJinja(tok, [user, { role: 'assistant', content: probe }], false);
  const at = text.indexOf(probe);
  let found: string[] = [];
  if (at >= 0) {
    const rest = text.slice(at + probe.length);
    const special = tok.encode(rest).find((id) => tok.specialIds.has(id));
    if (special !== undefined) found = [tok.idToToken(special)!];
    else if (tok.eosToken && rest.includes(tok.eosToken)) found = [tok.eosToken];
  }
  eotCache.set(tok, found);
  return found;
}

function tokenizerSegments(tok: Tokenizer, messages: Message[], addGenerationPrompt: boolean): Segment[] {
  const full = renderJinja(tok, messages, addGenerationPrompt);
  const eots = templateEndOfTurn(tok);
  const out: Segment[] = [];
  let pos = 0;
  for (let i = 0; i < messages.length; i++) {
    if (messages[i].role !== 'assistant') continue;
    // Everything up to and including the assistant header of turn i.
    const prompt = renderJinja(tok, messages.slice(0, i), true);
    if (!full.startsWith(prompt) || prompt.length < pos) {
      throw new TemplateError(
        `${tok.dir}: the chat_template does not render messages[0..${i}) plus the generation prompt as a prefix of the whole conversation, so assistant turn ${i} cannot be located; use a built-in template`,
      );
    }
    let end = -1;
    for (const e of eots) {
      const k = full.indexOf(e, prompt.length);
      if (k >= 0 && (end < 0 || k + e.length < end)) end = k + e.length;
    }
    if (end < 0) {
      // No end-of-turn token: the turn ends where the rendering of messages[0..i] stops agreeing with the whole.
      const upTo = renderJinja(tok, messages.slice(0, i + 1), false);
      end = prompt.length;
      while (end < full.length && end < upTo.length && full[end] === upTo[end]) end++;
    }
    out.push({ text: full.slice(pos, prompt.length), mask: 0 });
    out.push({ text: full.slice(prompt.length, end), mask: 1 });
    pos = end;
  }
  out.push({ text: full.slice(pos), mask: 0 });
  const joined = out.map((s) => s.text).join('');
  if (joined !== full) throw new TemplateError(`${tok.dir}: internal error: the template pieces do not add up to the rendering`);
  return out;
}

// ---------------------------------------------------------------------------------------------------

/** The rendered text cut into pieces with their mask (adjacent pieces may share a mask). */
export function renderSegments(messages: Message[], tok: Tokenizer, opts: Omit<TokenizeOptions, 'maxLength'>): Segment[] {
  checkTemplateName(opts.template);
  let msgs = messages;
  if (opts.defaultSystem !== undefined && !msgs.some((m) => m.role === 'system'))
    msgs = [{ role: 'system', content: opts.defaultSystem }, ...msgs];
  const gen = opts.addGenerationPrompt ?? false;
  if (opts.template === 'tokenizer') return tokenizerSegments(tok, msgs, gen);
  requireSpecials(tok, opts.template, BUILTIN_SPECIALS[opts.template].specials);
  return opts.template === 'llama3' ? llama3Segments(msgs, gen) : chatmlSegments(msgs, gen);
}

/** The whole rendered text (for inspection and for serving the same prompt format). */
export function renderConversation(messages: Message[], tok: Tokenizer, opts: Omit<TokenizeOptions, 'maxLength'>): string {
  return renderSegments(messages, tok, opts)
    .map((s) => s.text)
    .join('');
}

/** Token ids and loss mask of a conversation under a chat template; see the file comment. */
export function tokenizeConversation(messages: Message[], tok: Tokenizer, opts: TokenizeOptions): Tokenized & { truncated: boolean } {
  const { maxLength } = opts;
  if (maxLength !== undefined && !(Number.isInteger(maxLength) && maxLength > 0)) {
    throw new TemplateError(`maxLength is ${maxLength}; expected a positive integer`);
  }
  const segments = renderSegments(messages, tok, opts);
  const ids: number[] = [];
  const lossMask: number[] = [];
  // Encode each maximal run of equal mask as one piece.
  for (let i = 0; i < segments.length; ) {
    const mask = segments[i].mask;
    let text = '';
    for (; i < segments.length && segments[i].mask === mask; i++) text += segments[i].text;
    if (!text) continue;
    for (const id of tok.encode(text)) {
      ids.push(id);
      lossMask.push(mask);
    }
  }
  if (maxLength !== undefined && ids.length > maxLength) {
    return { ids: ids.slice(0, maxLength), lossMask: lossMask.slice(0, maxLength), truncated: true };
  }
  return { ids, lossMask, truncated: false };
}

/** Ids of the template's end-of-turn token(s) (<|eot_id|> for llama3, <|im_end|> for ChatML). */
export function endOfTurnIds(tok: Tokenizer, template: TemplateName): number[] {
  checkTemplateName(template);
  const tokens = template === 'tokenizer' ? templateEndOfTurn(tok) : [BUILTIN_SPECIALS[template].eot];
  if (template !== 'tokenizer') requireSpecials(tok, template, tokens);
  return tokens.map((t) => tok.requireId(t));
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
