// Generation throughput of regeneration on the tiny target: the target rewrites the answers of the first
// `--samples` training conversations (greedy, KV cache), once per batch size; tokens/s counts generated tokens.
// Usage: npm run bench:regenerate [-- --samples 64 --batch 1,16,32 --backend wasm]
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { type BackendName, initBackend } from '../src/backend/backend.ts';
import { regenerate } from '../src/capture/regenerate.ts';
import { loadTokenizer } from '../src/io/tokenizer.ts';
import { TfjsTarget } from '../src/target/tfjs-target.ts';
import { CORPUS_DIR, TINY_TARGET_DIR } from '../src/tiny/config.ts';

const arg = (name: string, dflt: string) =>
  process.argv.includes(`--${name}`) ? process.argv[process.argv.indexOf(`--${name}`) + 1] : dflt;
const samples = Number(arg('samples', '64'));
const batches = arg('batch', '1,16,32').split(',').map(Number);
const target = arg('target', TINY_TARGET_DIR);
const backend = await initBackend(arg('backend', 'auto') as BackendName);
const tok = loadTokenizer(target);
const model = TfjsTarget.load(target);

console.log(`target ${target}, ${samples} reasoning conversations, greedy, max_new_tokens 256, backend ${backend}`);
for (const batchSize of batches) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bench-regenerate-'));
  const res = await regenerate(model, tok, {
    targetDir: target,
    files: [path.join(CORPUS_DIR, 'reasoning-train.jsonl')],
    format: 'sharegpt',
    skipInvalid: false,
    limit: samples,
    template: 'tokenizer',
    maxLength: 192,
    batchSize,
    maxNewTokens: 256,
    temperature: 0,
    topP: 1,
    seed: 0,
    out: path.join(dir, 'out.jsonl'),
    log: () => {},
  });
  fs.rmSync(dir, { recursive: true });
  console.log(
    `batch ${String(batchSize).padStart(3)}: ${res.tokens} tokens in ${res.seconds.toFixed(1)} s = ${(res.tokens / res.seconds).toFixed(0)} tokens/s (${res.truncatedTurns} of ${res.turns} turns cut at max_new_tokens)`,
  );
}
model.dispose();
