// Fault injection for the tests: SPECFORGE_INJECT_FAULT=<rank>:<step> makes that rank throw when it reaches
// that optimizer step, which is how they check that one failing rank stops the whole run and leaves the
// last checkpoint usable.

/** A check to call before each micro-batch: throws on the rank and step the variable names, else does nothing. */
export function faultInjector(rank: number): (step: number) => void {
  const spec = process.env.SPECFORGE_INJECT_FAULT;
  if (!spec) return () => {};
  const m = /^(\d+):(\d+)$/.exec(spec);
  if (!m) throw new Error(`SPECFORGE_INJECT_FAULT: expected <rank>:<step>, got "${spec}"`);
  const at = { rank: Number(m[1]), step: Number(m[2]) };
  return (step) => {
    if (at.rank === rank && at.step === step) throw new Error(`injected fault at step ${step} (SPECFORGE_INJECT_FAULT)`);
  };
}
