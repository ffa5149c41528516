// Plain, loop-based reference of one EAGLE-3 training-time-test (TTT) forward pass, following the
// SpecForge (sgl-project) training semantics.
//
// Deliberately independent of the real (tfjs) implementation: no libraries, only loops over
// Float64Array with float64 arithmetic throughout. Written for clarity, not speed; it is meant for
// tiny shapes (B*T of a few dozen rows, hidden ~32, vocab ~50).
//
// Layout conventions: every activation is a row-major Float64Array; a "row" is one (batch, position)
// pair, row index r = b * T + t. Weights use the PyTorch layout [out, in].

export interface PlainEagle3Config {
  hiddenSize: number;
  targetHiddenSize: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  intermediateSize: number;
  vocabSize: number;
  draftVocabSize: number;
  rmsNormEps: number;
  ropeTheta: number;
  tttLength: number;
  /** Weight of step i in the total loss is stepWeight^i (SpecForge: 0.8). */
  stepWeight: number;
}

export interface PlainEagle3Inputs {
  /** [V, H] frozen target embedding. */
  embed: Float32Array;
  /** [B, T, 3Ht] concatenated target aux hidden states. */
  aux: Float32Array;
  /** [B][T] raw, unshifted token ids. */
  inputIds: number[][];
  /** [B][T] raw, unshifted loss mask. */
  lossMask: number[][];
  /** [B, T, V] raw: row t = the target's logits at position t. */
  targetLogits: Float32Array;
  /** [V] 1 where the target id is in the draft vocabulary. */
  t2d: Uint8Array;
  /** [Vd] offsets: target id of draft id i is i + d2t[i]. */
  d2t: number[];
}

export interface PlainEagle3Result {
  stepLosses: number[];
  stepAccs: number[];
  totalLoss: number;
}

/** Any numeric array will do for weights; finiteDifference passes Float64Array copies. */
type WeightArray = ArrayLike<number>;

// ---------------------------------------------------------------------------------------------
// Small helpers.
// ---------------------------------------------------------------------------------------------

function getWeight(w: Map<string, WeightArray>, name: string, expectedLength: number): WeightArray {
  const a = w.get(name);
  if (a === undefined) throw new Error(`plainEagle3: missing weight ${name}`);
  if (a.length !== expectedLength) {
    throw new Error(`plainEagle3: weight ${name} has ${a.length} values, expected ${expectedLength}`);
  }
  return a;
}

/** y[r, o] = sum_i x[r, i] * W[o, i]; W is [outDim, inDim], no bias. */
function linear(x: Float64Array, rows: number, W: WeightArray, outDim: number, inDim: number): Float64Array {
  if (x.length !== rows * inDim) throw new Error(`linear: input has ${x.length} values, expected ${rows} x ${inDim}`);
  if (W.length !== outDim * inDim) throw new Error(`linear: weight has ${W.length} values, expected ${outDim} x ${inDim}`);
  const y = new Float64Array(rows * outDim);
  for (let r = 0; r < rows; r++) {
    for (let o = 0; o < outDim; o++) {
      let acc = 0;
      for (let i = 0; i < inDim; i++) acc += x[r * inDim + i]! * W[o * inDim + i]!;
      y[r * outDim + o] = acc;
    }
  }
  return y;
}

/** RMSNorm over each row of `width` values: v / sqrt(mean(v^2) + eps) * weight. */
function rmsNorm(x: Float64Array, width: number, weight: WeightArray, eps: number): Float64Array {
  const y = new Float64Array(x.length);
  for (let start = 0; start < x.length; start += width) {
    let sumSq = 0;
    for (let i = 0; i < width; i++) sumSq += x[start + i]! * x[start + i]!;
    const inv = 1 / Math.sqrt(sumSq / width + eps);
    for (let i = 0; i < width; i++) y[start + i] = x[start + i]! * inv * weight[i]!;
  }
  return y;
}

