// EAGLE-3 speculative decoding of one prompt with the target in the loop (batch 1, as serving benchmarks
// report it).
//
// Sequence bookkeeping. Let x[0..N) be the committed tokens (prompt, then output). The target's KV cache
// holds x[0..N-1); the last committed token x[N-1] ("pending") enters the cache with the next verify pass.
// The drafter's context covers positions 0..N-2: position p has the target's features at p and the token
// x[p+1] after it (EAGLE-3's alignment), and its output at N-2 predicts x[N], the first draft token.
//
//   prefill   target forward over the prompt (cache, the drafter's feature layers); x[n] = the target's own
//             token (greedy or sampled); drafter context over positions 0..n-1 with ids x[1..n].
//   draft     chain: k steps, each token from the previous step's distribution (argmax, or sampled);
//             tree (EAGLE-2 dynamic tree, {topk, depth, tokens}): the top-k children of the top-k nodes of
//             each depth by cumulative draft log-probability, then the `tokens` best nodes overall.
//   verify    one target forward over [x[N-1], drafts...] with the cache (tree: treeMask = ancestors, and
//             positionIds = N-1 + depth). The accepted path is followed from the root while the target
//             agrees; the target's own token at the first disagreement (or after the last node) is the
//             bonus. The target cache keeps the accepted slots (truncate for a chain, select for a tree);
//             the drafter drops its draft entries and gets context entries for the newly committed
//             positions from the features the verify pass produced at those rows.
//
// Acceptance. Temperature 0: a draft token is accepted when it equals the target's argmax, so the output
// is the target's greedy output token for token. Temperature > 0 (optional top-p, applied to both target
// and draft as pickToken does): a chain uses speculative sampling (accept x with prob min(1, p(x)/q(x)),
// else resample from normalize(max(0, p - q)); the bonus after a fully accepted chain from p). A tree's
// children are deterministic (the draft's top-k), so each is a point-mass proposal: at a node the
// children are tried in order of score, child c accepted with probability p'(c) where p' is the target
// distribution with the children rejected so far removed and renormalised; when all are rejected the
// bonus is drawn from that residual. Both rules leave the output distributed exactly as target sampling.
//
// Bookkeeping (SpecResult): the first token comes from prefill and counts in no verify pass. Each verify
// pass adds its accepted drafts plus one target token, cut at a stop token or at maxNewTokens.
// tau = verifyTokens / verifyPasses, where verifyTokens = tokens of the output that verify passes added
// (= tokens.length - 1): the mean number of output tokens per target verify forward. acceptLengths[j] is
// the number of draft tokens the target accepted in pass j, before any cut. Per draft position i (depth
// i+1): drafted[i] = passes that proposed a token there, accepted[i] = passes whose accepted path reached it.
import * as tf from '@tensorflow/tfjs';
import { DraftKVCache, type Eagle3Draft, draftDecode } from '../draft/eagle3.ts';
import type { ExitPolicy, ExitSignals } from '../specexit/policy.ts';
import type { TargetModel, TargetOutput } from '../target/runtime.ts';
import type { Rng } from '../util/random.ts';
import { argmax, sampleIndex, tokenDistribution } from '../util/sampling.ts';

/** A drafter's next-token scores for one node: `logits[j]` belongs to target token `vocab[j]`. */
export interface DraftLogits {
  vocab: ArrayLike<number>;
  logits: Float32Array;
}

/**
 * What the decoder needs of a draft model. A node of the draft tree is the path of draft tokens after the
 * last committed token ([] is the root). The EAGLE-3 drafter implements it; tests inject scripted ones.
 */
export interface Drafter {
  /** Target decoder layers whose outputs (concatenated in this order) the drafter reads; [] for none. */
  readonly featureLayers: readonly number[];
  /** Forget everything (a new prompt, or the end of one): the next call is extend() with the prompt. */
  reset(): void;
  /**
   * Appends committed context: the next positions get the target's features [1, n, F] at them (null when
   * featureLayers is empty) and `nextIds`, the committed token after each. Everything drafted since the
   * previous extend is dropped. The root's distribution is the one after the last of these positions.
   */
  extend(nextIds: number[], features: tf.Tensor3D | null): void;
  /**
   * Next-token scores of these nodes (in one batched draft forward where possible). A node other than the
   * root can be expanded once its parent has been.
   */
  expand(paths: number[][]): DraftLogits[];
  dispose(): void;
}

