// Writes the tiny target's corpus and tokenizer:
//   npx tsx src/tiny/make-data.ts [--seed 1234] [--out data]
//   -> {out}/corpus/{chat,reasoning}-{train,eval}.jsonl, {out}/tiny-target/tokenizer{,_config}.json
// Same seed, same bytes. Each file is written atomically (io/atomic.ts), so a crash never leaves half a file.
import path from 'node:path';
import { generateCorpus, toJsonl, type ChatRecord } from './corpus.ts';
import { buildTokenizer, chatMLText } from './tokenizer-builder.ts';
import { writeAtomic } from '../io/atomic.ts';

export const DEFAULTS = {
  seed: 1234,
  out: 'data',
  // Reasoning-heavy: the arithmetic needs the exposures; the chat facts are learned from fewer.
  chatTrain: 5000,
  chatEval: 400,
  reasoningTrain: 14000,
  reasoningEval: 400,
};

const SIZE_BUDGET = 9e6; // bytes, for data/corpus: keeps the committed corpus small (a warning, not a limit)

function parseArgs(argv: string[]): typeof DEFAULTS {
  const opts = { ...DEFAULTS };
  const flags: Record<string, keyof typeof DEFAULTS> = {
    '--seed': 'seed',
    '--out': 'out',
    '--chat-train': 'chatTrain',
    '--chat-eval': 'chatEval',
    '--reasoning-train': 'reasoningTrain',
    '--reasoning-eval': 'reasoningEval',
  };
  for (let i = 0; i < argv.length; i++) {
    // --flag value or --flag=value
    const eq = argv[i].indexOf('=');
    const flag = eq < 0 ? argv[i] : argv[i].slice(0, eq);
    const value = eq < 0 ? argv[++i] : argv[i].slice(eq + 1);
    const key = flags[flag];
    if (!key) throw new Error(`unknown argument ${flag} (known: ${Object.keys(flags).join(', ')})`);
    if (value === undefined) throw new Error(`${flag}: missing value`);
    if (key === 'out') opts.out = value;
    else {
      const n = Number(value);
      if (!Number.isInteger(n) || n < 0) throw new Error(`${flag}: expected a non-negative integer, got ${JSON.stringify(value)}`);
      opts[key] = n;
    }
  }
  return opts;
}

function writeText(file: string, text: string): number {
  writeAtomic(file, [text]);
  return Buffer.byteLength(text);
}

const json = (v: object) => JSON.stringify(v, null, 2) + '\n';
const mb = (bytes: number) => `${(bytes / 1e6).toFixed(2)} MB`;

function main(): void {
  const opts = parseArgs(process.argv.slice(2));
  const corpus = generateCorpus(opts);
  const splits: [string, ChatRecord[]][] = [
    ['chat-train', corpus.chatTrain],
    ['chat-eval', corpus.chatEval],
    ['reasoning-train', corpus.reasoningTrain],
    ['reasoning-eval', corpus.reasoningEval],
  ];
  let corpusBytes = 0;
  for (const [name, records] of splits) {
    const file = path.join(opts.out, 'corpus', `${name}.jsonl`);
    const bytes = writeText(file, toJsonl(records));
    corpusBytes += bytes;
    console.log(`${file}: ${records.length} records, ${mb(bytes)}`);
  }
  // The vocabulary is counted over conversations as the chat template renders them, so its order
  // reflects what the model is trained on.
  const texts = splits.flatMap(([, records]) => records.map((r) => chatMLText(r.conversations)));
  const { tokenizerJson, tokenizerConfig } = buildTokenizer(texts);
  const dir = path.join(opts.out, 'tiny-target');
  for (const [name, obj] of [
    ['tokenizer.json', tokenizerJson],
    ['tokenizer_config.json', tokenizerConfig],
  ] as const) {
    const file = path.join(dir, name);
    console.log(`${file}: ${mb(writeText(file, json(obj)))}`);
  }
  const vocab = Object.keys((tokenizerJson as { model: { vocab: object } }).model.vocab).length;
  console.log(`vocabulary: ${vocab} tokens; corpus: ${mb(corpusBytes)}`);
  if (corpusBytes > SIZE_BUDGET) console.warn(`warning: the corpus is over its ${mb(SIZE_BUDGET)} budget`);
}

main();
