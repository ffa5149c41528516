// Shared test utilities: random HF-named weights for a config, comparisons, fixture paths.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { ModelConfig } from '../src/io/hf-config.ts';
import type { StoredTensor } from '../src/io/safetensors.ts';
import type { DraftConfig } from '../src/draft/config.ts';
import type { Eagle3Draft } from '../src/draft/eagle3.ts';
import { Rng } from '../src/util/random.ts';

export function fixture(rel: string): string {
  return fileURLToPath(new URL(`./fixtures/${rel}`, import.meta.url));
}

/** Random weights under Hugging Face names for `c` (norm weights near 1, biases included where the family has them). */
export function randomWeights(c: ModelConfig, seed: number): Map<string, StoredTensor> {
  const rng = new Rng(seed);
  const w = new Map<string, StoredTensor>();
  const put = (name: string, shape: number[], std: number, mean = 0) => {
    const n = shape.reduce((a, b) => a * b, 1);
    const data = rng.normalArray(n, std);
    if (mean) for (let i = 0; i < n; i++) data[i] += mean;
    w.set(name, { dtype: 'F32', shape, data });
  };
  const H = c.hiddenSize;
  const q = c.numHeads * c.headDim;
  const kv = c.numKvHeads * c.headDim;
  put('model.embed_tokens.weight', [c.vocabSize, H], 0.5);
  for (let l = 0; l < c.numLayers; l++) {
    const p = `model.layers.${l}.`;
    put(p + 'input_layernorm.weight', [H], 0.1, 1);
    put(p + 'post_attention_layernorm.weight', [H], 0.1, 1);
    put(p + 'self_attn.q_proj.weight', [q, H], 0.2);
    put(p + 'self_attn.k_proj.weight', [kv, H], 0.2);
    put(p + 'self_attn.v_proj.weight', [kv, H], 0.2);
    put(p + 'self_attn.o_proj.weight', [H, q], 0.2);
    if (c.qkvBias) {
      put(p + 'self_attn.q_proj.bias', [q], 0.1);
      put(p + 'self_attn.k_proj.bias', [kv], 0.1);
      put(p + 'self_attn.v_proj.bias', [kv], 0.1);
    }
    if (c.oBias) put(p + 'self_attn.o_proj.bias', [H], 0.1);
    if (c.qkNorm) {
      put(p + 'self_attn.q_norm.weight', [c.headDim], 0.1, 1);
      put(p + 'self_attn.k_norm.weight', [c.headDim], 0.1, 1);
    }
    put(p + 'mlp.gate_proj.weight', [c.intermediateSize, H], 0.2);
    put(p + 'mlp.up_proj.weight', [c.intermediateSize, H], 0.2);
    put(p + 'mlp.down_proj.weight', [H, c.intermediateSize], 0.2);
  }
  put('model.norm.weight', [H], 0.1, 1);
  if (!c.tieWordEmbeddings) put('lm_head.weight', [c.vocabSize, H], 0.2);
  return w;
}

export function mapSource(m: Map<string, StoredTensor>) {
  return { has: (n: string) => m.has(n), read: (n: string) => m.get(n)! };
}

/** Largest |a - b| over two equal-length arrays. */
export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`length ${a.length} vs ${b.length}`);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

export function maxAbs(a: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]));
  return m;
}

/** Rows [from, to) of a row-major [*, width] array. */
export function rows(a: Float32Array, width: number, from: number, to: number): Float32Array {
  return a.subarray(from * width, to * width);
}

/**
 * A small random-weight Llama folder (config.json, model.safetensors, the tiny tokenizer files) for
 * end-to-end tests of capture, training and export: 6 layers, hidden 32, GQA 4/2.
 */
export async function makeRandomTarget(dir: string, seed: number): Promise<void> {
  const fs = await import('node:fs');
  const path = await import('node:path');
  const { parseModelConfig } = await import('../src/io/hf-config.ts');
  const { writeSafetensors } = await import('../src/io/safetensors.ts');
  const { loadTokenizer } = await import('../src/io/tokenizer.ts');
  const tinyDir = fileURLToPath(new URL('../data/tiny-target', import.meta.url));
  const raw = {
    architectures: ['LlamaForCausalLM'],
    hidden_size: 32,
    intermediate_size: 48,
    num_hidden_layers: 6,
    num_attention_heads: 4,
    num_key_value_heads: 2,
    vocab_size: loadTokenizer(tinyDir).vocabSize,
    eos_token_id: 2,
  };
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(raw));
  writeSafetensors(path.join(dir, 'model.safetensors'), randomWeights(parseModelConfig(raw), seed));
  for (const f of ['tokenizer.json', 'tokenizer_config.json']) fs.copyFileSync(path.join(tinyDir, f), path.join(dir, f));
}

const tempDirs: string[] = [];

/** A fresh temporary folder, removed by removeTempDirs (register it with node:test's after()). */
export function tempDir(prefix: string): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  tempDirs.push(d);
  return d;
}

export function removeTempDirs(): void {
  for (const d of tempDirs.splice(0)) fs.rmSync(d, { recursive: true, force: true });
}

/** Deterministic PRNG for tests (mulberry32 written out here, independent of src/util). */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** A checkpoint folder as training writes it: config.json, model.safetensors (+ d2t/t2d), specexit/signals.safetensors. */
export async function writeDraftCheckpoint(dir: string, config: DraftConfig, draft: Eagle3Draft, used: Int32Array): Promise<void> {
  const { writeSafetensors } = await import('../src/io/safetensors.ts');
  const { draftConfigJson } = await import('../src/draft/config.ts');
  const { isServingTensor } = await import('../src/draft/eagle3.ts');
  const model = new Map<string, StoredTensor>();
  const signals = new Map<string, StoredTensor>();
  for (const [n, w] of draft.exportWeights()) (isServingTensor(n) ? model : signals).set(n, { dtype: 'F32', shape: w.shape, data: w.data });
  const t2d = new Uint8Array(config.vocabSize);
  for (const t of used) t2d[t] = 1;
  model.set('d2t', { dtype: 'I64', shape: [used.length], data: BigInt64Array.from(used, (t, i) => BigInt(t - i)) });
  model.set('t2d', { dtype: 'BOOL', shape: [config.vocabSize], data: t2d });
  fs.mkdirSync(dir, { recursive: true });
  writeSafetensors(path.join(dir, 'model.safetensors'), model, { format: 'pt' });
  if (signals.size) writeSafetensors(path.join(dir, 'specexit', 'signals.safetensors'), signals);
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(draftConfigJson(config), null, 2));
}
