// Token sampling maths shared by plain generation (target/generate.ts) and speculative decoding (decode/):
// argmax, the temperature / top-p distribution, and draws from it. It sits low in the tree so that target/
// and decode/ both use this one implementation, and speculative sampling reproduces exactly the
// distribution plain sampling draws from.
import type { Rng } from './random.ts';

/** Index of the largest value (the first one on ties). */
export function argmax(x: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < x.length; i++) if (x[i] > x[best]) best = i;
  return best;
}

/**
 * Temperature and top-p over logits: `weights` = exp((logits - max) / temperature) (unnormalised); the
 * kept set is the smallest set of most likely tokens whose mass reaches topP (ties by index), i.e.
 * order[0..keep); `sum` is the kept weight. `order` (most likely first) is only computed when topP < 1 or
 * `sorted` asks for it; otherwise it is null and every token is kept.
 */
function nucleus(
  logits: ArrayLike<number>,
  temperature: number,
  topP: number,
  sorted: boolean,
): { weights: Float64Array; order: number[] | null; keep: number; sum: number } {
  const n = logits.length;
  let max = -Infinity;
  for (let i = 0; i < n; i++) max = Math.max(max, logits[i]);
  const weights = new Float64Array(n);
  let sum = 0;
  for (let i = 0; i < n; i++) sum += weights[i] = Math.exp((logits[i] - max) / temperature);
  if (!(sorted || topP < 1)) return { weights, order: null, keep: n, sum };
  const order = Array.from({ length: n }, (_, i) => i).sort((a, b) => weights[b] - weights[a] || a - b);
  let keep = n;
  if (topP < 1) {
    let acc = 0;
    for (let k = 0; k < n; k++) {
      acc += weights[order[k]] / sum;
      if (acc >= topP) {
        keep = k + 1;
        break;
      }
    }
    sum = 0;
    for (let k = 0; k < keep; k++) sum += weights[order[k]];
  }
  return { weights, order, keep, sum };
}

/**
 * The distribution pickToken samples from: softmax(logits / temperature), cut to the smallest set of most
 * likely tokens whose mass reaches topP (ties by index), renormalised. Float64, same length as logits.
 */
export function tokenDistribution(logits: ArrayLike<number>, temperature: number, topP = 1): Float64Array {
  const { weights: p, order, keep, sum } = nucleus(logits, temperature, topP, false);
  if (order) for (let k = keep; k < order.length; k++) p[order[k]] = 0;
  for (let i = 0; i < p.length; i++) p[i] /= sum;
  return p;
}

/** Samples a token from logits (greedy at temperature 0; nucleus sampling with topP < 1). */
export function pickToken(logits: Float32Array, temperature = 0, topP = 1, rng?: Rng): number {
  if (!(temperature > 0)) return argmax(logits);
  if (!rng) throw new Error('sampling needs an rng');
  // Walks the kept tokens most likely first (a fixed draw order: seeded outputs depend on it).
  const { weights, order, keep, sum } = nucleus(logits, temperature, topP, true);
  let u = rng.next() * sum;
  for (let k = 0; k < keep; k++) {
    u -= weights[order![k]];
    if (u <= 0) return order![k];
  }
  return order![keep - 1];
}

/** Draws an index from an unnormalised non-negative distribution. */
export function sampleIndex(p: ArrayLike<number>, rng: Rng): number {
  let sum = 0;
  let last = -1;
  for (let i = 0; i < p.length; i++) {
    sum += p[i];
    if (p[i] > 0) last = i;
  }
  if (!(sum > 0)) throw new Error('sampling from an empty distribution');
  let u = rng.next() * sum;
  for (let i = 0; i < p.length; i++) {
    if (p[i] <= 0) continue;
    u -= p[i];
    if (u < 0) return i;
  }
  return last;
}

/** Sampling settings of a decode (temperature > 0); greedy decoding has none. */
export interface Sampling {
  temperature: number;
  topP: number;
  rng: Rng;
}