/** EAGLE-2 dynamic tree: top-k children per expanded node, `depth` draft levels, `tokens` nodes kept (root excluded). */
export interface TreeShape {
  topk: number;
  depth: number;
  tokens: number;
}

export interface SpecOptions {
  maxNewTokens: number;
  /** Token ids that end the output (end-of-turn, eos); the stop token is kept. */
  stopIds: number[];
  /** Chain length k (default 7); ignored when `tree` is given. */
  draftSteps?: number;
  tree?: TreeShape | null;
  /** 0 (default) is greedy. */
  temperature?: number;
  topP?: number;
  /** Needed when temperature > 0. */
  rng?: Rng;
  /**
   * SpecExit: after each verify pass, the signals of the accepted draft tokens (from the target features
   * at their positions) go to the exit policy; on an exit the accepted tokens are cut after the step split
   * and </think> replaces the bonus token.
   */
  exit?: { policy: ExitPolicy; signals: (features: tf.Tensor3D) => ExitSignals[] };
}

export interface SpecResult {
  /** New tokens (stop token included when reached). */
  tokens: number[];
  finish: 'stop' | 'length';
  /** Target forwards after prefill (each verifies one chain or tree). */
  verifyPasses: number;
  /** Output tokens those passes added: tokens.length - 1 (the first token comes from prefill). */
  verifyTokens: number;
  /** verifyTokens / verifyPasses; null when no verify pass ran. */
  tau: number | null;
  /** Draft tokens accepted in each pass (before a stop or length cut). */
  acceptLengths: number[];
  /** Per draft position (depth 1, 2, ...): passes that drafted a token there. */
  drafted: number[];
  /** Per draft position: passes whose accepted path reached it. */
  accepted: number[];
  /** Early exits from thinking taken (SpecExit). */
  exits: number;
  /** Wall time of the whole decode, and its parts (target prefill, drafter calls, target verify passes). */
  seconds: number;
  prefillSeconds: number;
  draftSeconds: number;
  verifySeconds: number;
}

/** Parses "topk,depth,tokens". */
export function parseTreeShape(s: string): TreeShape {
  const parts = s.split(',').map((x) => x.trim());
  const nums = parts.map(Number);
  if (parts.length !== 3 || !nums.every((x) => Number.isInteger(x) && x >= 1))
    throw new Error(`tree "${s}": expected "topk,depth,tokens", three positive integers (e.g. "8,5,48")`);
  return { topk: nums[0], depth: nums[1], tokens: nums[2] };
}

/** The k best columns (ties by index) with their log-probabilities under softmax(logits). */
function topChildren(d: DraftLogits, k: number): { token: number; logp: number }[] {
  const { logits, vocab } = d;
  let max = -Infinity;
  for (const x of logits) if (x > max) max = x;
  let s = 0;
  for (const x of logits) s += Math.exp(x - max);
  const lse = max + Math.log(s);
  const best: number[] = [];
  for (let j = 0; j < logits.length; j++) {
    if (logits[j] === -Infinity) continue;
    if (best.length === k && logits[j] <= logits[best[k - 1]]) continue;
    let at = best.length;
    while (at > 0 && logits[best[at - 1]] < logits[j]) at--;
    best.splice(at, 0, j);
    if (best.length > k) best.pop();
  }
  return best.map((j) => ({ token: vocab[j], logp: Math.min(0, logits[j] - lse) }));
}

// ----------------------------------------------------------------------------------------------------
// Draft trees

