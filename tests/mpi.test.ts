// The MPI launcher: the binding and MpiCollective under mpirun (shared memory, and TCP as between
// machines), a rank that throws ending the job, and the launch checks that need no MPI (which GPU a
// process takes, what counts as an MPI launch). Without Open MPI or the built binding the MPI tests skip,
// naming what is missing.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, describe, test } from 'node:test';
import { gpuFor, launchedByMpi } from '../src/parallel/mpi.ts';
import { startVector } from './jobs/collective-job.ts';
import { mpiMissing, mpirunNode, mpirunOptions, mpirunSpecforge, removeTempDirs, repoRoot, runNode, tempDir } from './helpers.ts';

after(removeTempDirs);

const job = new URL('./jobs/collective-job.ts', import.meta.url).href;
const runner = fileURLToPath(new URL('./jobs/mpi-rank.ts', import.meta.url));
const skip = mpiMissing();

/** Three all-reduces of 2 ranks' start vectors: one float32 addition each, as MPI does for 2 ranks (written out here). */
function expectedTwo(n: number): Float32Array {
  const a = startVector(0, n);
  const b = startVector(1, n);
  return Float32Array.from(a, (x, i) => Math.fround(4 * Math.fround(x + b[i])));
}

interface RankOut {
  f32: Float32Array;
  f64: Float64Array;
  bytes: Uint8Array;
  size: number;
  localRank: number;
}

/** Runs the 'mpi' collective job on `np` processes; every rank's result. */
function runJob(np: number, tcp: boolean, n: number): RankOut[] {
  const out = tempDir('mpi-job-');
  const r = mpirunNode(mpirunOptions(np, tcp), ['--import', 'tsx', runner, job, JSON.stringify({ mode: 'mpi', n }), out]);
  assert.equal(r.status, 0, r.stderr + r.stdout);
  return Array.from({ length: np }, (_, rank) => {
    const raw = JSON.parse(fs.readFileSync(path.join(out, `rank-${rank}.json`), 'utf8'));
    // A copy of the bytes: a decoded Buffer may start at any offset of its memory.
    const buf = (k: string) => {
      const b = Buffer.from(raw[k].base64, 'base64');
      return b.buffer.slice(b.byteOffset, b.byteOffset + b.length);
    };
    return {
      f32: new Float32Array(buf('f32')),
      f64: new Float64Array(buf('f64')),
      bytes: new Uint8Array(buf('bytes')),
      size: raw.size,
      localRank: raw.localRank,
    };
  });
}

const bits = (a: ArrayBufferView) => Buffer.from(a.buffer, a.byteOffset, a.byteLength);

/** What every rank of an np-process job must hold: the same float32 sums, exact float64 sums, rank 0's bytes. */
function assertRanksAgree(ranks: RankOut[], np: number): void {
  const rank0Bytes = Uint8Array.from({ length: 3001 }, (_, i) => (i * 7) & 255);
  const f64 = Float64Array.from({ length: 1000 }, (_, i) => ((np * (np + 1)) / 2) * i * 0.25 + (i % 3 === 0 ? np * 2 ** 40 : 0));
  ranks.forEach((r, rank) => {
    assert.equal(r.size, np, `rank ${rank}: size`);
    assert.equal(r.localRank, rank, `rank ${rank}: local rank (one machine)`);
    assert.ok(bits(r.f32).equals(bits(ranks[0].f32)), `rank ${rank}: float32 sums differ from rank 0's`);
    assert.deepEqual(Array.from(r.f64), Array.from(f64), `rank ${rank}: float64 sums`);
    assert.deepEqual(Array.from(r.bytes), Array.from(rank0Bytes), `rank ${rank}: broadcast bytes`);
  });
}

