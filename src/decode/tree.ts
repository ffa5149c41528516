// Draft trees: what one draft step proposes for the target to verify, built from a Drafter's scores.
//   chain  k steps, each token from the previous step's distribution (argmax, or sampled with the same
//          temperature / top-p as the target);
//   tree   EAGLE-2's dynamic tree, {topk, depth, tokens}: the top-k children of the top-k nodes of each
//          depth by cumulative draft log-probability, then the `tokens` best nodes overall.
// A tree is verified in one target forward under treeMask (each node sees the root and its ancestors).
import { argmax, type Sampling, sampleIndex, tokenDistribution } from '../util/sampling.ts';
import type { DraftLogits, Drafter } from './drafter.ts';

/** EAGLE-2 dynamic tree: top-k children per expanded node, `depth` draft levels, `tokens` nodes kept (root excluded). */
export interface TreeShape {
  topk: number;
  depth: number;
  tokens: number;
}

/** Parses "topk,depth,tokens". */
export function parseTreeShape(s: string): TreeShape {
  const parts = s.split(',').map((x) => x.trim());
  const nums = parts.map(Number);
  if (parts.length !== 3 || !nums.every((x) => Number.isInteger(x) && x >= 1))
    throw new Error(`tree "${s}": expected "topk,depth,tokens", three positive integers (e.g. "8,5,48")`);
  return { topk: nums[0], depth: nums[1], tokens: nums[2] };
}

/** Draft nodes in verify order (parents before children); node i is verify row i + 1, row 0 is the root. */
export interface DraftTree {
  tokens: number[];
  /** Parent node index, -1 for the root. */
  parents: number[];
  depths: number[];
  /** Chain sampling: the proposal distribution each token was drawn from (over `vocab`) and its column. */
  q?: { vocab: ArrayLike<number>; p: Float64Array; col: number }[];
  /** A chain (parents i-1): verified with the causal mask and truncate. */
  chain: boolean;
}

/** A chain of k tokens, each from the previous step's distribution: argmax when greedy (`sampling` null), else sampled. */
export function chainTree(drafter: Drafter, k: number, sampling: Sampling | null): DraftTree {
  const tokens: number[] = [];
  const q: NonNullable<DraftTree['q']> = [];
  for (let i = 0; i < k; i++) {
    const [d] = drafter.expand([tokens.slice()]);
    let col: number;
    if (!sampling) col = argmax(d.logits);
    else {
      const p = tokenDistribution(d.logits, sampling.temperature, sampling.topP);
      col = sampleIndex(p, sampling.rng);
      q.push({ vocab: d.vocab, p, col });
    }
    tokens.push(d.vocab[col]);
  }
  return { tokens, parents: tokens.map((_, i) => i - 1), depths: tokens.map((_, i) => i + 1), chain: true, ...(sampling ? { q } : {}) };
}

/** EAGLE-2's dynamic tree (see TreeShape). */
export function dynamicTree(drafter: Drafter, shape: TreeShape): DraftTree {
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
export function treeMask(tree: DraftTree): number[][] {
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

/** Child node indices of each verify row (row 0 the root, row i + 1 node i). */
export function childrenOf(tree: DraftTree): number[][] {
  const children: number[][] = Array.from({ length: tree.tokens.length + 1 }, () => []);
  tree.parents.forEach((p, i) => children[p + 1].push(i));
  return children;
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
