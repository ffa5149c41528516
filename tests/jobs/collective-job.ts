// A rank job for tests/parallel.test.ts: all-reduces a rank-dependent vector three times and returns it
// whole, or fails on purpose in the last rank while the others keep reducing.
import type { RankContext } from '../../src/parallel/launch.ts';

/** Rank r's starting vector: values over seven decades, so that a wrong or missing term shows in the bits. */
export function startVector(rank: number, n: number): Float32Array {
  return Float32Array.from({ length: n }, (_, i) => Math.sin(i * 0.37 + rank) * 10 ** ((i % 7) - 3));
}

export async function runRank(ctx: RankContext): Promise<unknown> {
  const { rank, worldSize } = ctx.collective;
  const p = ctx.payload as { mode: 'sum' | 'fail'; n: number };
  const data = startVector(rank, p.n);
  if (p.mode === 'fail') {
    // Every rank reduces together twice; then the last rank throws, and the others go on reducing, which
    // blocks them at once in a collective that rank never joins: only the launcher's abort ends them.
    for (let round = 0; ; round++) {
      if (round === 2 && rank === worldSize - 1) throw new Error('deliberate failure in the last rank');
      ctx.collective.allReduceSum(data);
    }
  }
  for (let round = 0; round < 3; round++) ctx.collective.allReduceSum(data);
  ctx.progress(1, { rank });
  return data;
}
