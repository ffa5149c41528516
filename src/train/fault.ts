// Fault injection for the tests: SPECFORGE_INJECT_FAULT=<rank>:<step> makes that rank throw when it reaches
// that optimizer step, which is how they check that one failing rank stops the whole run and leaves the
// last checkpoint usable. <rank>:<step>:hang makes it print "injected hang at step <step>" to stderr and
// stop there for good instead, so that a test can kill the process at a known point (after the
// checkpoints of earlier steps, before anything of later ones).
import fs from 'node:fs';

/** A check to call before each micro-batch: throws (or hangs) on the rank and step the variable names, else does nothing. */
export function faultInjector(rank: number): (step: number) => void {
  const spec = process.env.SPECFORGE_INJECT_FAULT;
  if (!spec) return () => {};
  const m = /^(\d+):(\d+)(:hang)?$/.exec(spec);
  if (!m) throw new Error(`SPECFORGE_INJECT_FAULT: expected <rank>:<step> or <rank>:<step>:hang, got "${spec}"`);
  const at = { rank: Number(m[1]), step: Number(m[2]), hang: Boolean(m[3]) };
  return (step) => {
    if (at.rank !== rank || at.step !== step) return;
    if (!at.hang) throw new Error(`injected fault at step ${step} (SPECFORGE_INJECT_FAULT)`);
    // Written straight to the file descriptor: a worker thread's process.stderr is forwarded asynchronously,
    // and this thread never runs again.
    fs.writeSync(2, `rank ${rank}: injected hang at step ${step} (SPECFORGE_INJECT_FAULT)\n`);
    const never = new Int32Array(new SharedArrayBuffer(4));
    for (;;) Atomics.wait(never, 0, 0);
  };
}
