// Preloaded (node --import) into a capture by tests/capture.test.ts: once a store's manifest.json is written
// listing SPECFORGE_TEST_HANG_SHARDS finished shards (or more) of an unfinished store, the writing thread
// prints "hang: manifest lists <n> shards" to stderr and stops there for good, so that the test kills the
// process at a known point. Preloads run in every worker thread too.
import fs from 'node:fs';

const at = Number(process.env.SPECFORGE_TEST_HANG_SHARDS);
const { renameSync } = fs;
fs.renameSync = (from, to) => {
  renameSync(from, to);
  if (!String(to).endsWith('manifest.json')) return;
  const m = JSON.parse(fs.readFileSync(to, 'utf8'));
  if (m.complete || m.shards.length < at) return;
  fs.writeSync(2, `hang: manifest lists ${m.shards.length} shards\n`);
  const never = new Int32Array(new SharedArrayBuffer(4));
  for (;;) Atomics.wait(never, 0, 0);
};
