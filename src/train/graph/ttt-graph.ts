// The EAGLE-3 training-time-test loss of one batch and its weight gradients as one ONNX graph (the same
// computation as src/train/ttt.ts, written with graph/builder.ts). Every axis but B and T is fixed by the
// draft's config, so one graph serves every batch. Inputs, all float32:
//   w:<name>   each trainable weight the TTT loss reads, as the draft holds it ([in, out] or [n])
//   aux        [B, T, 3Ht]         the target's auxiliary hidden states
//   emb        [B, T + n - 1, H]   embeddings of the shifted ids, padded past the end (step i reads rows i..i+T)
//   probs      [B, T, Vd]          the teacher over the draft vocabulary (step 0's rows; step i reads rows t+i)
//   cos, sin   [T + n - 1, hd]     RoPE tables of positions 0..T+n-2 (step i reads rows i..i+T)
//   bias       [T, T]              the causal bias (0 on and below the diagonal, MASKED above)
//   seed<i>    [B, T, 1]           d total / d row<i>: -(stepWeight^i * scale / normaliser) * positionMask_i
// Outputs: row<i> [B, T, 1] = sum_v p_i log q_i per position (the host sums the loss in float64), arg<i>
// [B, T] (int64, the draft's argmax), and g:<name>, the gradient of sum_i seed<i> . row<i> for each weight.
import type { DraftConfig } from '../../draft/config.ts';
import { type Sym, TrainGraph } from './builder.ts';

/** The draft weights the TTT loss reads (the SpecExit rows are trained apart), as the draft names them. */
export const TTT_WEIGHTS = [
  'fc.weight',
  'midlayer.input_layernorm.weight',
  'midlayer.hidden_norm.weight',
  'midlayer.self_attn.q_proj.weight',
  'midlayer.self_attn.k_proj.weight',
  'midlayer.self_attn.v_proj.weight',
  'midlayer.self_attn.o_proj.weight',
  'midlayer.post_attention_layernorm.weight',
  'midlayer.mlp.gate_proj.weight',
  'midlayer.mlp.up_proj.weight',
  'midlayer.mlp.down_proj.weight',
  'norm.weight',
  'lm_head.weight',
] as const;

/** Shapes of the TTT weights as the draft holds them: linear [in, out], norms [n]. */
export function tttWeightShapes(c: DraftConfig): Map<string, number[]> {
  const H = c.hiddenSize;
  const q = c.numHeads * c.headDim;
  const kv = c.numKvHeads * c.headDim;
  return new Map<string, number[]>([
    ['fc.weight', [3 * c.targetHiddenSize, H]],
    ['midlayer.input_layernorm.weight', [H]],
    ['midlayer.hidden_norm.weight', [H]],
    ['midlayer.self_attn.q_proj.weight', [2 * H, q]],
    ['midlayer.self_attn.k_proj.weight', [2 * H, kv]],
    ['midlayer.self_attn.v_proj.weight', [2 * H, kv]],
    ['midlayer.self_attn.o_proj.weight', [q, H]],
    ['midlayer.post_attention_layernorm.weight', [H]],
    ['midlayer.mlp.gate_proj.weight', [H, c.intermediateSize]],
    ['midlayer.mlp.up_proj.weight', [H, c.intermediateSize]],
    ['midlayer.mlp.down_proj.weight', [c.intermediateSize, H]],
    ['norm.weight', [H]],
    ['lm_head.weight', [H, c.draftVocabSize]],
  ]);
}

/**
 * The graph for `ttt` steps of draft `c`; with `recompute`, the backward pass recomputes each step's
 * logits and attention probabilities instead of keeping them (less memory, about 10% more time at the
 * Qwen3-0.6B shape).
 */
