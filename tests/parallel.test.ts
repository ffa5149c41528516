// Shared-memory collectives and the rank launcher.
import assert from 'node:assert/strict';
import { on } from 'node:events';
import { setTimeout } from 'node:timers/promises';
import { test } from 'node:test';
import { Worker } from 'node:worker_threads';
import { abortAll, createSharedBuffers } from '../src/parallel/collective.ts';
import { RankError, launchAllRanks, launchRanks } from '../src/parallel/launch.ts';
import { startVector } from './jobs/collective-job.ts';

const job = new URL('./jobs/collective-job.ts', import.meta.url).href;
/** A guard against a hang (a collective that never releases): fails the test instead of blocking the suite. */
const HANG_GUARD = { timeout: 600_000 };

/** Three all-reduces of the ranks' start vectors, summed in rank order as collective.ts documents it (written out here). */
function expected(worldSize: number, n: number): Float32Array {
  const v = Array.from({ length: worldSize }, (_, r) => startVector(r, n));
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    let x = 0;
    for (let r = 0; r < worldSize; r++) x += v[r][i];
    x = Math.fround(x);
    for (let round = 1; round < 3; round++) {
      let s = 0;
      for (let r = 0; r < worldSize; r++) s += x;
      x = Math.fround(s);
    }
    out[i] = x;
  }
  return out;
}

const bits = (a: Float32Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength);

test('all-reduce sums over ranks in a fixed order: every rank gets the same bits, the expected ones', HANG_GUARD, async () => {
  // Chunking: 5M floats exceed one slot (4M), so the chunked path runs too. Three ranks, every value
  // compared: a rank that sums in another order, misses a term or reads a slot too early shows in the bits.
  const n = 5_000_000;
  const worldSize = 3;
  const want = expected(worldSize, n);
  const results = (await launchAllRanks({ module: job, worldSize, payload: { mode: 'sum', n } })) as Float32Array[];
  assert.equal(results.length, worldSize);
  const first = (a: Float32Array, b: Float32Array) => a.findIndex((x, i) => !Object.is(x, b[i]));
  results.forEach((r, rank) => {
    assert.equal(r.length, n, `rank ${rank}: length`);
    assert.ok(bits(r).equals(bits(results[0])), `rank ${rank} differs from rank 0 (first at ${first(r, results[0])})`);
  });
  assert.ok(bits(results[0]).equals(bits(want)), `not the expected sums (first difference at ${first(results[0], want)})`);
  // launchRanks resolves with rank 0's result.
  const r0 = (await launchRanks({ module: job, worldSize: 2, payload: { mode: 'sum', n: 1000 } })) as Float32Array;
  assert.ok(bits(r0).equals(bits(expected(2, 1000))));
});

test('a rank that throws stops the whole run with its error while the others are blocked in a collective', HANG_GUARD, async () => {
  // The other ranks never finish by themselves: the launch can only end through the failure.
  await assert.rejects(
    launchAllRanks({ module: job, worldSize: 3, payload: { mode: 'fail', n: 1000 } }),
    (e: unknown) => e instanceof RankError && e.rank === 2 && /deliberate failure in the last rank/.test(e.message),
  );
});

test('the abort flag releases a rank that waits in a collective for a peer that never comes', async () => {
  const shared = createSharedBuffers(2, 16);
  const w = new Worker(new URL('./jobs/abort-wait.mjs', import.meta.url), { workerData: { shared } });
  try {
    const messages = on(w, 'message');
    const next = async () => ((await messages.next()).value as unknown[])[0];
    assert.equal(await next(), 'waiting');
    abortAll(shared);
    // Should the flag not work, the worker waits for good: give up after a generous while instead of hanging.
    const timer = new AbortController();
    const waited = setTimeout(600_000, 'still waiting after 10 minutes', { signal: timer.signal }).catch(() => '');
    assert.equal(await Promise.race([next(), waited]), 'aborted');
    timer.abort();
  } finally {
    await w.terminate();
  }
});

test('one rank runs in this thread with no workers', async () => {
  const r = (await launchAllRanks({ module: job, worldSize: 1, payload: { mode: 'sum', n: 10 } })) as Float32Array[];
  assert.equal(r.length, 1);
  assert.ok(bits(r[0]).equals(bits(expected(1, 10))));
  assert.ok(bits(r[0]).equals(bits(startVector(0, 10))), 'one rank: the sums are the vector itself');
});
