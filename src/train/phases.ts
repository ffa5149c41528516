// Wall time per phase of the training step (teacher, forward, backward, all-reduce, optimizer, host), summed
// over the steps it watched. Every tfjs kernel on wasm and every ONNX Runtime GEMM call is synchronous, so
// the clock around a phase measures its work, not just its dispatch. Backends that run asynchronously
// (node-gpu) would need a sync at each boundary; this is a CPU profiling aid (bench/train-step.ts --phases).
export const PHASES = ['teacher', 'forward', 'backward', 'signals', 'host', 'all-reduce', 'optimizer'] as const;
export type Phase = (typeof PHASES)[number];

export class PhaseTimes {
  readonly ms = new Map<Phase, number>(PHASES.map((p) => [p, 0]));

  /** Runs fn, adding its wall time to `phase`. */
  time<T>(phase: Phase, fn: () => T): T {
    const t0 = performance.now();
    try {
      return fn();
    } finally {
      this.add(phase, performance.now() - t0);
    }
  }

  add(phase: Phase, ms: number): void {
    this.ms.set(phase, this.ms.get(phase)! + ms);
  }

  total(): number {
    let sum = 0;
    for (const v of this.ms.values()) sum += v;
    return sum;
  }
}