function silu(v: number): number {
  return v / (1 + Math.exp(-v));
}

/** Index of the largest value among values[start .. start+count); the FIRST one on ties (as torch.argmax). */
function argmax(values: ArrayLike<number>, start: number, count: number): number {
  let best = 0;
  let bestValue = values[start]!;
  for (let i = 1; i < count; i++) {
    if (values[start + i]! > bestValue) {
      bestValue = values[start + i]!;
      best = i;
    }
  }
  return best;
}

/** Shift each row of a [B][T] table left by one position, zero-filling the end. */
function shiftLeft(rows: number[][]): number[][] {
  return rows.map((row) => row.map((_, t) => (t + 1 < row.length ? row[t + 1]! : 0)));
}

/**
 * RoPE in place, HF "rotate_half" convention. x holds `rows` rows of [numHeads, headDim]; row r is at
 * position positions[r]. For i < headDim/2 the pair (x[i], x[i + headDim/2]) is rotated by
 * angle = position * theta^(-2i/headDim).
 */
function applyRope(x: Float64Array, positions: number[], numHeads: number, headDim: number, theta: number): void {
  const half = headDim / 2;
  for (let r = 0; r < positions.length; r++) {
    const pos = positions[r]!;
    for (let h = 0; h < numHeads; h++) {
      const base = (r * numHeads + h) * headDim;
      for (let i = 0; i < half; i++) {
        const invFreq = 1 / theta ** ((2 * i) / headDim);
        const angle = pos * invFreq;
        const c = Math.cos(angle);
        const s = Math.sin(angle);
        const a = x[base + i]!;
        const b = x[base + i + half]!;
        x[base + i] = a * c - b * s;
        x[base + i + half] = b * c + a * s;
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// The forward pass.
// ---------------------------------------------------------------------------------------------

function forward(cfg: PlainEagle3Config, w: Map<string, WeightArray>, x: PlainEagle3Inputs): PlainEagle3Result {
  const H = cfg.hiddenSize;
  const Ht = cfg.targetHiddenSize;
  const nH = cfg.numHeads;
  const nKv = cfg.numKvHeads;
  const hd = cfg.headDim;
  const I = cfg.intermediateSize;
  const V = cfg.vocabSize;
  const Vd = cfg.draftVocabSize;
  const eps = cfg.rmsNormEps;
  const B = x.inputIds.length;
  const T = B > 0 ? x.inputIds[0]!.length : 0;
  const N = B * T;
  const group = nH / nKv;
  if (!Number.isInteger(group)) throw new Error('plainEagle3: numHeads not divisible by numKvHeads');
  if (hd % 2 !== 0) throw new Error('plainEagle3: headDim must be even');

  // ---- input validation ----
  for (let b = 0; b < B; b++) {
    if (x.inputIds[b]!.length !== T || x.lossMask[b]!.length !== T) {
      throw new Error('plainEagle3: inputIds / lossMask rows must all have length T');
    }
  }
  if (x.lossMask.length !== B) throw new Error('plainEagle3: lossMask must have B rows');
  if (x.embed.length !== V * H) throw new Error('plainEagle3: embed must be [V, H]');
  if (x.aux.length !== N * 3 * Ht) throw new Error('plainEagle3: aux must be [B, T, 3Ht]');
  if (x.targetLogits.length !== N * V) throw new Error('plainEagle3: targetLogits must be [B, T, V]');
  if (x.t2d.length !== V) throw new Error('plainEagle3: t2d must have V entries');
  if (x.d2t.length !== Vd) throw new Error('plainEagle3: d2t must have Vd entries');

  // Draft vocabulary columns: draft id i <-> target id i + d2t[i]. These must be exactly the t2d
  // columns in ascending order.
  const draftCols: number[] = x.d2t.map((off, i) => i + off);
  const t2dCols: number[] = [];
  for (let v = 0; v < V; v++) if (x.t2d[v]) t2dCols.push(v);
  if (t2dCols.length !== Vd || t2dCols.some((c, i) => c !== draftCols[i])) {
    throw new Error('plainEagle3: d2t and t2d disagree');
  }

  // ---- weights ----
  const W = {
    fc: getWeight(w, 'fc.weight', H * 3 * Ht),
    inputNorm: getWeight(w, 'midlayer.input_layernorm.weight', H),
    hiddenNorm: getWeight(w, 'midlayer.hidden_norm.weight', H),
    postNorm: getWeight(w, 'midlayer.post_attention_layernorm.weight', H),
    q: getWeight(w, 'midlayer.self_attn.q_proj.weight', nH * hd * 2 * H),
    k: getWeight(w, 'midlayer.self_attn.k_proj.weight', nKv * hd * 2 * H),
    v: getWeight(w, 'midlayer.self_attn.v_proj.weight', nKv * hd * 2 * H),
    o: getWeight(w, 'midlayer.self_attn.o_proj.weight', H * nH * hd),
    gate: getWeight(w, 'midlayer.mlp.gate_proj.weight', I * H),
    up: getWeight(w, 'midlayer.mlp.up_proj.weight', I * H),
    down: getWeight(w, 'midlayer.mlp.down_proj.weight', H * I),
    norm: getWeight(w, 'norm.weight', H),
    lmHead: getWeight(w, 'lm_head.weight', Vd * H),
  };

  // ---- alignment (once, before step 0) ----
  // Input ids shifted left by one (last position gets id 0).
  let ids: number[][] = shiftLeft(x.inputIds);
  // Loss mask NOT shifted, but its last column is zeroed.
  let lossMask: number[][] = x.lossMask.map((row) => row.map((m, t) => (t === T - 1 ? 0 : m)));
  // Target logits shifted left by one (row T-1 becomes all zeros).
  const logits1 = new Float64Array(N * V);
  for (let b = 0; b < B; b++) {
    for (let t = 0; t + 1 < T; t++) {
      for (let v = 0; v < V; v++) logits1[(b * T + t) * V + v] = x.targetLogits[(b * T + t + 1) * V + v]!;
    }
  }

  // ---- teacher: softmax over the draft-vocabulary columns of the shifted target logits ----
  const teacher = new Float64Array(N * Vd);
  for (let r = 0; r < N; r++) {
    let maxLogit = -Infinity;
    for (let i = 0; i < Vd; i++) maxLogit = Math.max(maxLogit, logits1[r * V + draftCols[i]!]!);
    let denom = 0;
    for (let i = 0; i < Vd; i++) {
      const e = Math.exp(logits1[r * V + draftCols[i]!]! - maxLogit);
      teacher[r * Vd + i] = e;
      denom += e;
    }
    for (let i = 0; i < Vd; i++) teacher[r * Vd + i] = teacher[r * Vd + i]! / denom;
  }

  // ---- position mask, once: lossMask' * t2d[argmax over ALL V columns of the shifted logits] ----
  let posMask: number[][] = [];
  for (let b = 0; b < B; b++) {
    const row: number[] = [];
    for (let t = 0; t < T; t++) {
      const top = argmax(logits1, (b * T + t) * V, V);
      row.push(lossMask[b]![t]! * (x.t2d[top] ? 1 : 0));
    }
    posMask.push(row);
  }

  // ---- step-0 hidden: g = fc(aux) ----
  let hidden = linear(Float64Array.from(x.aux), N, W.fc, H, 3 * Ht); // [N, H]

  // Key/value cache: one entry per step, each [N, nKv * hd] (keys already rotated).
  const cacheK: Float64Array[] = [];
  const cacheV: Float64Array[] = [];

  const stepLosses: number[] = [];
  const stepAccs: number[] = [];
  let totalLoss = 0;
  const attnScale = 1 / Math.sqrt(hd);

  for (let step = 0; step < cfg.tttLength; step++) {
    if (step > 0) {
      ids = shiftLeft(ids);
      lossMask = shiftLeft(lossMask);
      posMask = shiftLeft(posMask);
    }

    // Embedding of this step's (shifted) ids.
    const emb = new Float64Array(N * H);
    for (let b = 0; b < B; b++) {
      for (let t = 0; t < T; t++) {
        const id = ids[b]![t]!;
        if (!Number.isInteger(id) || id < 0 || id >= V) throw new Error(`plainEagle3: token id ${id} out of range`);
        for (let j = 0; j < H; j++) emb[(b * T + t) * H + j] = x.embed[id * H + j]!;
      }
    }

    // Attention input: concat(input_layernorm(embedding), hidden_norm(hidden)), embedding first.
    const en = rmsNorm(emb, H, W.inputNorm, eps);
    const hn = rmsNorm(hidden, H, W.hiddenNorm, eps);
    const cat = new Float64Array(N * 2 * H);
    for (let r = 0; r < N; r++) {
      for (let j = 0; j < H; j++) {
        cat[r * 2 * H + j] = en[r * H + j]!;
        cat[r * 2 * H + H + j] = hn[r * H + j]!;
      }
    }

    const q = linear(cat, N, W.q, nH * hd, 2 * H); // [N, nH * hd]
    const k = linear(cat, N, W.k, nKv * hd, 2 * H); // [N, nKv * hd]
    const v = linear(cat, N, W.v, nKv * hd, 2 * H); // [N, nKv * hd]
    // RoPE position for step i is t + i (for this step's queries and keys alike).
    const positions: number[] = [];
    for (let b = 0; b < B; b++) for (let t = 0; t < T; t++) positions.push(t + step);
    applyRope(q, positions, nH, hd, cfg.ropeTheta);
    applyRope(k, positions, nKv, hd, cfg.ropeTheta);
    cacheK.push(k);
    cacheV.push(v);

    // Attention: query (b, t) of this step sees step-0 keys at positions s <= t and, for each
    // later step j = 1..step, step j's key at the same position t. One softmax over all of them.
    const attn = new Float64Array(N * nH * hd);
    for (let b = 0; b < B; b++) {
      for (let t = 0; t < T; t++) {
        for (let head = 0; head < nH; head++) {
          const kvHead = Math.floor(head / group);
          const qBase = ((b * T + t) * nH + head) * hd;
          // Collect (score, value source) pairs.
          const scores: number[] = [];
          const valueRefs: { cache: Float64Array; base: number }[] = [];
          const addKey = (kc: Float64Array, vc: Float64Array, row: number) => {
            const kBase = (row * nKv + kvHead) * hd;
            let dot = 0;
            for (let d = 0; d < hd; d++) dot += q[qBase + d]! * kc[kBase + d]!;
            scores.push(dot * attnScale);
            valueRefs.push({ cache: vc, base: kBase });
          };
          for (let s = 0; s <= t; s++) addKey(cacheK[0]!, cacheV[0]!, b * T + s);
          for (let j = 1; j <= step; j++) addKey(cacheK[j]!, cacheV[j]!, b * T + t);

          const maxScore = Math.max(...scores);
          let denom = 0;
          const probs = scores.map((s) => {
            const e = Math.exp(s - maxScore);
            denom += e;
            return e;
          });
          for (let n = 0; n < probs.length; n++) {
            const p = probs[n]! / denom;
            const { cache, base } = valueRefs[n]!;
            for (let d = 0; d < hd; d++) attn[qBase + d] += p * cache[base + d]!;
          }
        }
      }
    }

    // o_proj and residual (the residual is the hidden input, not the 2H concat).
    const attnOut = linear(attn, N, W.o, H, nH * hd);
    const resid = new Float64Array(N * H);
    for (let i = 0; i < N * H; i++) resid[i] = hidden[i]! + attnOut[i]!;

    // SwiGLU MLP with residual.
    const y = rmsNorm(resid, H, W.postNorm, eps);
    const gate = linear(y, N, W.gate, I, H);
    const up = linear(y, N, W.up, I, H);
    const act = new Float64Array(N * I);
    for (let i = 0; i < N * I; i++) act[i] = silu(gate[i]!) * up[i]!;
    const mlpOut = linear(act, N, W.down, H, I);
    const out = new Float64Array(N * H);
    for (let i = 0; i < N * H; i++) out[i] = resid[i]! + mlpOut[i]!;

    // Draft logits over the draft vocabulary.
    const draftLogits = linear(rmsNorm(out, H, W.norm, eps), N, W.lmHead, Vd, H); // [N, Vd]

    // Loss and accuracy for this step.
    let lossSum = 0;
    let correct = 0;
    let maskSum = 0;
    for (let b = 0; b < B; b++) {
      for (let t = 0; t < T; t++) {
        const r = b * T + t;
        // Teacher row t + step of the shifted teacher, uniform 1/Vd past the end.
        const p = new Float64Array(Vd);
        if (t + step < T) {
          for (let i = 0; i < Vd; i++) p[i] = teacher[(b * T + t + step) * Vd + i]!;
        } else {
          p.fill(1 / Vd);
        }
        // log q = log_softmax(draft logits).
        let maxLogit = -Infinity;
        for (let i = 0; i < Vd; i++) maxLogit = Math.max(maxLogit, draftLogits[r * Vd + i]!);
        let denom = 0;
        for (let i = 0; i < Vd; i++) denom += Math.exp(draftLogits[r * Vd + i]! - maxLogit);
        const logDenom = maxLogit + Math.log(denom);
        let plogq = 0;
        for (let i = 0; i < Vd; i++) plogq += p[i]! * (draftLogits[r * Vd + i]! - logDenom);

        const pm = posMask[b]![t]!;
        lossSum += pm * plogq;
        if (argmax(draftLogits, r * Vd, Vd) === argmax(p, 0, Vd)) correct += pm;
        maskSum += lossMask[b]![t]!;
      }
    }
    const loss = -lossSum / N;
    const acc = maskSum === 0 ? 0 : correct / maskSum;
    stepLosses.push(loss);
    stepAccs.push(acc);
    totalLoss += cfg.stepWeight ** step * loss;

    // The pre-norm output is the next step's hidden.
    hidden = out;
  }

  return { stepLosses, stepAccs, totalLoss };
}

/**
 * One EAGLE-3 TTT forward. `w` holds the draft weights under their SGLang names (without any
 * prefix): fc.weight, midlayer.*, norm.weight, lm_head.weight. The embedding comes from `x.embed`.
 */
export function plainEagle3Forward(cfg: PlainEagle3Config, w: Map<string, Float32Array>, x: PlainEagle3Inputs): PlainEagle3Result {
  return forward(cfg, w, x);
}

/**
 * Central finite difference of totalLoss w.r.t. element `index` of weight `name`:
 * (L(w + h) - L(w - h)) / (2h), with the perturbed weight held as a Float64Array so that w +- h is
 * exact up to float64 rounding.
 */
export function finiteDifference(
  cfg: PlainEagle3Config,
  w: Map<string, Float32Array>,
  x: PlainEagle3Inputs,
  name: string,
  index: number,
  h = 1e-4,
): number {
  const base = w.get(name);
  if (base === undefined) throw new Error(`finiteDifference: missing weight ${name}`);
  if (!Number.isInteger(index) || index < 0 || index >= base.length) {
    throw new Error(`finiteDifference: index ${index} out of range for ${name} (${base.length} values)`);
  }
  const evalAt = (delta: number): number => {
    const copy = Float64Array.from(base);
    copy[index] = copy[index]! + delta;
    const w2 = new Map<string, WeightArray>(w);
    w2.set(name, copy);
    return forward(cfg, w2, x).totalLoss;
  };
  return (evalAt(h) - evalAt(-h)) / (2 * h);
}