/** Draft nodes in verify order (parents before children); node i is verify row i + 1, row 0 is the root. */
interface DraftTree {
  tokens: number[];
  /** Parent node index, -1 for the root. */
  parents: number[];
  depths: number[];
  /** Chain sampling: the proposal distribution each token was drawn from (over `qVocab[i]`) and its column. */
  q?: { vocab: ArrayLike<number>; p: Float64Array; col: number }[];
  /** A chain (parents i-1): verified with the causal mask and truncate. */
  chain: boolean;
}

function chainTree(drafter: Drafter, k: number, greedy: boolean, temperature: number, topP: number, rng?: Rng): DraftTree {
  const tokens: number[] = [];
  const q: NonNullable<DraftTree['q']> = [];
  for (let i = 0; i < k; i++) {
    const [d] = drafter.expand([tokens.slice()]);
    let col: number;
    if (greedy) col = argmax(d.logits);
    else {
      const p = tokenDistribution(d.logits, temperature, topP);
      col = sampleIndex(p, rng!);
      q.push({ vocab: d.vocab, p, col });
    }
    tokens.push(d.vocab[col]);
  }
  return { tokens, parents: tokens.map((_, i) => i - 1), depths: tokens.map((_, i) => i + 1), chain: true, ...(greedy ? {} : { q }) };
}

/** EAGLE-2's dynamic tree (see TreeShape). */
function dynamicTree(drafter: Drafter, shape: TreeShape): DraftTree {
  interface Node {
    token: number;
    parent: number;
    depth: number;
    score: number;
    path: number[];
  }
  const nodes: Node[] = [];
  const [root] = drafter.expand([[]]);
  let frontier: number[] = [];
  for (const c of topChildren(root, shape.topk)) {
    frontier.push(nodes.length);
    nodes.push({ token: c.token, parent: -1, depth: 1, score: c.logp, path: [c.token] });
  }
  for (let depth = 2; depth <= shape.depth && frontier.length; depth++) {
    const expanded = drafter.expand(frontier.map((i) => nodes[i].path));
    const candidates: number[] = [];
    frontier.forEach((i, j) => {
      for (const c of topChildren(expanded[j], shape.topk)) {
        candidates.push(nodes.length);
        nodes.push({ token: c.token, parent: i, depth, score: nodes[i].score + c.logp, path: [...nodes[i].path, c.token] });
      }
    });
    frontier = candidates.sort((a, b) => nodes[b].score - nodes[a].score || a - b).slice(0, shape.topk);
  }
  // The `tokens` best nodes; a parent scores at least as high as its children and is shallower, so it
  // ranks first (ancestors are added anyway, should rounding ever say otherwise).
  const ranked = nodes.map((_, i) => i).sort((a, b) => nodes[b].score - nodes[a].score || nodes[a].depth - nodes[b].depth || a - b);
  const keep = new Set(ranked.slice(0, shape.tokens));
  for (const i of [...keep]) for (let p = nodes[i].parent; p >= 0 && !keep.has(p); p = nodes[p].parent) keep.add(p);
  const order = [...keep].sort((a, b) => nodes[a].depth - nodes[b].depth || nodes[b].score - nodes[a].score || a - b);
  const index = new Map(order.map((n, i) => [n, i]));
  return {
    tokens: order.map((i) => nodes[i].token),
    parents: order.map((i) => (nodes[i].parent < 0 ? -1 : index.get(nodes[i].parent)!)),
    depths: order.map((i) => nodes[i].depth),
    chain: false,
  };
}

/** treeMask over [root, nodes...]: each row sees the root, its ancestors and itself. */
function treeMask(tree: DraftTree): number[][] {
  const T = tree.tokens.length + 1;
  const mask = Array.from({ length: T }, () => new Array(T).fill(0));
  mask[0][0] = 1;
  tree.parents.forEach((parent, i) => {
    const row = mask[i + 1];
    row[i + 1] = 1;
    for (let p = parent; p >= 0; p = tree.parents[p]) row[p + 1] = 1;
    row[0] = 1;
  });
  return mask;
}

// ----------------------------------------------------------------------------------------------------
// Verification

interface Verdict {
  /** Accepted node indices, root to leaf. */
  path: number[];
  bonus: number;
}