describe('MPI launcher', () => {
  test('2 processes over shared memory: sums to the bit of one float32 addition per element, float64 sums, broadcast, local ranks', {
    skip,
  }, () => {
    // 5M floats: 20 MB, past any single-message eager limit.
    const n = 5_000_000;
    const ranks = runJob(2, false, n);
    assertRanksAgree(ranks, 2);
    const want = expectedTwo(n);
    const first = ranks[0].f32.findIndex((x, i) => !Object.is(x, want[i]));
    assert.equal(first, -1, `float32 sums differ from the expected at ${first}`);
  });

  test('3 processes over TCP (shared memory off): every rank gets the same bits, close to the sums', { skip }, () => {
    const n = 1_000_000;
    const ranks = runJob(3, true, n);
    assertRanksAgree(ranks, 3);
    // Three ranks: MPI may add in another order than rank order; the sums stay within float32 rounding.
    const v = [0, 1, 2].map((r) => startVector(r, n));
    // Three rounds: 9 times the sum; the error measured against the terms' magnitudes (sums may cancel).
    let worst = 0;
    for (let i = 0; i < n; i++) {
      const exact = 9 * (v[0][i] + v[1][i] + v[2][i]);
      const scale = 9 * (Math.abs(v[0][i]) + Math.abs(v[1][i]) + Math.abs(v[2][i]));
      worst = Math.max(worst, Math.abs(ranks[0].f32[i] - exact) / scale);
    }
    assert.ok(worst < 1e-6, `worst error ${worst} of the terms' magnitude`);
  });

  test('a rank that throws ends the whole job with its message and a nonzero exit, the others blocked in an all-reduce', { skip }, () => {
    // The other ranks never finish by themselves: only the abort ends them (the child's timeout turns a hang into a failure).
    const out = tempDir('mpi-fail-');
    const r = mpirunNode(mpirunOptions(3, true), ['--import', 'tsx', runner, job, JSON.stringify({ mode: 'fail', n: 1000 }), out]);
    assert.notEqual(r.status, 0, r.stdout);
    assert.match(r.stderr, /mpi-rank: rank 2: deliberate failure in the last rank/);
    assert.deepEqual(fs.readdirSync(out), [], 'no rank finished');
  });

  test('commands other than train and capture refuse to run on several processes', { skip }, () => {
    const r = mpirunSpecforge(mpirunOptions(2), ['inspect', 'data/tiny-target']);
    assert.equal(r.status, 1, r.stdout);
    assert.match(
      r.stderr,
      /specforge: inspect runs in one process: under mpirun or srun, train and capture run on several \(this job has 2\)/,
    );
  });
});

test('an MPI launch is told by the launchers’ variables', () => {
  assert.equal(launchedByMpi({}), false);
  assert.equal(launchedByMpi({ OMPI_COMM_WORLD_SIZE: '2' }), true);
  assert.equal(launchedByMpi({ PMIX_RANK: '0' }), true);
  assert.equal(launchedByMpi({ PMI_SIZE: '4' }), true);
  assert.equal(launchedByMpi({ SLURM_PROCID: '0' }), false, 'srun without MPI support starts unrelated processes');
});

test('each process takes the GPU of its local rank, keeps one a launcher gave it, and sets nothing without GPUs', () => {
  assert.equal(gpuFor(0, undefined, 0), undefined);
  assert.equal(gpuFor(1, undefined, 4), '1');
  assert.equal(gpuFor(5, undefined, 4), '1', 'more processes than GPUs share them round-robin');
  assert.equal(gpuFor(1, '2,3', 8), '3', 'from the listed GPUs, the local rank’s');
  assert.equal(gpuFor(0, '3', 8), undefined, 'one GPU given per task (srun --gpus-per-task=1) is kept');
  assert.equal(gpuFor(2, '', 8), undefined, 'an empty list (no GPU) is kept');
});

test('without Open MPI the binding’s install succeeds, saying what to install; its loader then says the same', () => {
  // No mpicc on PATH: what a machine without Open MPI has.
  const r = runNode([path.join(repoRoot, 'packages/mpi/install.js')], { PATH: tempDir('no-mpi-path-') });
  assert.equal(r.status, 0, r.stderr);
  assert.match(
    r.stderr,
    /specforge-mpi: not built: no Open MPI compiler wrapper \(mpicc --showme\) on PATH; install Open MPI and a C\+\+ toolchain \(Debian\/Ubuntu: apt-get install libopenmpi-dev openmpi-bin g\+\+ make python3\), then run npm rebuild specforge-mpi/,
  );
  // The loader of a package folder without a build.
  const bare = tempDir('mpi-unbuilt-');
  fs.copyFileSync(path.join(repoRoot, 'packages/mpi/index.js'), path.join(bare, 'index.js'));
  const load = runNode(['-e', `require(${JSON.stringify(path.join(bare, 'index.js'))})`]);
  assert.notEqual(load.status, 0);
  assert.match(
    load.stderr,
    /specforge-mpi is not built \(Open MPI or a C\+\+ toolchain was missing when it was installed\): install Open MPI .*then run npm rebuild specforge-mpi/,
  );
});
