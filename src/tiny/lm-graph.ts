// The causal language-model loss of a Llama decoder and its weight gradients as one ONNX graph (the same
// computation as lm.ts's lmLoss over TfjsTarget.forward, written with the draft trainer's graph builder), so
// that a target of tens of millions of parameters trains in ONNX Runtime rather than through thousands of
// wasm kernels a step. B and T are symbolic: one graph serves every batch. Inputs, all float32:
//   w:<name>   every weight but the embedding, under its Hugging Face name, linear layers as [in, out]
//   emb        [B, T, H]   the embeddings of the ids (gathered on the host; their gradient comes back)
//   labels     [B, T, V]   one-hot of the token each position predicts (zeros where nothing is learned)
//   cos, sin   [T, hd]     RoPE tables of positions 0..T-1
//   bias       [T, T]      the causal bias (0 on and below the diagonal, MASKED above)
//   seed       [B, T, 1]   d loss / d row: -lossMask / denominator
// Outputs: row [B, T, 1] = log softmax(logits)[label] per position (the host sums the loss in float64),
// g:<name> for each weight and g:emb [B, T, H] (the host scatters it into the embedding's gradient).
import type { ModelConfig } from '../io/hf-config.ts';
import { type Sym, TrainGraph } from '../train/graph/builder.ts';

/** What the graph implements: a plain Llama (no biases, no q/k norm, no MiniCPM scales, untied head). */
export function checkLmGraphSupports(c: ModelConfig): void {
  const unsupported = [
    c.qkvBias && 'attention biases',
    c.oBias && 'o_proj bias',
    c.mlpBias && 'MLP biases',
    c.qkNorm && 'q/k norms',
    c.tieWordEmbeddings && 'tied embeddings',
    (c.embedScale !== 1 || c.residualScale !== 1 || c.logitDivisor !== 1) && 'MiniCPM scales',
    c.numHeads % c.numKvHeads !== 0 && 'heads not a multiple of kv heads',
  ].filter(Boolean);
  if (unsupported.length) throw new Error(`ONNX Runtime LM training: ${c.architecture} with ${unsupported.join(', ')} is not supported`);
}

/** The weights the graph takes (all but the embedding), as [in, out] for linear layers and [n] for norms. */
export function lmWeightShapes(c: ModelConfig): Map<string, number[]> {
  const H = c.hiddenSize;
  const q = c.numHeads * c.headDim;
  const kv = c.numKvHeads * c.headDim;
  const I = c.intermediateSize;
  const shapes = new Map<string, number[]>();
  for (let l = 0; l < c.numLayers; l++) {
    const p = `model.layers.${l}.`;
    shapes.set(`${p}input_layernorm.weight`, [H]);
    shapes.set(`${p}self_attn.q_proj.weight`, [H, q]);
    shapes.set(`${p}self_attn.k_proj.weight`, [H, kv]);
    shapes.set(`${p}self_attn.v_proj.weight`, [H, kv]);
    shapes.set(`${p}self_attn.o_proj.weight`, [q, H]);
    shapes.set(`${p}post_attention_layernorm.weight`, [H]);
    shapes.set(`${p}mlp.gate_proj.weight`, [H, I]);
    shapes.set(`${p}mlp.up_proj.weight`, [H, I]);
    shapes.set(`${p}mlp.down_proj.weight`, [I, H]);
  }
  shapes.set('model.norm.weight', [H]);
  shapes.set('lm_head.weight', [H, c.vocabSize]);
  return shapes;
}

export function buildLmGraph(c: ModelConfig): { model: Uint8Array; nodes: number } {
  checkLmGraphSupports(c);
  const g = new TrainGraph();
  const H = c.hiddenSize;
  const hd = c.headDim;
  const nh = c.numHeads;
  const kv = c.numKvHeads;
  const group = nh / kv;
  const eps = c.rmsNormEps;
  const w = new Map<string, Sym>();
  for (const [name, shape] of lmWeightShapes(c)) w.set(name, g.input(`w:${name}`, shape, { grad: true }));
  const W = (name: string) => w.get(name)!;
  const emb = g.input('emb', ['B', 'T', H], { grad: true });
  const labels = g.input('labels', ['B', 'T', c.vocabSize]);
  const cos = g.input('cos', ['T', hd]);
  const sin = g.input('sin', ['T', hd]);
  const bias = g.input('bias', ['T', 'T']);
  const seed = g.input('seed', ['B', 'T', 1]);

  const heads = (x: Sym, weight: Sym, n: number) => g.transpose(g.reshape(g.linear(x, weight), ['B', 'T', n, hd]), [0, 2, 1, 3]);
  let x = emb;
  for (let l = 0; l < c.numLayers; l++) {
    const p = `model.layers.${l}.`;
    const h = g.rmsNorm(x, W(`${p}input_layernorm.weight`), eps);
    const q = g.rope(heads(h, W(`${p}self_attn.q_proj.weight`), nh), cos, sin);
    const k = g.rope(heads(h, W(`${p}self_attn.k_proj.weight`), kv), cos, sin);
    const v = heads(h, W(`${p}self_attn.v_proj.weight`), kv);
    // Causal attention is the training-time-test attention with no later steps: one softmax over the causal columns.
    const o = g.tttAttention(
      g.reshape(q, ['B', kv, group, 'T', hd]),
      [g.reshape(k, ['B', kv, 1, 'T', hd])],
      [g.reshape(v, ['B', kv, 1, 'T', hd])],
      bias,
      1 / Math.sqrt(hd),
      false,
    );
    const attn = g.reshape(g.transpose(g.reshape(o, ['B', nh, 'T', hd]), [0, 2, 1, 3]), ['B', 'T', nh * hd]);
    x = g.add(x, g.linear(attn, W(`${p}self_attn.o_proj.weight`)));
    const y = g.rmsNorm(x, W(`${p}post_attention_layernorm.weight`), eps);
    const gate = g.linear(y, W(`${p}mlp.gate_proj.weight`));
    const act = g.mul(g.silu(gate), g.linear(y, W(`${p}mlp.up_proj.weight`)));
    x = g.add(x, g.linear(act, W(`${p}mlp.down_proj.weight`)));
  }
  // With one-hot labels the soft cross-entropy row is the label's log-probability.
  const { row } = g.lmHeadLoss(g.rmsNorm(x, W('model.norm.weight'), eps), W('lm_head.weight'), labels, 0, 'T', false);
  g.output(g.named(row, 'row'));
  const wrt = [...w.values(), emb];
  g.backward([[row, seed]], wrt).forEach((d, k) => {
    if (!d) throw new Error(`LM graph: no gradient reaches ${wrt[k].name}`);
    g.output(g.named(d, k === wrt.length - 1 ? 'g:emb' : `g:${wrt[k].name.slice(2)}`));
  });
  return { model: g.encode('llama_lm_loss'), nodes: g.nodeCount };
}
