// One process of an MPI test job (tests/mpi.test.ts), started by mpirun: joins the MPI world and runs a rank
// job module through launchRanks, as the CLI does; writes this rank's result to <out>/rank-<r>.json (typed
// arrays as base64 of their bytes). Usage: mpi-rank.ts <job module URL> <payload JSON> <out folder>
import fs from 'node:fs';
import path from 'node:path';
import { launchRanks } from '../../src/parallel/launch.ts';
import { joinMpiWorld } from '../../src/parallel/mpi.ts';

const [module, payload, out] = process.argv.slice(2);
const w = joinMpiWorld();
if (!w) throw new Error('mpi-rank.ts: not started by mpirun');
try {
  const result = await launchRanks({ module, worldSize: w.size, payload: JSON.parse(payload) });
  const json = JSON.stringify(result, (_k, v) =>
    ArrayBuffer.isView(v) ? { base64: Buffer.from(v.buffer, v.byteOffset, v.byteLength).toString('base64') } : v,
  );
  fs.writeFileSync(path.join(out, `rank-${w.rank}.json`), json);
} catch (e) {
  console.error(`mpi-rank: ${(e as Error).message}`);
  process.exit(1);
}
