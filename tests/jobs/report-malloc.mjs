// Preloaded (node --import) into bin/specforge.js by tests/capture.test.ts: each process's main thread
// prints its pid, its parent's and its MALLOC_ARENA_MAX to stderr.
import fs from 'node:fs';
import { isMainThread } from 'node:worker_threads';

if (isMainThread) fs.writeSync(2, `malloc: pid ${process.pid} ppid ${process.ppid} arena_max ${process.env.MALLOC_ARENA_MAX ?? 'unset'}\n`);
