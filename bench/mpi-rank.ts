// Rank jobs of bench/mpi.ts, the same under worker_threads and under mpirun. 'allreduce': times the
// all-reduce of a float32 buffer. 'train': runs the trainer's rank with its collective timed, so that a
// step's time splits into computing, waiting at an all-reduce for the slower rank (a barrier put just
// before each all-reduce), and the all-reduce itself.
import type { Collective } from '../src/parallel/collective.ts';
import type { RankContext } from '../src/parallel/launch.ts';
import { runRank as trainRank, type TrainResult } from '../src/train/trainer.ts';

export type BenchJob = { kind: 'allreduce'; floats: number; reps: number } | { kind: 'train'; job: unknown };

export interface AllReduceTimes {
  /** Seconds of each timed all-reduce (rank 0). */
  seconds: number[];
}

export interface TimedTrain {
  tokensPerSecond: number;
  /** Seconds of the training loop, waiting at all-reduces, and in them (rank 0). */
  seconds: number;
  waiting: number;
  reducing: number;
}

class TimedCollective implements Collective {
  waiting = 0;
  reducing = 0;
  constructor(private readonly inner: Collective) {}
  get rank() {
    return this.inner.rank;
  }
  get worldSize() {
    return this.inner.worldSize;
  }
  allReduceSum(data: Float32Array): void {
    const t0 = performance.now();
    this.inner.barrier();
    const t1 = performance.now();
    this.inner.allReduceSum(data);
    this.waiting += t1 - t0;
    this.reducing += performance.now() - t1;
  }
  barrier(): void {
    this.inner.barrier();
  }
}

export async function runRank(ctx: RankContext): Promise<AllReduceTimes | TimedTrain> {
  const p = ctx.payload as BenchJob;
  if (p.kind === 'allreduce') {
    const data = new Float32Array(p.floats).fill(1);
    const seconds: number[] = [];
    for (let rep = 0; rep <= p.reps; rep++) {
      ctx.collective.barrier(); // every rank starts together: the time is the exchange, not a late peer
      const t0 = performance.now();
      ctx.collective.allReduceSum(data);
      if (rep > 0) seconds.push((performance.now() - t0) / 1000); // the first warms up
      data.fill(1);
    }
    return { seconds };
  }
  const timed = new TimedCollective(ctx.collective);
  const res = (await trainRank({ ...ctx, payload: p.job, collective: timed })) as TrainResult;
  return { tokensPerSecond: res.tokensPerSecond, seconds: res.seconds, waiting: timed.waiting / 1000, reducing: timed.reducing / 1000 };
}