function childrenOf(tree: DraftTree): number[][] {
  const children: number[][] = Array.from({ length: tree.tokens.length + 1 }, () => []);
  tree.parents.forEach((p, i) => children[p + 1].push(i));
  return children;
}

function verifyGreedy(tree: DraftTree, targetArgmax: ArrayLike<number>): Verdict {
  const children = childrenOf(tree);
  const path: number[] = [];
  let row = 0;
  for (;;) {
    const want = targetArgmax[row];
    const next = children[row].find((i) => tree.tokens[i] === want);
    if (next === undefined) return { path, bonus: want };
    path.push(next);
    row = next + 1;
  }
}

/** Chain speculative sampling: accept x with prob min(1, p(x)/q(x)), else resample from max(0, p - q). */
function verifyChainSampled(tree: DraftTree, targetP: (row: number) => Float64Array, rng: Rng): Verdict {
  const path: number[] = [];
  for (let i = 0; i < tree.tokens.length; i++) {
    const p = targetP(i);
    const x = tree.tokens[i];
    const { vocab, p: q, col } = tree.q![i];
    if (rng.next() * q[col] < p[x]) {
      path.push(i);
      continue;
    }
    const residual = Float64Array.from(p);
    for (let j = 0; j < vocab.length; j++) residual[vocab[j]] = Math.max(0, p[vocab[j]] - q[j]);
    let mass = 0;
    for (const r of residual) mass += r;
    // p <= q everywhere (rounding only: the rejection had probability ~0): fall back to p.
    return { path, bonus: sampleIndex(mass > 1e-12 ? residual : p, rng) };
  }
  return { path, bonus: sampleIndex(targetP(tree.tokens.length), rng) };
}

/** Tree sampling with point-mass proposals: children tried in score order against the residual target distribution. */
function verifyTreeSampled(tree: DraftTree, targetP: (row: number) => Float64Array, rng: Rng): Verdict {
  const children = childrenOf(tree);
  const path: number[] = [];
  let row = 0;
  for (;;) {
    const p = Float64Array.from(targetP(row));
    let mass = 1;
    let next = -1;
    for (const c of children[row]) {
      const x = tree.tokens[c];
      if (rng.next() * mass < p[x]) {
        next = c;
        break;
      }
      mass -= p[x];
      p[x] = 0;
    }
    if (next < 0) {
      let rest = 0;
      for (const x of p) rest += x;
      // Only rounding can leave no mass (a child holding it all is always accepted): take the likeliest.
      return { path, bonus: rest > 1e-12 ? sampleIndex(p, rng) : argmax(targetP(row)) };
    }
    path.push(next);
    row = next + 1;
  }
}

// ----------------------------------------------------------------------------------------------------
// The decoder

function disposeOutput(o: TargetOutput): void {
  tf.dispose([o.finalNormed, ...(o.logits ? [o.logits] : []), ...o.layers.values()]);
}

/** The drafter's features [1, rows, F] from a target output (all rows when `rows` is null). */
function featuresOf(o: TargetOutput, layers: readonly number[], rows: number[] | null): tf.Tensor3D | null {
  if (!layers.length) return null;
  return tf.tidy(() => {
    const parts = layers.map((l) => o.layers.get(l)!);
    const all = parts.length === 1 ? tf.clone(parts[0]) : tf.concat(parts, -1);
    return (rows ? tf.gather(all, tf.tensor1d(rows, 'int32'), 1) : all) as tf.Tensor3D;
  });
}

