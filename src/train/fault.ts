// Fault injection for the tests: SPECFORGE_INJECT_FAULT=<rank>:<step> makes that rank throw when it reaches
// that optimizer step, which is how they check that one failing rank stops the whole run and leaves the
// last checkpoint usable. <rank>:<step>:nan and <rank>:<step>:blowup damage that rank's weights right after
// the update that makes step <step> (before its checkpoint): one weight becomes NaN, or every weight is
// multiplied by 1e6 (what a learning rate of about 1e6 does), which is how they check that a checkpoint is
// never written from weights that are not finite, and that a divergence names a checkpoint that is good.
// <rank>:<step>:hang makes that rank print "rank <rank>: injected hang at step <step> (... pid <pid>)" to
// stderr when it reaches the step and stop there for good, so that a test can kill the process at a known point (after
// the checkpoints of earlier steps, before anything of later ones).
import fs from 'node:fs';
import * as tf from '@tensorflow/tfjs';

export interface FaultInjector {
  /** Called before each micro-batch with the steps done: throws (or hangs) on the rank and step the variable names. */
  beforeMicroBatch(step: number): void;
  /** Called after the update that makes step `step`: damages `vars` on the rank and step the variable names. */
  afterUpdate(step: number, vars: tf.Variable[]): void;
}

const NONE: FaultInjector = { beforeMicroBatch: () => {}, afterUpdate: () => {} };

export function faultInjector(rank: number): FaultInjector {
  const spec = process.env.SPECFORGE_INJECT_FAULT;
  if (!spec) return NONE;
  const m = /^(\d+):(\d+)(?::(nan|blowup|hang))?$/.exec(spec);
  if (!m) throw new Error(`SPECFORGE_INJECT_FAULT: expected <rank>:<step>[:nan|:blowup|:hang], got "${spec}"`);
  const at = { rank: Number(m[1]), step: Number(m[2]), kind: m[3] ?? 'throw' };
  if (at.rank !== rank) return NONE;
  return {
    beforeMicroBatch: (step) => {
      if (at.step !== step) return;
      if (at.kind === 'throw') throw new Error(`injected fault at step ${step} (SPECFORGE_INJECT_FAULT)`);
      if (at.kind === 'hang') {
        // Written straight to the file descriptor: a worker thread's process.stderr is forwarded
        // asynchronously, and this thread never runs again.
        fs.writeSync(2, `rank ${rank}: injected hang at step ${step} (SPECFORGE_INJECT_FAULT, pid ${process.pid})\n`);
        const never = new Int32Array(new SharedArrayBuffer(4));
        for (;;) Atomics.wait(never, 0, 0);
      }
    },
    afterUpdate: (step, vars) => {
      if ((at.kind !== 'nan' && at.kind !== 'blowup') || at.step !== step) return;
      if (at.kind === 'blowup') for (const v of vars) v.assign(tf.tidy(() => tf.mul(v, 1e6)));
      else {
        const data = vars[0].dataSync().slice() as Float32Array;
        data[0] = Number.NaN;
        const damaged = tf.tensor(data, vars[0].shape);
        vars[0].assign(damaged);
        damaged.dispose();
      }
    },
  };
}
