// The recipe: YAML with sections close to SpecForge's configuration, so its users feel at home.
// Each issue that adds a stage adds its section here; the README's recipe reference is generated from it.
import type { RecipeSpec } from './fields.ts';

export const RECIPE_SPEC = {
  model: {
    target: { type: 'path', required: true, doc: 'Hugging Face folder of the target model (config.json, safetensors, tokenizer.json); SpecForge: target_model_path' },
    aux_layer_ids: { type: 'integer[]', nullable: true, default: null, doc: 'decoder layers (0-indexed) whose outputs are captured; null = EAGLE-3 default [1, L/2-1, L-4]' },
    draft_vocab_size: { type: 'integer', min: 1, default: 32000, doc: 'draft vocabulary size (capped at the target vocabulary); FR-Spec: most frequent assistant tokens' },
  },
  data: {
    train: { type: 'path[]', required: true, doc: 'training JSONL file(s); SpecForge: train_data_path' },
    eval: { type: 'path[]', nullable: true, default: null, doc: 'held-out JSONL file(s); SpecForge: eval_data_path' },
    format: { type: 'enum', values: ['auto', 'sharegpt', 'openai', 'gsm8k'], default: 'auto', doc: 'record format; auto decides per line from its keys' },
    template: { type: 'enum', values: ['tokenizer', 'llama3', 'chatml', 'qwen3-thinking'], default: 'tokenizer', doc: "chat template; 'tokenizer' renders the tokenizer's own chat_template; SpecForge: chat_template" },
    max_length: { type: 'integer', min: 8, default: 2048, doc: 'tokens per sample; longer conversations are cut' },
    skip_invalid: { type: 'boolean', default: false, doc: 'skip (and count) bad dataset lines instead of stopping at the first' },
    answer_extractor: { type: 'enum', values: ['gsm8k', 'boxed', 'last-number', 'none'], default: 'gsm8k', doc: 'how the final answer is read from a reply (SpecExit labels): "#### N", \\boxed{...}, or the last number' },
    store: { type: 'path', required: true, doc: 'folder of the Arrow hidden-state store written by capture and read by offline training; SpecForge: cache_dir' },
    cache_dir: { type: 'path', default: '../.cache', doc: 'cache for derived data (draft vocabulary)' },
  },
  capture: {
    batch_size: { type: 'integer', min: 1, default: 8, doc: 'samples per target forward' },
    dtype: { type: 'enum', values: ['float16', 'float32'], default: 'float16', doc: 'storage type of the captured hidden states' },
    samples_per_shard: { type: 'integer', min: 1, default: 256, doc: 'samples per Arrow shard (the unit of resume)' },
    limit: { type: 'integer', min: 1, nullable: true, default: null, doc: 'capture at most this many training samples' },
  },
  runtime: {
    backend: { type: 'enum', values: ['auto', 'node-gpu', 'node', 'wasm', 'cpu'], default: 'auto', doc: 'tfjs engine; auto = first that loads of node-gpu, node, wasm, cpu (--backend overrides)' },
    seed: { type: 'integer', default: 42, doc: 'seed of every random choice (data order, initialisation)' },
  },
} as const satisfies RecipeSpec;
