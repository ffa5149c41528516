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
  training: {
    mode: { type: 'enum', values: ['offline', 'online'], default: 'offline', doc: 'offline reads the Arrow store (capturing it first when missing); online runs the target per batch' },
    num_epochs: { type: 'integer', min: 1, default: 10, doc: 'passes over the training data; SpecForge: num_epochs' },
    max_steps: { type: 'integer', min: 1, nullable: true, default: null, doc: 'stop after this many optimizer steps (null: num_epochs decides); SpecForge: total_steps' },
    batch_size: { type: 'integer', min: 1, default: 1, doc: 'samples per micro-batch per rank; SpecForge: batch_size' },
    accumulation_steps: { type: 'integer', min: 1, default: 1, doc: 'micro-batches per optimizer step; SpecForge: draft_accumulation_steps' },
    learning_rate: { type: 'number', min: 0, default: 1e-4, doc: 'peak learning rate (AdamW); SpecForge: learning_rate' },
    warmup_ratio: { type: 'number', min: 0, max: 1, default: 0.015, doc: 'share of steps with linear warmup, then cosine to 0; SpecForge: warmup_ratio' },
    weight_decay: { type: 'number', min: 0, default: 0, doc: 'AdamW decoupled weight decay' },
    beta1: { type: 'number', min: 0, max: 1, default: 0.9, doc: 'AdamW beta1' },
    beta2: { type: 'number', min: 0, max: 1, default: 0.999, doc: 'AdamW beta2 (EAGLE uses 0.95)' },
    max_grad_norm: { type: 'number', min: 0, default: 0.5, doc: 'gradient-norm clip (0 disables); SpecForge: max_grad_norm' },
    ttt_length: { type: 'integer', min: 1, default: 7, doc: 'training-time-test steps; SpecForge: ttt_length' },
    output_dir: { type: 'path', default: '../checkpoints', doc: 'checkpoints go to <output_dir>/<run_id>/step-<N>/; SpecForge: output_dir' },
    run_id: { type: 'string', nullable: true, default: null, doc: "run folder name (null: the recipe file's name)" },
    save_interval: { type: 'integer', min: 1, default: 500, doc: 'optimizer steps between checkpoints (and one at the end)' },
    keep_last: { type: 'integer', min: 1, default: 3, doc: 'checkpoints kept (older ones are deleted)' },
    log_interval: { type: 'integer', min: 1, default: 10, doc: 'optimizer steps per metrics.jsonl line' },
    eval_interval: { type: 'integer', min: 1, default: 200, doc: 'optimizer steps between held-out evaluations (and one at the end)' },
    eval_samples: { type: 'integer', min: 1, nullable: true, default: 256, doc: 'held-out samples per evaluation (null: all)' },
    specexit: { type: 'boolean', default: false, doc: 'also train the SpecExit signal heads (confidence, progress, remaining length) on thinking spans' },
    specexit_weights: { type: 'number[]', length: 3, min: 0, default: [1, 1, 0.1], doc: 'weights of the confidence (BCE), progress (BCE) and log-remaining (MSE) losses added to the TTT loss' },
  },
  parallel: {
    workers: { type: 'integer', min: 1, default: 1, doc: 'data-parallel ranks (worker_threads, each with its own tfjs backend); gradients are averaged over ranks' },
  },
  eval: {
    draft_steps: { type: 'integer', min: 1, default: 7, doc: 'chain drafting: draft tokens per target verify pass (--draft-steps); SGLang: speculative_num_steps with topk 1' },
    tree: { type: 'string', nullable: true, default: null, doc: 'EAGLE-2 dynamic tree "topk,depth,tokens" instead of a chain (null: chain): top-k children per expanded node, depth draft levels, tokens draft nodes verified (root excluded); EAGLE-2\'s default is "10,6,60" (its depth 5 counts expansions after the first level)' },
    temperature: { type: 'number', min: 0, default: 0, doc: '0 is greedy (output identical to the target\'s own); > 0 is speculative sampling' },
    top_p: { type: 'number', min: 0, max: 1, default: 1, doc: 'nucleus sampling cut, applied to target and draft alike (with temperature > 0)' },
    max_new_tokens: { type: 'integer', min: 1, default: 256, doc: 'tokens generated per prompt (fewer when an end-of-turn or eos token comes first)' },
    limit: { type: 'integer', min: 1, nullable: true, default: null, doc: 'evaluate at most this many prompts (null: all of data.eval or --input)' },
    specexit: { type: 'boolean', default: false, doc: 'also decode with the SpecExit exit policy (needs a draft trained with training.specexit) and report reasoning tokens saved and answer accuracy both ways (--specexit)' },
    exit_alpha: { type: 'number', min: 0, max: 1, default: 0.1, doc: 'SpecExit: EWMA smoothing of the per-step mean signals' },
    exit_thresholds: { type: 'number[]', length: 3, min: 0, default: [0.8, 0.3, 200], doc: 'SpecExit: exit when confidence > [0], progress > [1] and remaining tokens < [2]' },
  },
  runtime: {
    backend: { type: 'enum', values: ['auto', 'node-gpu', 'node', 'wasm', 'cpu'], default: 'auto', doc: 'tfjs engine; auto = first that loads of node-gpu, node, wasm, cpu (--backend overrides)' },
    seed: { type: 'integer', default: 42, doc: 'seed of every random choice (data order, initialisation)' },
  },
} as const satisfies RecipeSpec;
