// Shared-memory collectives and the rank launcher.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { RankError, launchRanks } from '../src/parallel/launch.ts';

const job = new URL('./jobs/collective-job.ts', import.meta.url).href;

test('all-reduce sums over ranks in a fixed order: every rank gets the same bits', async () => {
  // Chunking: 5M floats exceed one slot (4M), so the chunked path runs too.
  const n = 5_000_000;
  const results: number[][] = [];
  for (const _ of [0, 1]) results.push((await launchRanks({ module: job, worldSize: 2, payload: { mode: 'sum', n } })) as number[]);
  assert.deepEqual(results[0], results[1], 'same result on repeated runs');
  // Independent check of the first values: three rounds of summing two ranks multiply by 2^3... of the first-round sum.
  const first = (i: number) =>
    (Math.fround(Math.sin(i * 0.37) * 10 ** ((i % 7) - 3)) + Math.fround(Math.sin(i * 0.37 + 1) * 10 ** ((i % 7) - 3))) * 4;
  for (let i = 0; i < 8; i++) assert.ok(Math.abs(results[0][i] - first(i)) <= 1e-6 * Math.max(1, Math.abs(first(i))), `value ${i}`);
  assert.equal(results[0][8], n);
});

test('a rank that throws stops the whole run promptly with its error', async () => {
  const t0 = Date.now();
  await assert.rejects(
    launchRanks({ module: job, worldSize: 2, payload: { mode: 'fail', n: 1000 } }),
    (e: unknown) => e instanceof RankError && e.rank === 1 && /deliberate failure in the last rank/.test(e.message),
  );
  assert.ok(Date.now() - t0 < 20_000, 'no hang');
});

test('one rank runs in this thread with no workers', async () => {
  const r = (await launchRanks({ module: job, worldSize: 1, payload: { mode: 'sum', n: 10 } })) as number[];
  assert.equal(r[8], 10);
  assert.ok(Math.abs(r[0] - Math.fround(Math.sin(0) * 1e-3)) < 1e-9);
});
