#!/usr/bin/env node
// Runs the TypeScript CLI directly through tsx (a runtime dependency), so there is no build step.
import { spawn } from 'node:child_process';
import { Worker } from 'node:worker_threads';
import { register } from 'tsx/esm/api';

register();
const { retainingMallocEnv } = await import('../src/util/malloc-env.ts');
const env = retainingMallocEnv();
if (env) {
  // glibc reads its malloc settings at start (src/util/malloc-env.ts says why they matter): run again with
  // them. Ctrl-C reaches both processes (one process group); this one passes signals on and ends as the other.
  const child = spawn(process.execPath, [...process.execArgv, ...process.argv.slice(1)], {
    stdio: 'inherit',
    env: { ...env, SPECFORGE_PARENT_PID: String(process.pid) },
  });
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) process.on(sig, () => child.kill(sig));
  child.on('exit', (code, signal) => {
    if (signal) process.kill(process.pid, signal);
    else process.exit(code ?? 1);
  });
} else {
  const parent = Number(process.env.SPECFORGE_PARENT_PID);
  if (process.env.SPECFORGE_MALLOC === '1' && parent) {
    // Started again by the above: a SIGKILL of that process cannot be passed on, so a thread of this one
    // ends it once its parent is gone (a thread, so that it fires even while the main thread is blocked).
    const watch = `const p = require('node:worker_threads').workerData; setInterval(() => { if (process.ppid !== p) process.kill(process.pid, 'SIGKILL'); }, 200);`;
    new Worker(watch, { eval: true, workerData: parent, execArgv: [] }).unref();
  }
  await import('../src/cli/main.ts');
}
