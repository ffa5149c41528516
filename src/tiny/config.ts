// The shipped tiny target: its architecture, and where its files live.
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const TINY_TARGET_DIR = path.join(REPO_ROOT, 'data', 'tiny-target');
export const CORPUS_DIR = path.join(REPO_ROOT, 'data', 'corpus');

/**
 * A Llama with GQA (hidden 96, 4 heads of 24, 2 kv heads), an untied lm_head and 8 layers, so that EAGLE-3's default
 * auxiliary layers [1, L/2-1, L-4] = [1, 3, 4] are distinct. Sized to train in minutes on two cores.
 */
export function tinyTargetConfig(vocabSize: number, ids: { eos: number; pad: number }): Record<string, unknown> {
  return {
    architectures: ['LlamaForCausalLM'],
    model_type: 'llama',
    hidden_size: 96,
    intermediate_size: 256,
    num_hidden_layers: 8,
    num_attention_heads: 4,
    num_key_value_heads: 2,
    head_dim: 24,
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
