// The data-parallel sampler both feature sources (the Arrow store and the online target) share: every
// epoch's seeded order of the samples, each rank's share of it, its cut into batches, and the read-ahead
// that loads the next batch while the trainer works on this one. Every rank computes the same order,
// so the ranks' shares are disjoint without talking to each other.
import { Rng } from '../util/random.ts';
import type { BatchOptions } from './feature-source.ts';

/** A seeded permutation of [0, n), different per epoch, identical for every rank. */
export function permutation(n: number, seed: number, epoch: number): Int32Array {
  let h = Math.imul((seed >>> 0) ^ 0x9e3779b9, 0x85ebca6b) ^ Math.imul((epoch >>> 0) + 0x632be5ab, 0xc2b2ae35);
  h ^= h >>> 16;
  h = Math.imul(h, 0x7feb352d);
  h ^= h >>> 15;
  const rng = new Rng(h >>> 0);
  const p = Int32Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) {
    const j = rng.int(i + 1);
    const t = p[i];
    p[i] = p[j];
    p[j] = t;
  }
  return p;
}

/**
 * Splits a global batch into `worldSize` equal-count shares with balanced total length (the work of a
 * rank grows with its tokens): longest first, each sample to the share with the fewest tokens that still
 * has room (ties: lower rank, earlier position). Every rank computes the same split. Returns positions.
 */
export function balancedShares(lengths: number[], worldSize: number): number[][] {
  if (lengths.length % worldSize !== 0)
    throw new Error(`balancedShares: ${lengths.length} samples do not split into ${worldSize} equal shares`);
  const per = lengths.length / worldSize;
  const shares: number[][] = Array.from({ length: worldSize }, () => []);
  const tokens = new Array(worldSize).fill(0);
  const order = lengths.map((_, i) => i).sort((a, b) => lengths[b] - lengths[a] || a - b);
  for (const i of order) {
    let best = -1;
    for (let r = 0; r < worldSize; r++) if (shares[r].length < per && (best < 0 || tokens[r] < tokens[best])) best = r;
    shares[best].push(i);
    tokens[best] += lengths[i];
  }
  return shares;
}

/**
 * Rank `rank`'s interleaved share of an epoch's order: positions rank, rank + W, ... With dropLast the
 * order is first cut to a multiple of W, so every rank gets the same count.
 */
export function rankSlice(order: Int32Array, rank: number, worldSize: number, dropLast: boolean): Int32Array {
  const n = dropLast ? order.length - (order.length % worldSize) : order.length;
  const out = new Int32Array(Math.max(0, Math.ceil((n - rank) / worldSize)));
  for (let i = rank, k = 0; i < n; i += worldSize) out[k++] = order[i];
  return out;
}

/** One rank's view of an epoch: the whole order, this rank's share of it, and how many batches the share makes. */
export interface EpochPlan {
  order: Int32Array;
  mine: Int32Array;
  batches: number;
  rank: number;
  worldSize: number;
  dropLast: boolean;
}

/** The epoch `opts` asks for over `size` samples (batch b of this rank is mine[b*B, (b+1)*B)). */
export function epochPlan(size: number, opts: BatchOptions): EpochPlan {
  const { batchSize } = opts;
  const worldSize = opts.worldSize ?? 1;
  const rank = opts.rank ?? 0;
  const dropLast = opts.dropLast ?? true;
  if (!Number.isInteger(batchSize) || batchSize < 1) throw new RangeError(`batchSize must be a positive integer, got ${batchSize}`);
  if (!Number.isInteger(worldSize) || worldSize < 1) throw new RangeError(`worldSize must be a positive integer, got ${worldSize}`);
  if (!Number.isInteger(rank) || rank < 0 || rank >= worldSize) throw new RangeError(`rank must be in [0, ${worldSize}), got ${rank}`);
  const order = opts.shuffle ? permutation(size, opts.seed, opts.epoch) : Int32Array.from({ length: size }, (_, i) => i);
  const mine = rankSlice(order, rank, worldSize, dropLast);
  const batches = dropLast ? Math.floor(mine.length / batchSize) : Math.ceil(mine.length / batchSize);
  return { order, mine, batches, rank, worldSize, dropLast };
}

/** Yields load(first), ..., load(end - 1) with one batch of read-ahead: the next loads while the caller works on this one. */
export async function* readAhead<T>(first: number, end: number, load: (b: number) => Promise<T>): AsyncGenerator<T> {
  const fetch = (b: number): Promise<T> => {
    const p = load(b);
    p.catch(() => {}); // a prefetch the consumer never awaits must not be an unhandled rejection
    return p;
  };
  let next = first < end ? fetch(first) : null;
  for (let b = first; b < end; b++) {
    const cur = next!;
    next = b + 1 < end ? fetch(b + 1) : null;
    yield await cur;
  }
}
