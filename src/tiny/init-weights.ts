// Fresh weights for a decoder of the given config, Hugging Face style: linear and embedding weights
// from N(0, initializer_range), norms at 1, biases at 0. Seeded, so a retrain starts identically.
import type { ModelConfig } from '../io/hf-config.ts';
import type { StoredTensor } from '../io/safetensors.ts';
import { Rng } from '../util/random.ts';

export function initTargetWeights(c: ModelConfig, seed: number, std = 0.02): Map<string, StoredTensor> {
  const rng = new Rng(seed);
  const w = new Map<string, StoredTensor>();
  const normal = (name: string, shape: number[]) =>
    w.set(name, { dtype: 'F32', shape, data: rng.normalArray(shape[0] * (shape[1] ?? 1), std) });
  const fill = (name: string, n: number, v: number) => w.set(name, { dtype: 'F32', shape: [n], data: new Float32Array(n).fill(v) });
  const H = c.hiddenSize;
  const q = c.numHeads * c.headDim;
  const kv = c.numKvHeads * c.headDim;
  normal('model.embed_tokens.weight', [c.vocabSize, H]);
  for (let l = 0; l < c.numLayers; l++) {
    const p = `model.layers.${l}.`;
    fill(p + 'input_layernorm.weight', H, 1);
    fill(p + 'post_attention_layernorm.weight', H, 1);
    normal(p + 'self_attn.q_proj.weight', [q, H]);
    normal(p + 'self_attn.k_proj.weight', [kv, H]);
    normal(p + 'self_attn.v_proj.weight', [kv, H]);
    normal(p + 'self_attn.o_proj.weight', [H, q]);
    if (c.qkvBias)
      for (const [k, n] of [
        ['q', q],
        ['k', kv],
        ['v', kv],
      ] as const)
        fill(`${p}self_attn.${k}_proj.bias`, n, 0);
    if (c.oBias) fill(p + 'self_attn.o_proj.bias', H, 0);
    if (c.qkNorm) {
      fill(p + 'self_attn.q_norm.weight', c.headDim, 1);
      fill(p + 'self_attn.k_norm.weight', c.headDim, 1);
    }
    normal(p + 'mlp.gate_proj.weight', [c.intermediateSize, H]);
    normal(p + 'mlp.up_proj.weight', [c.intermediateSize, H]);
    normal(p + 'mlp.down_proj.weight', [H, c.intermediateSize]);
    if (c.mlpBias) {
      fill(p + 'mlp.gate_proj.bias', c.intermediateSize, 0);
      fill(p + 'mlp.up_proj.bias', c.intermediateSize, 0);
      fill(p + 'mlp.down_proj.bias', H, 0);
    }
  }
  fill('model.norm.weight', H, 1);
  if (!c.tieWordEmbeddings) normal('lm_head.weight', [c.vocabSize, H]);
  return w;
}
