// A word-level Hugging Face tokenizer for the tiny corpus: every word (with its leading space), number
// and punctuation mark is one token, so a 1.5M-parameter target never has to spell. The files are
// plain tokenizer.json / tokenizer_config.json, loadable here and by the Python `tokenizers` library.

// Ids 0..5, in this order. <think> and </think> are added but not special, as in Qwen3, so decoding
// with skip_special_tokens keeps the reasoning markers.
export const ADDED_TOKENS = [
  { content: '<|endoftext|>', special: true },
  { content: '<|im_start|>', special: true },
  { content: '<|im_end|>', special: true },
  { content: '<think>', special: false },
  { content: '</think>', special: false },
  { content: '<unk>', special: true },
] as const;

export const MAX_VOCAB = 4096;

/** "\n\n" is one piece (a paragraph break between reasoning steps); words and numbers keep their leading space. */
export const PRE_TOKENIZER_REGEX = '\n\n|\n| ?[A-Za-z]+| ?[0-9]+| ?[^\\sA-Za-z0-9]| ';

export const CHAT_TEMPLATE =
  "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}" +
  "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

// What the chat template itself writes between the added tokens.
const TEMPLATE_PIECES = ['user', 'assistant', 'system', '\n'];

const escapeRegex = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
const ADDED_SPLIT = new RegExp(`(${ADDED_TOKENS.map((t) => escapeRegex(t.content)).join('|')})`);

/**
 * The pieces the tokenizer will see in `text`: added tokens are cut out first (as the tokenizer does),
 * the rest is split like the Split pre-tokenizer with behavior "Isolated" (matches and the gaps between
 * them are both pieces).
 */
export function preTokenize(text: string): string[] {
  const out: string[] = [];
  for (const section of text.split(ADDED_SPLIT)) {
    if (section === '') continue;
    if (ADDED_TOKENS.some((t) => t.content === section)) {
      out.push(section);
      continue;
    }
    let prev = 0;
    for (const m of section.matchAll(new RegExp(PRE_TOKENIZER_REGEX, 'g'))) {
      if (m.index > prev) out.push(section.slice(prev, m.index));
      out.push(m[0]);
      prev = m.index + m[0].length;
    }
    if (prev < section.length) out.push(section.slice(prev));
  }
  return out;
}

/** ShareGPT roles as the chat template names them. */
const ROLE: Record<string, string> = { human: 'user', gpt: 'assistant', system: 'system' };

/** A ShareGPT conversation as CHAT_TEMPLATE renders it (no generation prompt). */
export function chatMLText(conversations: readonly { from: string; value: string }[]): string {
  return conversations.map((t) => `<|im_start|>${ROLE[t.from] ?? t.from}\n${t.value}<|im_end|>\n`).join('');
}

function addedTokenJson(id: number, t: (typeof ADDED_TOKENS)[number]) {
  return { id, content: t.content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: t.special };
}

/** Vocabulary: added tokens, then every piece of `texts` by frequency (descending; ties by string order). */
function buildVocab(texts: readonly string[]): Record<string, number> {
  const counts = new Map<string, number>();
  const added = new Set<string>(ADDED_TOKENS.map((t) => t.content));
  const count = (piece: string) => {
    if (!added.has(piece)) counts.set(piece, (counts.get(piece) ?? 0) + 1);
  };
  for (const text of texts) for (const piece of preTokenize(text)) count(piece);
  for (const piece of TEMPLATE_PIECES) count(piece); // present even if `texts` are bare message values
  const pieces = [...counts.entries()].sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0)).map(([p]) => p);
  const total = ADDED_TOKENS.length + pieces.length;
  if (total > MAX_VOCAB) throw new Error(`vocabulary of ${total} tokens exceeds ${MAX_VOCAB}: the corpus has too many distinct words`);
  const vocab: Record<string, number> = {};
  ADDED_TOKENS.forEach((t, i) => (vocab[t.content] = i));
  pieces.forEach((p, i) => (vocab[p] = ADDED_TOKENS.length + i));
  return vocab;
}

export function buildTokenizer(texts: readonly string[]): { tokenizerJson: object; tokenizerConfig: object } {
  const tokenizerJson = {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: ADDED_TOKENS.map((t, i) => addedTokenJson(i, t)),
    normalizer: null,
    pre_tokenizer: { type: 'Split', pattern: { Regex: PRE_TOKENIZER_REGEX }, behavior: 'Isolated', invert: false },
    post_processor: null,
    // Pieces already carry their spaces and newlines: decoding is concatenation.
    decoder: { type: 'Fuse' },
    model: { type: 'WordLevel', vocab: buildVocab(texts), unk_token: '<unk>' },
  };
  // tokenizer_config.json lists the same tokens by id, keys in the order transformers writes them.
  const addedTokensDecoder = Object.fromEntries(
    ADDED_TOKENS.map((t, i) => [
      String(i),
      { content: t.content, lstrip: false, normalized: false, rstrip: false, single_word: false, special: t.special },
    ]),
  );
  const tokenizerConfig = {
    added_tokens_decoder: addedTokensDecoder,
    bos_token: null,
    chat_template: CHAT_TEMPLATE,
    clean_up_tokenization_spaces: false,
    eos_token: '<|im_end|>',
    model_max_length: 512,
    pad_token: '<|endoftext|>',
    tokenizer_class: 'PreTrainedTokenizerFast',
    unk_token: '<unk>',
  };
  return { tokenizerJson, tokenizerConfig };
}