/** Decodes one prompt speculatively; see the file comment for the algorithm and the bookkeeping. */
export function speculativeDecode(target: TargetModel, drafter: Drafter, prompt: number[], opts: SpecOptions): SpecResult {
  const t0 = performance.now();
  const temperature = opts.temperature ?? 0;
  const topP = opts.topP ?? 1;
  const greedy = !(temperature > 0);
  const rng = opts.rng;
  if (!greedy && !rng) throw new Error('speculative sampling needs an rng');
  if (!prompt.length) throw new Error('speculative decoding: empty prompt');
  if (!(Number.isInteger(opts.maxNewTokens) && opts.maxNewTokens >= 1))
    throw new Error(`maxNewTokens is ${opts.maxNewTokens}; expected a positive integer`);
  const tree = opts.tree ?? null;
  const k = opts.draftSteps ?? 7;
  if (!tree && !(Number.isInteger(k) && k >= 1)) throw new Error(`draftSteps is ${k}; expected a positive integer`);
  if (tree)
    for (const [key, v] of Object.entries(tree))
      if (!(Number.isInteger(v) && v >= 1)) throw new Error(`tree ${key} is ${v}; expected a positive integer`);
  const maxDepth = tree ? tree.depth : k;
  const V = target.config.vocabSize;
  const layers = [...drafter.featureLayers];
  const stop = new Set(opts.stopIds);

  const result: SpecResult = {
    tokens: [],
    finish: 'length',
    verifyPasses: 0,
    verifyTokens: 0,
    tau: null,
    acceptLengths: [],
    drafted: new Array(maxDepth).fill(0),
    accepted: new Array(maxDepth).fill(0),
    exits: 0,
    seconds: 0,
    prefillSeconds: 0,
    draftSeconds: 0,
    verifySeconds: 0,
  };
  /** Appends tokens to the output until a stop token or the length limit; true when decoding is over. */
  const emit = (tokens: number[]): boolean => {
    for (const t of tokens) {
      result.tokens.push(t);
      if (stop.has(t)) {
        result.finish = 'stop';
        return true;
      }
      if (result.tokens.length >= opts.maxNewTokens) return true;
    }
    return false;
  };
  const rowDistribution = (all: Float32Array, row: number) => tokenDistribution(all.subarray(row * V, (row + 1) * V), temperature, topP);

  const cache = target.newCache(1);
  drafter.reset();
  try {
    // Prefill.
    let t = performance.now();
    const n = prompt.length;
    const pre = target.forward({ ids: [prompt] }, { layers, cache });
    let first: number;
    let features: tf.Tensor3D | null = null;
    let over: boolean;
    try {
      const lastRow = tf.tidy(() => pre.logits!.slice([0, n - 1, 0], [1, 1, V]));
      const row = lastRow.dataSync() as Float32Array;
      lastRow.dispose();
      first = greedy ? argmax(row) : sampleIndex(tokenDistribution(row, temperature, topP), rng!);
      over = emit([first]);
      if (!over) features = featuresOf(pre, layers, null);
    } finally {
      disposeOutput(pre);
    }
    result.prefillSeconds = (performance.now() - t) / 1000;
    if (over) return result;

    t = performance.now();
    try {
      opts.exit?.policy.observe([...prompt, first]);
      drafter.extend([...prompt.slice(1), first], features);
    } finally {
      features?.dispose();
    }
    result.draftSeconds += (performance.now() - t) / 1000;
    let pending = first;
    let committed = n + 1;

    for (;;) {
      // Draft.
      t = performance.now();
      const draft = tree ? dynamicTree(drafter, tree) : chainTree(drafter, k, greedy, temperature, topP, rng);
      result.draftSeconds += (performance.now() - t) / 1000;

      // Verify.
      t = performance.now();
      const base = committed - 1; // slots in the target cache
      const ids = [pending, ...draft.tokens];
      const positionIds = [base, ...draft.depths.map((d) => base + d)];
      const out = target.forward(
        { ids: [ids], positionIds: [positionIds], ...(draft.chain ? {} : { treeMask: treeMask(draft) }) },
        { layers, cache },
      );
      let verdict: Verdict;
      let nextFeatures: tf.Tensor3D | null = null;
      let done: boolean;
      try {
        if (greedy) {
          const am = tf.tidy(() => tf.argMax(out.logits!, -1));
          const targetArgmax = am.dataSync() as Int32Array;
          am.dispose();
          verdict = verifyGreedy(draft, targetArgmax);
        } else {
          const all = out.logits!.dataSync() as Float32Array;
          const rowP = (row: number) => rowDistribution(all, row);
          verdict = draft.chain ? verifyChainSampled(draft, rowP, rng!) : verifyTreeSampled(draft, rowP, rng!);
        }
        let { path, bonus } = verdict;
        if (opts.exit) {
          const policy = opts.exit.policy;
          const acceptedTokens = path.map((i) => draft.tokens[i]);
          if (policy.isThinking && path.length) {
            const feats = featuresOf(
              out,
              layers,
              path.map((i) => i + 1),
            );
            const signals = feats ? opts.exit.signals(feats) : [];
            feats?.dispose();
            const d = policy.step(acceptedTokens, signals);
            if (d.exit) {
              path = path.slice(0, d.keep);
              bonus = d.emit;
              result.exits++;
            }
          } else policy.observe(acceptedTokens);
          policy.observe([bonus]);
          verdict = { ...verdict, path, bonus };
        }
        if (draft.chain) cache.truncate(base + 1 + path.length);
        else cache.select([...Array.from({ length: base + 1 }, (_, i) => i), ...path.map((i) => base + 1 + i)]);

        result.verifyPasses++;
        result.acceptLengths.push(path.length);
        for (const d of new Set(draft.depths)) result.drafted[d - 1]++;
        for (let d = 0; d < path.length; d++) result.accepted[d]++;
        const newTokens = [...path.map((i) => draft.tokens[i]), bonus];
        done = emit(newTokens);
        if (!done) {
          nextFeatures = featuresOf(out, layers, [0, ...path.map((i) => i + 1)]);
          pending = bonus;
          committed += newTokens.length;
        }
      } finally {
        disposeOutput(out);
      }
      result.verifySeconds += (performance.now() - t) / 1000;
      if (done) break;

      t = performance.now();
      try {
        drafter.extend([...verdict.path.map((i) => draft.tokens[i]), verdict.bonus], nextFeatures);
      } finally {
        nextFeatures?.dispose();
      }
      result.draftSeconds += (performance.now() - t) / 1000;
    }
    return result;
  } finally {
    cache.dispose();
    drafter.reset();
    result.verifyTokens = Math.max(0, result.tokens.length - 1);
    result.tau = result.verifyPasses ? result.verifyTokens / result.verifyPasses : null;
    result.seconds = (performance.now() - t0) / 1000;
  }
}

