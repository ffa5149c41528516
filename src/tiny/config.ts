// The shipped tiny target: its architecture, and where its files live.
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const TINY_TARGET_DIR = path.join(REPO_ROOT, 'data', 'tiny-target');
export const DEMO_TARGET_DIR = path.join(REPO_ROOT, 'data', 'demo-target');
export const CORPUS_DIR = path.join(REPO_ROOT, 'data', 'corpus');

/** The shipped targets the project trains itself: `tiny` for tests and the quickstart, `demo` for the speedup. */
export const TARGET_SIZES = ['tiny', 'demo'] as const;
export type TargetSize = (typeof TARGET_SIZES)[number];

/**
 * Architecture and training defaults of each shipped target. `demo` is sized so that a decode step is bound
 * by reading its weights (19M parameters, 76 MB in float32, past this machine's 32 MiB L3) while a verify
 * pass of 8 tokens costs about 1.3 decode steps; deep and narrow (24 layers of 256) because that ratio
 * measured better than 16 layers of 384 (bench:ort-target: 12.3 / 9.4 ms against 12.7 / 8.2 ms).
 */
export const TARGETS: Record<
  TargetSize,
  {
    dir: string;
    arch: { hidden: number; intermediate: number; layers: number; heads: number; kvHeads: number; headDim: number };
    /** Training stages run in turn (a warm restart: each later one starts from the model the one before wrote). */
    train: { stages: { steps: number; lr: number; warmup: number; splits?: string[] }[]; workers: number };
  }
> = {
  tiny: {
    dir: TINY_TARGET_DIR,
    arch: { hidden: 96, intermediate: 256, layers: 8, heads: 4, kvHeads: 2, headDim: 24 },
    train: { stages: [{ steps: 1100, lr: 3e-3, warmup: 100 }], workers: 2 },
  },
  demo: {
    dir: DEMO_TARGET_DIR,
    arch: { hidden: 256, intermediate: 768, layers: 24, heads: 4, kvHeads: 2, headDim: 64 },
    train: {
      stages: [
        { steps: 600, lr: 2e-3, warmup: 60 },
        { steps: 1000, lr: 2e-3, warmup: 20 },
        // The arithmetic is what the model still gets wrong after the second stage: reasoning only.
        { steps: 500, lr: 1.5e-3, warmup: 20, splits: ['reasoning-train.jsonl'] },
        // A fourth, cooler pass over the reasoning split: 94.25% of the answers were right after stage 3, 98% after it.
        { steps: 600, lr: 1e-3, warmup: 20, splits: ['reasoning-train.jsonl'] },
      ],
      workers: 1,
    },
  },
};

/**
 * A Llama with GQA and an untied lm_head. The tiny one (hidden 96, 4 heads of 24, 2 kv heads, 8 layers, so that
 * EAGLE-3's default auxiliary layers [1, L/2-1, L-4] = [1, 3, 4] are distinct) trains in minutes on two cores.
 */
export function targetConfig(size: TargetSize, vocabSize: number, ids: { eos: number; pad: number }): Record<string, unknown> {
  const a = TARGETS[size].arch;
  return {
    architectures: ['LlamaForCausalLM'],
    model_type: 'llama',
    hidden_size: a.hidden,
    intermediate_size: a.intermediate,
    num_hidden_layers: a.layers,
    num_attention_heads: a.heads,
    num_key_value_heads: a.kvHeads,
    head_dim: a.headDim,
    vocab_size: vocabSize,
    max_position_embeddings: 512,
    rms_norm_eps: 1e-5,
    rope_theta: 10000.0,
    rope_scaling: null,
    hidden_act: 'silu',
    attention_bias: false,
    mlp_bias: false,
    tie_word_embeddings: false,
    initializer_range: 0.02,
    bos_token_id: null,
    eos_token_id: ids.eos,
    pad_token_id: ids.pad,
    torch_dtype: 'bfloat16',
    use_cache: true,
  };
}
