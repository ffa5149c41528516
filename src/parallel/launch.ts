// Launches a job's ranks. Under mpirun or srun each process is one rank (mpi.ts), and the launch runs this
// process's rank in place. Otherwise it starts N ranks as worker_threads, each with its own tfjs backend,
// and supervises them: rank 0's progress and log lines come to the main thread; the first rank to fail
// stops every rank (blocked ones are released through the shared abort flag) and its error is what the
// launch rejects with.
import { Worker } from 'node:worker_threads';
import { type Collective, SoloCollective, abortAll, createSharedBuffers } from './collective.ts';
import { MpiCollective, type MpiWorld, mpiWorld, shareFromRankZero } from './mpi.ts';

export interface RankContext {
  collective: Collective;
  payload: unknown;
  /** Rank 0 reports progress and log lines through these (other ranks may call them; they are ignored). */
  progress: (done: number, fields: Record<string, string | number>) => void;
  log: (message: string) => void;
}

export type RankMessage =
  | { type: 'progress'; done: number; fields: Record<string, string | number> }
  | { type: 'log'; message: string }
  | { type: 'done'; result: unknown }
  | { type: 'error'; message: string; stack?: string };

export class RankError extends Error {
  constructor(
    readonly rank: number,
    message: string,
    readonly rankStack?: string,
  ) {
    super(`rank ${rank}: ${message}`);
  }
}

export interface LaunchOptions {
  /** URL of a module exporting `runRank(ctx: RankContext): Promise<unknown>`. */
  module: string;
  worldSize: number;
  payload: unknown;
  onProgress?: (done: number, fields: Record<string, string | number>) => void;
  onLog?: (message: string) => void;
}

/**
 * Runs the job on worldSize ranks; resolves with rank 0's result (under MPI: this process's rank's). One
 * rank runs in this thread.
 */
export async function launchRanks(opts: LaunchOptions): Promise<unknown> {
  const w = mpiWorld();
  if (w) return runMpiRank(w, opts);
  return (await launchAllRanks(opts))[0];
}

/**
 * `f` done once for the whole job, outside its ranks (a run folder's lock, a regeneration, a weight
 * conversion): here under worker_threads; under MPI on rank 0 while the other processes wait, each getting
 * rank 0's result (as JSON). A throw on rank 0 ends the job (mpi.ts).
 */
export async function onceForJob<T>(f: () => T | Promise<T>): Promise<T> {
  const w = mpiWorld();
  if (!w || w.size === 1) return f();
  return shareFromRankZero(w, w.rank === 0 ? await f() : (null as T));
}

/** This process's rank of an MPI job. */
async function runMpiRank(w: MpiWorld, opts: LaunchOptions): Promise<unknown> {
  if (opts.worldSize !== w.size)
    throw new Error(
      `the job asks for ${opts.worldSize} rank(s), but mpirun/srun started ${w.size} process(es): under MPI each process is one rank`,
    );
  const job = await import(opts.module);
  try {
    return await job.runRank({
      collective: w.size === 1 ? new SoloCollective() : new MpiCollective(w),
      payload: opts.payload,
      progress: (w.rank === 0 && opts.onProgress) || (() => {}),
      log: (w.rank === 0 && opts.onLog) || (() => {}),
    } satisfies RankContext);
  } catch (e) {
    throw w.size > 1 ? new RankError(w.rank, (e as Error).message ?? String(e), (e as Error).stack) : e;
  }
}

/** As launchRanks with worker_threads, resolving with every rank's result (index = rank). */
export async function launchAllRanks(opts: LaunchOptions): Promise<unknown[]> {
  if (!Number.isInteger(opts.worldSize) || opts.worldSize < 1) throw new Error(`workers must be a positive integer, got ${opts.worldSize}`);
  if (opts.worldSize === 1) {
    const job = await import(opts.module);
    return [
      await job.runRank({
        collective: new SoloCollective(),
        payload: opts.payload,
        progress: opts.onProgress ?? (() => {}),
        log: opts.onLog ?? (() => {}),
      } satisfies RankContext),
    ];
  }
  const shared = createSharedBuffers(opts.worldSize);
  const bootstrap = new URL('./rank-bootstrap.mjs', import.meta.url);
  return new Promise<unknown[]>((resolve, reject) => {
    const workers: Worker[] = [];
    let failed = false;
    let remaining = opts.worldSize;
    const results: unknown[] = new Array(opts.worldSize);
    const fail = (err: RankError) => {
      if (failed) return;
      failed = true;
      abortAll(shared);
      // Give blocked ranks a moment to see the abort flag, then stop them all.
      setTimeout(() => {
        for (const w of workers) void w.terminate();
        reject(err);
      }, 50);
    };
    for (let rank = 0; rank < opts.worldSize; rank++) {
      const w = new Worker(bootstrap, {
        workerData: { module: opts.module, rank, worldSize: opts.worldSize, shared, payload: opts.payload },
      });
      workers.push(w);
      w.on('message', (m: RankMessage) => {
        if (m.type === 'progress' && rank === 0) opts.onProgress?.(m.done, m.fields);
        else if (m.type === 'log' && rank === 0) opts.onLog?.(m.message);
        else if (m.type === 'error') fail(new RankError(rank, m.message, m.stack));
        else if (m.type === 'done') {
          results[rank] = m.result;
          if (--remaining === 0 && !failed) {
            for (const x of workers) void x.terminate();
            resolve(results);
          }
        }
      });
      w.on('error', (e) => fail(new RankError(rank, e.message, e.stack)));
      w.on('exit', (code) => {
        if (code !== 0 && !failed && remaining > 0) fail(new RankError(rank, `worker exited with code ${code}`));
      });
    }
  });
}