// ----------------------------------------------------------------------------------------------------
// The EAGLE-3 drafter

interface DraftNode {
  /** Draft-cache slots of this node's ancestors and itself (empty for the root). */
  slots: number[];
  /** Pre-norm output [1, 1, H]: the hidden input of its children's expansion. */
  out: tf.Tensor3D;
  logits: Float32Array;
}

/**
 * The EAGLE-3 draft as a Drafter. Context position p enters with hidden fc(features_p) and the embedding
 * of the committed token after p; a tree node at depth d (position ctx-1+d) enters with its parent's output
 * as hidden and the embedding of its own token, seeing the context and its ancestors only (TTT's causal
 * plus diagonal pattern, see draftDecode). Draft tokens are target ids (`used` maps draft ids to them).
 */
export class Eagle3Drafter implements Drafter {
  readonly featureLayers: readonly number[];
  private readonly cache = new DraftKVCache();
  private contextLength = 0;
  private readonly nodes = new Map<string, DraftNode>();

  /** `embed`: the target's input embedding table [V, H]; `used`: target id of each draft-vocabulary id. */
  constructor(
    readonly draft: Eagle3Draft,
    private readonly embed: tf.Tensor2D,
    readonly used: Int32Array,
  ) {
    if (used.length !== draft.config.draftVocabSize)
      throw new Error(`draft vocabulary map has ${used.length} ids; the draft has ${draft.config.draftVocabSize}`);
    if (embed.shape[1] !== draft.config.hiddenSize)
      throw new Error(`embedding table is ${embed.shape[1]} wide; the draft's hidden size is ${draft.config.hiddenSize}`);
    this.featureLayers = [...draft.config.auxLayerIds];
  }

  private clearNodes(): void {
    for (const node of this.nodes.values()) node.out.dispose();
    this.nodes.clear();
  }

