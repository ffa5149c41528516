// Capture throughput with 1 and 2 workers on the tiny target: `specforge capture` of the same conversations
// into a fresh store per run; tokens/s = stored tokens / wall time of the whole capture (rank start-up and
// model loading included), and the ranks' own rate from the capture log (target and writing only).
// Usage: npm run bench:capture-workers [-- --samples 1024 --workers 1,2 --runs 1]
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { type BackendName, initBackend } from '../src/backend/backend.ts';
import { runCapture } from '../src/capture/run.ts';
import { loadRecipe } from '../src/recipe/recipe.ts';
import { readManifest } from '../src/store/manifest.ts';
import { CORPUS_DIR, TINY_TARGET_DIR } from '../src/tiny/config.ts';

const arg = (name: string, dflt: string) =>
  process.argv.includes(`--${name}`) ? process.argv[process.argv.indexOf(`--${name}`) + 1] : dflt;
const samples = Number(arg('samples', '1024'));
const workers = arg('workers', '1,2').split(',').map(Number);
const runs = Number(arg('runs', '1'));
const target = arg('target', TINY_TARGET_DIR);
const backend = await initBackend(arg('backend', 'auto') as BackendName);
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

console.log(`target ${target}, ${samples} reasoning conversations, batch 16, shards of 128, float16, backend ${backend}`);
for (const n of workers) {
  const wall: number[] = [];
  const inner: number[] = [];
  for (let k = 0; k < runs; k++) {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bench-capture-workers-'));
    const file = path.join(dir, 'recipe.yaml');
    fs.writeFileSync(
      file,
      `model:\n  target: ${target}\n  draft_vocab_size: 256\n` +
        `data:\n  train: ${path.join(CORPUS_DIR, 'reasoning-train.jsonl')}\n  format: sharegpt\n  template: tokenizer\n  max_length: 192\n  store: ${path.join(dir, 'store')}\n  cache_dir: ${path.join(dir, 'cache')}\n` +
        `capture:\n  batch_size: 16\n  samples_per_shard: 128\n  limit: ${samples}\nparallel:\n  workers: ${n}\nruntime:\n  backend: ${backend}\n`,
    );
    const lines: string[] = [];
    const t0 = performance.now();
    await runCapture(loadRecipe(file), (m) => lines.push(m));
    const seconds = (performance.now() - t0) / 1000;
    wall.push(readManifest(path.join(dir, 'store', 'train')).total_tokens / seconds);
    const rate = lines.join('\n').match(/\((\d+) tok\/s/);
    if (rate) inner.push(Number(rate[1]));
    fs.rmSync(dir, { recursive: true });
  }
  console.log(
    `workers ${n}: ${median(wall).toFixed(0)} tokens/s end to end, ${median(inner).toFixed(0)} tokens/s inside the capture (median of ${runs})`,
  );
}