export function buildTttGraph(c: DraftConfig, ttt: number, recompute = false): { model: Uint8Array; nodes: number } {
  const g = new TrainGraph();
  const H = c.hiddenSize;
  const hd = c.headDim;
  const nh = c.numHeads;
  const kv = c.numKvHeads;
  const group = nh / kv;
  const w = new Map<string, Sym>();
  for (const [name, shape] of tttWeightShapes(c)) w.set(name, g.input(`w:${name}`, shape, { grad: true }));
  const W = (name: (typeof TTT_WEIGHTS)[number]) => w.get(name)!;
  const aux = g.input('aux', ['B', 'T', 3 * c.targetHiddenSize]);
  const emb = g.input('emb', ['B', 'Tn', H]);
  const probs = g.input('probs', ['B', 'T', c.draftVocabSize]);
  const cos = g.input('cos', ['Tn', hd]);
  const sin = g.input('sin', ['Tn', hd]);
  const bias = g.input('bias', ['T', 'T']);
  const seeds = Array.from({ length: ttt }, (_, i) => g.input(`seed${i}`, ['B', 'T', 1]));
  // Teacher rows past the end are zeros: their positions are masked (seed 0), as the tfjs path's uniform rows are.
  const teacher = g.padEnd(probs, 1, ttt - 1, 'Tn');
  const eps = c.rmsNormEps;

  const heads = (x: Sym, weight: Sym, n: number) => g.transpose(g.reshape(g.linear(x, weight), ['B', 'T', n, hd]), [0, 2, 1, 3]);
  let hidden = g.linear(aux, W('fc.weight'));
  const ks: Sym[] = [];
  const vs: Sym[] = [];
  const rows: [Sym, Sym][] = [];
  for (let i = 0; i < ttt; i++) {
    const e = g.slice(emb, 1, i, 'T');
    const cosI = g.slice(cos, 0, i, 'T');
    const sinI = g.slice(sin, 0, i, 'T');
    const x = g.concat(
      [g.rmsNorm(e, W('midlayer.input_layernorm.weight'), eps), g.rmsNorm(hidden, W('midlayer.hidden_norm.weight'), eps)],
      -1,
    );
    const q = g.rope(heads(x, W('midlayer.self_attn.q_proj.weight'), nh), cosI, sinI);
    const k = g.rope(heads(x, W('midlayer.self_attn.k_proj.weight'), kv), cosI, sinI);
    const v = heads(x, W('midlayer.self_attn.v_proj.weight'), kv);
    ks.push(g.reshape(k, ['B', kv, 1, 'T', hd]));
    vs.push(g.reshape(v, ['B', kv, 1, 'T', hd]));
    const o = g.tttAttention(g.reshape(q, ['B', kv, group, 'T', hd]), ks, vs, bias, 1 / Math.sqrt(hd), recompute);
    const attn = g.reshape(g.transpose(g.reshape(o, ['B', nh, 'T', hd]), [0, 2, 1, 3]), ['B', 'T', nh * hd]);
    const r = g.add(hidden, g.linear(attn, W('midlayer.self_attn.o_proj.weight')));
    const y = g.rmsNorm(r, W('midlayer.post_attention_layernorm.weight'), eps);
    const gate = g.linear(y, W('midlayer.mlp.gate_proj.weight'));
    const act = g.mul(g.silu(gate), g.linear(y, W('midlayer.mlp.up_proj.weight')));
    const out = g.add(r, g.linear(act, W('midlayer.mlp.down_proj.weight')));
    const { row, argmax } = g.lmHeadLoss(g.rmsNorm(out, W('norm.weight'), eps), W('lm_head.weight'), teacher, i, 'T', recompute);
    g.output(g.named(row, `row${i}`));
    g.output(g.named(argmax, `arg${i}`), 'int64');
    rows.push([row, seeds[i]]);
    hidden = out;
  }
  const weights = [...w.values()];
  g.backward(rows, weights).forEach((d, k) => {
    if (!d) throw new Error(`TTT graph: no gradient reaches ${weights[k].name}`);
    g.output(g.named(d, `g:${weights[k].name.slice(2)}`));
  });
  return { model: g.encode('eagle3_ttt'), nodes: g.nodeCount };
}
