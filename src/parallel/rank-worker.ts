// Runs one rank inside a worker thread: imports the job module and calls its `runRank(ctx)`.
import { parentPort, workerData } from 'node:worker_threads';
import { SharedMemoryCollective, type SharedBuffers } from './collective.ts';
import type { RankContext, RankMessage } from './launch.ts';

const { module, rank, worldSize, shared, payload } = workerData as {
  module: string;
  rank: number;
  worldSize: number;
  shared: SharedBuffers;
  payload: unknown;
};
const post = (m: RankMessage) => parentPort!.postMessage(m);
const ctx: RankContext = {
  collective: new SharedMemoryCollective(shared, rank, worldSize),
  payload,
  progress: (done, fields) => post({ type: 'progress', done, fields }),
  log: (message) => post({ type: 'log', message }),
};
try {
  const job = await import(module);
  const result = await job.runRank(ctx);
  post({ type: 'done', result });
} catch (e) {
  post({ type: 'error', message: (e as Error).message ?? String(e), stack: (e as Error).stack });
}