  reset(): void {
    this.clearNodes();
    this.cache.dispose();
    this.contextLength = 0;
  }

  extend(nextIds: number[], features: tf.Tensor3D | null): void {
    const c = this.draft.config;
    const n = nextIds.length;
    if (features?.shape[0] !== 1 || features.shape[1] !== n || features.shape[2] !== c.auxLayerIds.length * c.targetHiddenSize) {
      throw new Error(
        `EAGLE-3 drafter: features must be [1, ${n}, ${c.auxLayerIds.length * c.targetHiddenSize}], got ${features ? `[${features.shape}]` : 'none'}`,
      );
    }
    this.clearNodes();
    this.cache.truncate(this.contextLength);
    const hidden = this.draft.projectFeatures(features);
    const positions = Array.from({ length: n }, (_, i) => this.contextLength + i);
    const { out, logits } = draftDecode(this.draft, this.embed, this.cache, { ids: nextIds, hidden, positions });
    const Vd = c.draftVocabSize;
    const last = tf.tidy(() => logits.slice([0, n - 1, 0], [1, 1, Vd]));
    this.nodes.set('', { slots: [], out: out.slice([0, n - 1, 0], [1, 1, -1]), logits: last.dataSync() as Float32Array });
    tf.dispose([hidden, out, logits, last]);
    this.contextLength += n;
  }

  expand(paths: number[][]): DraftLogits[] {
    const todo: { key: string; path: number[]; parent: DraftNode }[] = [];
    for (const path of paths) {
      const key = path.join(',');
      if (this.nodes.has(key) || todo.some((t) => t.key === key)) continue;
      if (!path.length) throw new Error('EAGLE-3 drafter: no context yet (extend first)');
      const parent = this.nodes.get(path.slice(0, -1).join(','));
      if (!parent) throw new Error(`EAGLE-3 drafter: node [${path}] expanded before its parent`);
      todo.push({ key, path, parent });
    }
    if (todo.length) {
      const m = todo.length;
      const S = this.cache.length;
      const visible = todo.map(({ parent }, i) => {
        const row = new Array(S + m).fill(0);
        for (let s = 0; s < this.contextLength; s++) row[s] = 1;
        for (const s of parent.slots) row[s] = 1;
        row[S + i] = 1;
        return row;
      });
      const hidden =
        m === 1
          ? todo[0].parent.out
          : (tf.concat(
              todo.map((t) => t.parent.out),
              1,
            ) as tf.Tensor3D);
      const { out, logits } = draftDecode(this.draft, this.embed, this.cache, {
        ids: todo.map((t) => t.path[t.path.length - 1]),
        hidden,
        positions: todo.map((t) => this.contextLength - 1 + t.path.length),
        visible,
      });
      const data = logits.dataSync() as Float32Array;
      const Vd = this.draft.config.draftVocabSize;
      const outs = m === 1 ? [tf.clone(out)] : tf.split(out, m, 1);
      todo.forEach((t, i) =>
        this.nodes.set(t.key, { slots: [...t.parent.slots, S + i], out: outs[i] as tf.Tensor3D, logits: data.slice(i * Vd, (i + 1) * Vd) }),
      );
      tf.dispose([out, logits, ...(m === 1 ? [] : [hidden])]);
    }
    return paths.map((p) => ({ vocab: this.used, logits: this.nodes.get(p.join(','))!.logits }));
  }

  /** SpecExit signals from target features [1, n, k*Ht]: sigmoid / sigmoid / exp of the signal logits. */
  signals(features: tf.Tensor3D): ExitSignals[] {
    const z = tf.tidy(() => this.draft.signalLogits(features)).dataSync() as Float32Array;
    const sigmoid = (x: number) => 1 / (1 + Math.exp(-x));
    return Array.from({ length: z.length / 3 }, (_, i) => ({
      confidence: sigmoid(z[3 * i]),
      progress: sigmoid(z[3 * i + 1]),
      remaining: Math.exp(z[3 * i + 2]),
    }));
  }

  dispose(): void {
    this.reset();
  }
}
