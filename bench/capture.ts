// Capture throughput on the tiny target, store bytes per token (vs SpecForge's offline format: aux 3H
// plus last hidden H in bf16 = 8*H bytes per token), and store read throughput.
// Usage: npm run bench:capture [-- --samples 256 --runs 3 --backend wasm --engine ort|tfjs]
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { type BackendName, initBackend } from '../src/backend/backend.ts';
import { captureSplit } from '../src/capture/capture.ts';
import { loadTokenizer } from '../src/io/tokenizer.ts';
import { contentSha256 } from '../src/store/fingerprint.ts';
import { ArrowStore } from '../src/store/reader.ts';
import { type TargetEngine, loadTarget } from '../src/target/load.ts';
import { CORPUS_DIR, TINY_TARGET_DIR } from '../src/tiny/config.ts';

const arg = (name: string, dflt: string) =>
  process.argv.includes(`--${name}`) ? process.argv[process.argv.indexOf(`--${name}`) + 1] : dflt;
const samples = Number(arg('samples', '256'));
const runs = Number(arg('runs', '3'));
const backend = await initBackend(arg('backend', 'auto') as BackendName);
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

const tok = loadTokenizer(TINY_TARGET_DIR);
const engine = arg('engine', 'ort') as TargetEngine;
const model = await loadTarget(TINY_TARGET_DIR, { engine, cacheDir: fs.mkdtempSync(path.join(os.tmpdir(), 'bench-capture-ort-')) });
const H = model.config.hiddenSize;
const captureRates: number[] = [];
let store = '';
let bytesPerToken = 0;
const files = [path.join(CORPUS_DIR, 'reasoning-train.jsonl'), path.join(CORPUS_DIR, 'chat-train.jsonl')];
for (let r = 0; r < runs; r++) {
  store = fs.mkdtempSync(path.join(os.tmpdir(), 'bench-capture-'));
  const res = await captureSplit(model, tok, {
    targetDir: TINY_TARGET_DIR,
    files,
    storeDir: path.join(store, 'train'),
    format: 'sharegpt',
    template: 'tokenizer',
    maxLength: 192,
    skipInvalid: false,
    answerExtractor: 'gsm8k',
    auxLayerIds: null,
    batchSize: 16,
    dtype: 'float16',
    samplesPerShard: 128,
    limit: samples,
    source: {
      data_sha256: contentSha256(files),
      data_files: files.map((f) => path.basename(f)),
      format: 'sharegpt',
      skip_invalid: false,
      limit: samples,
      answer_extractor: 'gsm8k',
      regenerate: null,
    },
    label: `run ${r + 1}`,
    log: () => {},
  });
  captureRates.push(res.tokens / res.seconds);
  bytesPerToken = res.bytes / res.storeTokens;
  if (r < runs - 1) fs.rmSync(store, { recursive: true });
}

// Read throughput: whole passes over the last store, shuffled batches as training reads them.
const readRates: number[] = [];
const s = await ArrowStore.open(path.join(store, 'train'));
const fileBytes = fs
  .readdirSync(path.join(store, 'train'))
  .filter((f) => f.endsWith('.arrow'))
  .reduce((a, f) => a + fs.statSync(path.join(store, 'train', f)).size, 0);
for (let r = 0; r < 5; r++) {
  const t0 = performance.now();
  for await (const batch of s.batches({ batchSize: 8, shuffle: true, seed: 1, epoch: r })) void batch;
  readRates.push(fileBytes / 2 ** 20 / ((performance.now() - t0) / 1000));
}
await s.close();
fs.rmSync(store, { recursive: true });

console.log(
  `tiny target (H=${H}), ${samples} samples per run, target engine ${engine}, backend ${backend}; medians of ${runs} capture runs and 5 read passes`,
);
console.log(`capture throughput            ${median(captureRates).toFixed(0)} tokens/s`);
console.log(
  `store size                    ${bytesPerToken.toFixed(1)} bytes/token (float16 aux 3H + final hidden H = ${8 * H} bytes of features)`,
);
console.log(`SpecForge offline format      ${8 * H} bytes/token (aux 3H + last hidden H in bf16)`);
console.log(`read throughput (shuffled)    ${median(readRates).toFixed(0)} MB/s of store files`);
model.dispose();
