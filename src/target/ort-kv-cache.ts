// KV cache of the ONNX Runtime target, in two halves. The keys and values (host Float32Arrays, one per
// layer, [batch, kv_heads, capacity, head_dim]) live in the ORT worker beside the sessions that read them
// (KVStore), so a decode step never ships the cache between threads; the main thread keeps the slot
// bookkeeping (OrtKVCache: which slots hold real tokens and their positions) that builds masks and
// positions, with the same semantics as TfjsKVCache. Slots past `length` up to `capacity` are fed to the
// graph too, hidden by the mask, so that appending writes only the new slots (capacity grows in steps).
import type { KVCache } from './runtime.ts';

/** Capacity grows in multiples of this many slots. */
export const CAPACITY_STEP = 64;

export function capacityFor(slots: number): number {
  return Math.max(CAPACITY_STEP, Math.ceil(slots / CAPACITY_STEP) * CAPACITY_STEP);
}

/** What the main thread asks the worker to do to a cache (no reply: the worker applies them in order). */
export type CacheOp =
  | { op: 'cache-new'; id: number; batch: number }
  | { op: 'cache-select'; id: number; slots: number[]; capacity: number }
  | { op: 'cache-truncate'; id: number; length: number }
  | { op: 'cache-dispose'; id: number };

/** Main-thread half: slot bookkeeping, and the channel to the worker's buffers. */
export class OrtKVCache implements KVCache {
  readonly batch: number;
  readonly id: number;
  /** keyMask[b][s] = 1 when slot s of row b holds a real token. */
  keyMask: number[][];
  /** RoPE position of each slot, per row. */
  slotPositions: number[][];
  /** Slots the worker's buffers hold (filled or not); the graph sees all of them as the past. */
  capacity = 0;
  /** Set while a forwardAsync on this cache runs: the bookkeeping must not change under it. */
  inFlight = false;
  private disposed = false;

  constructor(
    batch: number,
    id: number,
    private readonly send: (op: CacheOp) => void,
  ) {
    if (!Number.isInteger(batch) || batch < 1) throw new Error(`KV cache: batch must be a positive integer, got ${batch}`);
    this.batch = batch;
    this.id = id;
    this.keyMask = Array.from({ length: batch }, () => []);
    this.slotPositions = Array.from({ length: batch }, () => []);
    send({ op: 'cache-new', id, batch });
  }

  get length(): number {
    return this.keyMask[0]?.length ?? 0;
  }

  get isDisposed(): boolean {
    return this.disposed;
  }

  /** Position the next token of each row takes by default: max + 1 over the row's real slots. */
  nextPositions(): number[] {
    return this.slotPositions.map((pos, b) => {
      let next = 0;
      pos.forEach((p, s) => {
        if (this.keyMask[b][s]) next = Math.max(next, p + 1);
      });
      return next;
    });
  }

  /** After a forward appended `T` slots: their mask and positions, and the capacity the worker grew to. */
  recordSlots(mask: number[][], positions: number[][], capacity: number): void {
    for (let b = 0; b < this.batch; b++) {
      this.keyMask[b].push(...mask[b]);
      this.slotPositions[b].push(...positions[b]);
    }
    this.capacity = capacity;
  }

  select(slots: number[]): void {
    this.check();
    for (const s of slots) {
      if (!Number.isInteger(s) || s < 0 || s >= this.length) throw new Error(`KV cache: slot ${s} out of range [0, ${this.length})`);
    }
    this.keyMask = this.keyMask.map((row) => slots.map((s) => row[s]));
    this.slotPositions = this.slotPositions.map((row) => slots.map((s) => row[s]));
    this.capacity = capacityFor(slots.length);
    this.send({ op: 'cache-select', id: this.id, slots: [...slots], capacity: this.capacity });
  }

  truncate(n: number): void {
    this.check();
    if (n >= this.length) return;
    if (!Number.isInteger(n) || n < 0) throw new Error(`KV cache: truncate(${n}): expected a non-negative integer`);
    // Slots past n stay in the buffers, hidden by the mask, until appends overwrite them.
    this.keyMask = this.keyMask.map((row) => row.slice(0, n));
    this.slotPositions = this.slotPositions.map((row) => row.slice(0, n));
    this.send({ op: 'cache-truncate', id: this.id, length: n });
  }

  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    this.keyMask = this.keyMask.map(() => []);
    this.slotPositions = this.slotPositions.map(() => []);
    this.send({ op: 'cache-dispose', id: this.id });
  }

  private check(): void {
    if (this.disposed) throw new Error('KV cache: used after dispose()');
    if (this.inFlight) throw new Error('KV cache: a forwardAsync on this cache is still running; await it first');
  }
}

/** Worker half: per layer keys and values [batch, kvHeads, capacity, headDim]. */
export class KVStore {
  capacity = 0;
  length = 0;
  keys: Float32Array[];
  values: Float32Array[];

  constructor(
    readonly batch: number,
    readonly numLayers: number,
    readonly kvHeads: number,
    readonly headDim: number,
  ) {
    this.keys = Array.from({ length: numLayers }, () => new Float32Array(0));
    this.values = Array.from({ length: numLayers }, () => new Float32Array(0));
  }

  /** Rows of `headDim` floats per (batch, head) block at capacity `cap`. */
  private resized(a: Float32Array, cap: number, slots: (i: number) => number, n: number): Float32Array {
    const { batch, kvHeads, headDim: D } = this;
    const out = new Float32Array(batch * kvHeads * cap * D);
    for (let bh = 0; bh < batch * kvHeads; bh++) {
      const src = bh * this.capacity * D;
      const dst = bh * cap * D;
      for (let i = 0; i < n; i++) {
        const s = slots(i);
        out.set(a.subarray(src + s * D, src + (s + 1) * D), dst + i * D);
      }
    }
    return out;
  }

  private reshape(cap: number, slots: (i: number) => number, n: number): void {
    for (let l = 0; l < this.numLayers; l++) {
      this.keys[l] = this.resized(this.keys[l], cap, slots, n);
      this.values[l] = this.resized(this.values[l], cap, slots, n);
    }
    this.capacity = cap;
    this.length = n;
  }

  /** Appends the new tokens' keys/values ([batch, kvHeads, T, headDim] per layer), growing to `capacity` first if needed. */
  append(newKeys: Float32Array[], newValues: Float32Array[], T: number, capacity: number): void {
    if (this.length + T > capacity) throw new Error(`KV store: ${this.length} + ${T} slots exceed capacity ${capacity}`);
    if (capacity !== this.capacity) this.reshape(capacity, (i) => i, this.length);
    const { batch, kvHeads, headDim: D } = this;
    for (let l = 0; l < this.numLayers; l++) {
      for (const [dst, src] of [
        [this.keys[l], newKeys[l]],
        [this.values[l], newValues[l]],
      ] as const) {
        if (src.length !== batch * kvHeads * T * D)
          throw new Error(`KV store: layer ${l}: ${src.length} new values, expected [${batch}, ${kvHeads}, ${T}, ${D}]`);
        for (let bh = 0; bh < batch * kvHeads; bh++)
          dst.set(src.subarray(bh * T * D, (bh + 1) * T * D), (bh * this.capacity + this.length) * D);
      }
    }
    this.length += T;
  }

  select(slots: number[], capacity: number): void {
    this.reshape(capacity, (i) => slots[i], slots.length);
  }

  truncate(n: number): void {
    this.length = Math.min(this.length, n);
  }
}
