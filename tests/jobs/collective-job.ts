// A rank job for tests/parallel.test.ts and tests/mpi.test.ts: all-reduces a rank-dependent vector three
// times and returns it whole, or fails on purpose in the last rank while the others keep reducing; under
// MPI ('mpi') it also exercises the binding's float64 sum, broadcast and barrier.
import type { RankContext } from '../../src/parallel/launch.ts';
import { mpiWorld } from '../../src/parallel/mpi.ts';

/** Rank r's starting vector: values over seven decades, so that a wrong or missing term shows in the bits. */
export function startVector(rank: number, n: number): Float32Array {
  return Float32Array.from({ length: n }, (_, i) => Math.sin(i * 0.37 + rank) * 10 ** ((i % 7) - 3));
}

export async function runRank(ctx: RankContext): Promise<unknown> {
  const { rank, worldSize } = ctx.collective;
  const p = ctx.payload as { mode: 'sum' | 'fail' | 'mpi'; n: number };
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
  if (p.mode !== 'mpi') return data;
  // The binding itself: float64 sums (whole multiples of 1/4, so exact in any order), rank 0's bytes
  // broadcast over every rank's own, and a barrier every rank passes.
  const w = mpiWorld()!;
  const f64 = Float64Array.from({ length: 1000 }, (_, i) => (rank + 1) * i * 0.25 + (i % 3 === 0 ? 2 ** 40 : 0));
  w.mpi.allReduceSum(f64);
  const bytes = Uint8Array.from({ length: 3001 }, (_, i) => (i * 7 + rank * 13) & 255);
  w.mpi.broadcast(bytes, 0);
  w.mpi.barrier();
  return { f32: data, f64, bytes, size: w.size, localRank: w.localRank };
}
