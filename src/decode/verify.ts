// Verification rules: which draft tokens the target accepts, from its logits over [root, nodes...] in one
// verify pass, and the target's own (bonus) token after them.
//
// Temperature 0: a draft token is accepted when it equals the target's argmax, so the output is the
// target's greedy output token for token. Temperature > 0 (optional top-p, applied to both target and
// draft as pickToken does): a chain uses speculative sampling (accept x with prob min(1, p(x)/q(x)), else
// resample from normalize(max(0, p - q)); the bonus after a fully accepted chain from p). A tree's
// children are deterministic (the draft's top-k), so each is a point-mass proposal: at a node the
// children are tried in order of score, child c accepted with probability p'(c) where p' is the target
// distribution with the children rejected so far removed and renormalised; when all are rejected the
// bonus is drawn from that residual. Both rules leave the output distributed exactly as target sampling.
import * as tf from '@tensorflow/tfjs';
import type { Rng } from '../util/random.ts';
import { argmax, type Sampling, sampleIndex, tokenDistribution } from '../util/sampling.ts';
import { type DraftTree, childrenOf } from './tree.ts';

export interface Verdict {
  /** Accepted node indices, root to leaf. */
  path: number[];
  bonus: number;
}

/** Greedy: from the root, follow the child equal to the target's argmax while there is one. */
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

/**
 * The verdict of one verify pass: `logits` [1, rows, V] are the target's over [root, nodes...]; greedy
 * when `sampling` is null, else the chain or tree sampling rule.
 */
export function verifyDraft(draft: DraftTree, logits: tf.Tensor, V: number, sampling: Sampling | null): Verdict {
  if (!sampling) {
    const am = tf.tidy(() => tf.argMax(logits, -1));
    const targetArgmax = am.dataSync() as Int32Array;
    am.dispose();
    return verifyGreedy(draft, targetArgmax);
  }
  const { temperature, topP, rng } = sampling;
  const all = logits.dataSync() as Float32Array;
  const rowP = (row: number) => tokenDistribution(all.subarray(row * V, (row + 1) * V), temperature, topP);
  return draft.chain ? verifyChainSampled(draft, rowP, rng) : verifyTreeSampled(draft, rowP, rng);
}
