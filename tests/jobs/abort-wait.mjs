// A worker for tests/parallel.test.ts: rank 0 of two joins an all-reduce its peer never joins, and reports
// how that ended. Plain JavaScript that registers tsx, as src/parallel/rank-bootstrap.mjs does.
import { parentPort, workerData } from 'node:worker_threads';
import { register } from 'tsx/esm/api';

register();
const { AbortedError, SharedMemoryCollective } = await import('../../src/parallel/collective.ts');
const rank0 = new SharedMemoryCollective(workerData.shared, 0, 2);
parentPort.postMessage('waiting');
try {
  rank0.allReduceSum(new Float32Array(4));
  parentPort.postMessage('returned');
} catch (e) {
  parentPort.postMessage(e instanceof AbortedError ? 'aborted' : `threw ${e}`);
}
