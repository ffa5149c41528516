// Hugging Face tokenizer folders: tokenizer.json (the model) and tokenizer_config.json (special tokens
// and the chat template, kept as a string for the chat-template renderer).
import fs from 'node:fs';
import path from 'node:path';
import { Tokenizer as HfTokenizerImpl } from '@huggingface/tokenizers';

export class TokenizerError extends Error {}

type Json = Record<string, unknown>;

/** tokenizer_config.json writes special tokens either as a string or as {content: string, ...}. */
function tokenText(v: unknown): string | null {
  if (typeof v === 'string') return v;
  if (v && typeof v === 'object' && typeof (v as Json).content === 'string') return (v as Json).content as string;
  return null;
}

export class Tokenizer {
  readonly dir: string;
  readonly chatTemplate: string | null;
  readonly bosToken: string | null;
  readonly eosToken: string | null;
  readonly padToken: string | null;
  readonly unkToken: string | null;
  /** Ids of tokens marked special in tokenizer.json's added_tokens. */
  readonly specialIds: Set<number>;
  readonly vocabSize: number;
  private readonly impl: HfTokenizerImpl;

  constructor(dir: string, tokenizerJson: Json, config: Json) {
    this.dir = dir;
    try {
      this.impl = new HfTokenizerImpl(tokenizerJson, config);
    } catch (e) {
      throw new TokenizerError(`${path.join(dir, 'tokenizer.json')}: cannot build the tokenizer (${(e as Error).message})`);
    }
    const template = config.chat_template;
    // Some tokenizers ship several named templates: [{name, template}]; "default" is the chat one.
    if (Array.isArray(template)) {
      const named = template as { name: string; template: string }[];
      this.chatTemplate = (named.find((t) => t.name === 'default') ?? named[0])?.template ?? null;
    } else {
      this.chatTemplate = typeof template === 'string' ? template : null;
    }
    this.bosToken = tokenText(config.bos_token);
    this.eosToken = tokenText(config.eos_token);
    this.padToken = tokenText(config.pad_token);
    this.unkToken = tokenText(config.unk_token);
    const added = (tokenizerJson.added_tokens as { id: number; special?: boolean }[] | undefined) ?? [];
    this.specialIds = new Set(added.filter((t) => t.special).map((t) => t.id));
    this.vocabSize = this.impl.get_vocab(true).size;
  }

  /** Token ids of `text`. Special tokens written in the text are recognised; none are added unless asked. */
  encode(text: string, opts: { addSpecialTokens?: boolean } = {}): number[] {
    return this.impl.encode(text, { add_special_tokens: opts.addSpecialTokens ?? false }).ids;
  }

  decode(ids: number[], opts: { skipSpecialTokens?: boolean } = {}): string {
    return this.impl.decode(ids, { skip_special_tokens: opts.skipSpecialTokens ?? false, clean_up_tokenization_spaces: false });
  }

  tokenToId(token: string): number | undefined {
    return this.impl.token_to_id(token);
  }

  idToToken(id: number): string | undefined {
    return this.impl.id_to_token(id);
  }

  /** Id of a token that must exist (a special token named in the config, say). */
  requireId(token: string): number {
    const id = this.tokenToId(token);
    if (id === undefined) throw new TokenizerError(`${this.dir}: token ${JSON.stringify(token)} is not in the vocabulary`);
    return id;
  }
}

function readJson(file: string, required: boolean): Json {
  if (!fs.existsSync(file)) {
    if (required) throw new TokenizerError(`${file}: missing (a Hugging Face tokenizer folder needs tokenizer.json)`);
    return {};
  }
  try {
    return JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (e) {
    throw new TokenizerError(`${file}: not valid JSON (${(e as Error).message})`);
  }
}

export function loadTokenizer(dir: string): Tokenizer {
  const tokenizerJson = readJson(path.join(dir, 'tokenizer.json'), true);
  const config = readJson(path.join(dir, 'tokenizer_config.json'), false);
  return new Tokenizer(dir, tokenizerJson, config);
}
