// ONNX Runtime target figures at a real model shape with random weights: capture-graph prefill tokens/s at
// T=2048, batch 1 (aux layers, no logits), and decode-step latency with logits and the aux layers for 1 and
// 8 new tokens over a 512-token cache; medians of 3 after a warm-up. Wall time and process CPU time are both
// printed (CPU time: all threads, so on a busy shared machine tokens per CPU-second x cores is the ceiling).
// Default shape: Qwen3-0.6B (its published config, below); --config FILE takes another config.json.
// Usage: npm run bench:ort-target -- [--layers N (a slice of the first N layers)] [--config FILE] [--threads N]
//        [--seq 2048] [--cache 512] [--runs 3] [--spin (ORT threads spin between ops)] [--no-prepack]
//        [--dir DIR (keep/reuse the model and converted weights there)]
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { initBackend } from '../src/backend/backend.ts';
import { defaultAuxLayers, parseModelConfig } from '../src/io/hf-config.ts';
import { f32ToBf16 } from '../src/io/dtypes.ts';
import { requiredWeights } from '../src/target/onnx-decoder.ts';
import { OrtTarget } from '../src/target/ort-target.ts';
import type { TargetOutput } from '../src/target/runtime.ts';

/** Qwen/Qwen3-0.6B config.json (structural fields). */
const QWEN3_0_6B = {
  architectures: ['Qwen3ForCausalLM'],
  attention_bias: false,
  bos_token_id: 151643,
  eos_token_id: 151645,
  head_dim: 128,
  hidden_act: 'silu',
  hidden_size: 1024,
  intermediate_size: 3072,
  max_position_embeddings: 40960,
  model_type: 'qwen3',
  num_attention_heads: 16,
  num_hidden_layers: 28,
  num_key_value_heads: 8,
  rms_norm_eps: 1e-6,
  rope_scaling: null,
  rope_theta: 1000000,
  tie_word_embeddings: true,
  torch_dtype: 'bfloat16',
  vocab_size: 151936,
};

const arg = (name: string, dflt?: string) =>
  process.argv.includes(`--${name}`) ? process.argv[process.argv.indexOf(`--${name}`) + 1] : dflt;
const raw: Record<string, unknown> = arg('config') ? JSON.parse(fs.readFileSync(arg('config')!, 'utf8')) : { ...QWEN3_0_6B };
if (arg('layers')) raw.num_hidden_layers = Number(arg('layers'));
const T = Number(arg('seq', '2048'));
const P = Number(arg('cache', '512'));
const runs = Number(arg('runs', '3'));
const threads = Number(arg('threads', '0'));
const spin = process.argv.includes('--spin');
const prepack = !process.argv.includes('--no-prepack');
const keep = arg('dir');
const work = keep ?? fs.mkdtempSync(path.join(os.tmpdir(), 'bench-ort-target-'));
const modelDir = path.join(work, 'model');
const config = parseModelConfig(raw);

/**
 * A bf16 model.safetensors of uniform random weights (std 1/sqrt(fan-in); norms near 1), written tensor by
 * tensor so that a large model never sits in memory.
 */
function writeRandomModel(dir: string): void {
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(raw, null, 1));
  const shapes = requiredWeights(config, false);
  const header: Record<string, unknown> = {};
  let offset = 0;
  for (const [name, shape] of shapes) {
    const bytes = shape.reduce((a, b) => a * b, 1) * 2;
    header[name] = { dtype: 'BF16', shape, data_offsets: [offset, offset + bytes] };
    offset += bytes;
  }
  let json = Buffer.from(JSON.stringify(header));
  json = Buffer.concat([json, Buffer.alloc((8 - (json.length % 8)) % 8, 0x20)]);
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(json.length));
  const file = path.join(dir, 'model.safetensors');
  const fd = fs.openSync(`${file}.tmp`, 'w');
  fs.writeSync(fd, len);
  fs.writeSync(fd, json);
  let x = 0x9e3779b9;
  for (const [, shape] of shapes) {
    const n = shape.reduce((a, b) => a * b, 1);
    const half = (shape.length === 1 ? 0.1 : 1 / Math.sqrt(shape[1])) * Math.sqrt(3); // uniform [-a, a] has std a/sqrt(3)
    const mean = shape.length === 1 ? 1 : 0;
    const out = new Uint16Array(n);
    for (let i = 0; i < n; i++) {
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      out[i] = f32ToBf16(mean + ((x >>> 0) / 2 ** 32 - 0.5) * 2 * half);
    }
    fs.writeSync(fd, Buffer.from(out.buffer));
  }
  fs.closeSync(fd);
  fs.renameSync(`${file}.tmp`, file);
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const cpuMs = (since: NodeJS.CpuUsage) => {
  const u = process.cpuUsage(since);
  return (u.user + u.system) / 1000;
};
function time(fn: () => TargetOutput): { wall: number; cpu: number } {
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  const out = fn();
  const wall = performance.now() - t0;
  const cpu = cpuMs(c0);
  for (const t of [out.finalNormed, out.logits, ...out.layers.values()]) t?.dispose();
  return { wall, cpu };
}

