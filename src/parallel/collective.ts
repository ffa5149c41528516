// Collectives over shared memory for ranks that are worker_threads of one process.
//
// All-reduce: each rank copies its vector into its own slot of a SharedArrayBuffer, all wait at a
// barrier, then each sums the slots in rank order 0..N-1. Every rank performs the same float additions
// in the same order, so all ranks get bitwise-identical results, independent of thread timing.

/** What a trainer sees of its peers. A multi-process launch (one process per GPU) implements the same. */
export interface Collective {
  readonly rank: number;
  readonly worldSize: number;
  /** In place: data becomes the elementwise sum over ranks. */
  allReduceSum(data: Float32Array): void;
  barrier(): void;
}

/** The single-rank collective: nothing to exchange. */
export class SoloCollective implements Collective {
  readonly rank = 0;
  readonly worldSize = 1;
  allReduceSum(): void {}
  barrier(): void {}
}

export class AbortedError extends Error {}

// Control words in the shared Int32Array.
const COUNT = 0; // ranks arrived at the current barrier
const GENERATION = 1; // barriers completed
const ABORT = 2; // set (by the launcher) when any rank failed

export interface SharedBuffers {
  control: SharedArrayBuffer;
  slots: SharedArrayBuffer;
  /** Floats per slot; longer vectors are reduced chunk by chunk. */
  slotFloats: number;
}

export function createSharedBuffers(worldSize: number, slotFloats = 1 << 22): SharedBuffers {
  return {
    control: new SharedArrayBuffer(4 * 4),
    slots: new SharedArrayBuffer(4 * slotFloats * worldSize),
    slotFloats,
  };
}

/** Makes every rank blocked in a barrier throw AbortedError (called by the launcher when a rank fails). */
export function abortAll(shared: SharedBuffers): void {
  const ctrl = new Int32Array(shared.control);
  Atomics.store(ctrl, ABORT, 1);
  Atomics.notify(ctrl, GENERATION);
}

export class SharedMemoryCollective implements Collective {
  readonly rank: number;
  readonly worldSize: number;
  private readonly ctrl: Int32Array;
  private readonly slots: Float32Array;
  private readonly slotFloats: number;

  constructor(shared: SharedBuffers, rank: number, worldSize: number) {
    this.rank = rank;
    this.worldSize = worldSize;
    this.ctrl = new Int32Array(shared.control);
    this.slots = new Float32Array(shared.slots);
    this.slotFloats = shared.slotFloats;
  }

  barrier(): void {
    const gen = Atomics.load(this.ctrl, GENERATION);
    if (Atomics.add(this.ctrl, COUNT, 1) === this.worldSize - 1) {
      Atomics.store(this.ctrl, COUNT, 0);
      Atomics.add(this.ctrl, GENERATION, 1);
      Atomics.notify(this.ctrl, GENERATION);
      return;
    }
    while (Atomics.load(this.ctrl, GENERATION) === gen) {
      if (Atomics.load(this.ctrl, ABORT)) throw new AbortedError('stopped: another rank failed');
      Atomics.wait(this.ctrl, GENERATION, gen, 500);
    }
    if (Atomics.load(this.ctrl, ABORT)) throw new AbortedError('stopped: another rank failed');
  }

  allReduceSum(data: Float32Array): void {
    const S = this.slotFloats;
    for (let offset = 0; offset < data.length; offset += S) {
      const n = Math.min(S, data.length - offset);
      this.slots.set(data.subarray(offset, offset + n), this.rank * S);
      this.barrier();
      for (let i = 0; i < n; i++) {
        let sum = 0;
        for (let r = 0; r < this.worldSize; r++) sum += this.slots[r * S + i];
        data[offset + i] = sum;
      }
      this.barrier(); // nobody refills a slot before every rank has read it
    }
  }
}
