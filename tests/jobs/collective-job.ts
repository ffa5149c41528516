// A rank job for tests/parallel.test.ts: all-reduces a rank-dependent vector, or fails on purpose.
import type { RankContext } from '../../src/parallel/launch.ts';

export async function runRank(ctx: RankContext): Promise<unknown> {
  const { rank, worldSize } = ctx.collective;
  const p = ctx.payload as { mode: 'sum' | 'fail'; n: number };
  if (p.mode === 'fail' && rank === worldSize - 1) {
    await new Promise((r) => setTimeout(r, 100));
    throw new Error('deliberate failure in the last rank');
  }
  // Values whose float sum depends on the order of addition, to catch a rank-dependent order.
  const data = Float32Array.from({ length: p.n }, (_, i) => Math.sin(i * 0.37 + rank) * 10 ** ((i % 7) - 3));
  for (let round = 0; round < (p.mode === 'fail' ? 1000 : 3); round++) ctx.collective.allReduceSum(data);
  ctx.progress(1, { rank });
  return Array.from(data.subarray(0, 8)).concat(
    data.length,
    Array.from(data).reduce((a, b) => a + b, 0),
  );
}