await initBackend('cpu');
const sameConfig =
  fs.existsSync(path.join(modelDir, 'config.json')) &&
  fs.readFileSync(path.join(modelDir, 'config.json'), 'utf8') === JSON.stringify(raw, null, 1);
if (!sameConfig || !fs.existsSync(path.join(modelDir, 'model.safetensors'))) {
  const t0 = performance.now();
  writeRandomModel(modelDir);
  console.log(`random bf16 model written in ${((performance.now() - t0) / 1000).toFixed(1)} s: ${modelDir}`);
}
let t0 = performance.now();
const target = await OrtTarget.load(modelDir, { cacheDir: path.join(work, 'cache'), threads, spin, prepack, log: console.log });
console.log(
  `load ${((performance.now() - t0) / 1000).toFixed(1)} s (weights ${target.weights.built ? 'converted' : 'reused'}); ${config.architecture} ${config.numLayers} layers, hidden ${config.hiddenSize}, ${target.threads} ORT threads${spin ? ' (spinning)' : ''}${prepack ? '' : ', weights not prepacked'}, ${os.loadavg()[0].toFixed(1)} load average`,
);

const aux = config.numLayers >= 8 ? defaultAuxLayers(config.numLayers) : [0, Math.floor(config.numLayers / 2), config.numLayers - 1];
let seed = 1;
const tokens = (n: number) => Array.from({ length: n }, () => (seed = (seed * 48271) % 2147483647) % config.vocabSize);

const gib = (bytes: number) => `${(bytes / 2 ** 30).toFixed(2)} GiB`;
// The first call creates the session (graph optimisation, weight packing): timed on 8 tokens.
t0 = performance.now();
time(() => target.forward({ ids: [tokens(8)] }, { layers: aux, logits: false }));
console.log(
  `capture session created (first 8-token forward) in ${((performance.now() - t0) / 1000).toFixed(1)} s; peak RSS ${gib(process.resourceUsage().maxRSS * 1024)}`,
);
time(() => target.forward({ ids: [tokens(T)] }, { layers: aux, logits: false })); // warm-up at full length
const cap = Array.from({ length: runs }, () => time(() => target.forward({ ids: [tokens(T)] }, { layers: aux, logits: false })));
const capWall = median(cap.map((r) => r.wall));
const capCpu = median(cap.map((r) => r.cpu));
console.log(
  `capture T=${T} batch 1, aux layers [${aux}]: ${((T / capWall) * 1000).toFixed(1)} tokens/s wall (median of ${runs}: ${(capWall / 1000).toFixed(2)} s), ${((T / capCpu) * 1000).toFixed(1)} tokens per CPU-second`,
);

console.log(`peak RSS after capture ${gib(process.resourceUsage().maxRSS * 1024)}`);

// Decode: a P-token prefill, then steps that are truncated away again so that each sees the same cache.
const cache = target.newCache(1);
t0 = performance.now();
time(() => target.forward({ ids: [tokens(P)] }, { cache, layers: aux }));
console.log(
  `decode and head sessions created, ${P}-token prefill through the decode graph: ${((performance.now() - t0) / 1000).toFixed(1)} s`,
);
for (const k of [1, 8]) {
  time(() => target.forward({ ids: [tokens(k)] }, { cache, layers: aux })); // warm-up
  cache.truncate(P);
  const steps = Array.from({ length: runs }, () => {
    const r = time(() => target.forward({ ids: [tokens(k)] }, { cache, layers: aux }));
    cache.truncate(P);
    return r;
  });
  console.log(
    `decode ${k} token${k > 1 ? 's' : ''} over a ${P}-token cache (logits + aux layers): ${median(steps.map((r) => r.wall)).toFixed(1)} ms wall, ${median(steps.map((r) => r.cpu)).toFixed(1)} ms CPU (median of ${runs})`,
  );
}
console.log(`peak RSS ${gib(process.resourceUsage().maxRSS * 1024)} (the converted weights: ${gib(target.weights.manifest.dataBytes)})`);
cache.dispose();
target.dispose();
if (!keep) fs.rmSync(work, { recursive: true, force: true });
