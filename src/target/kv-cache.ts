// KV cache for the tfjs target: per layer keys/values [B, kvH, S, hd], plus which slots hold real tokens.
import * as tf from '@tensorflow/tfjs';
import type { KVCache } from './runtime.ts';

export class TfjsKVCache implements KVCache {
  readonly batch: number;
  keys: (tf.Tensor4D | null)[];
  values: (tf.Tensor4D | null)[];
  /** keyMask[b][s] = 1 when slot s of row b holds a real token. */
  keyMask: number[][];
  /** RoPE position of each slot, per row (so a row's next position is max + 1 over its real slots). */
  slotPositions: number[][];

  constructor(batch: number, numLayers: number) {
    this.batch = batch;
    this.keys = new Array(numLayers).fill(null);
    this.values = new Array(numLayers).fill(null);
    this.keyMask = Array.from({ length: batch }, () => []);
    this.slotPositions = Array.from({ length: batch }, () => []);
  }

  get length(): number {
    return this.keyMask[0]?.length ?? 0;
  }

  /** Position the next token of each row takes by default. */
  nextPositions(): number[] {
    return this.slotPositions.map((pos, b) => {
      let next = 0;
      pos.forEach((p, s) => {
        if (this.keyMask[b][s]) next = Math.max(next, p + 1);
      });
      return next;
    });
  }

  /** Appends one layer's new keys/values; `layer` 0 also records the slots' mask and positions. */
  append(layer: number, k: tf.Tensor4D, v: tf.Tensor4D): void {
    const oldK = this.keys[layer];
    const oldV = this.values[layer];
    // Kept: appends happen inside the forward's tidy scope, but the cache outlives it.
    this.keys[layer] = tf.keep(oldK ? tf.concat([oldK, k], 2) : tf.clone(k));
    this.values[layer] = tf.keep(oldV ? tf.concat([oldV, v], 2) : tf.clone(v));
    oldK?.dispose();
    oldV?.dispose();
  }

  recordSlots(mask: number[][], positions: number[][]): void {
    for (let b = 0; b < this.batch; b++) {
      this.keyMask[b].push(...mask[b]);
      this.slotPositions[b].push(...positions[b]);
    }
  }

  select(slots: number[]): void {
    for (const s of slots) {
      if (!Number.isInteger(s) || s < 0 || s >= this.length) throw new Error(`KV cache: slot ${s} out of range [0, ${this.length})`);
    }
    const idx = tf.tensor1d(slots, 'int32');
    for (let l = 0; l < this.keys.length; l++) {
      const k = this.keys[l];
      const v = this.values[l];
      if (!k || !v) continue;
      this.keys[l] = tf.gather(k, idx, 2);
      this.values[l] = tf.gather(v, idx, 2);
      k.dispose();
      v.dispose();
    }
    idx.dispose();
    this.keyMask = this.keyMask.map((row) => slots.map((s) => row[s]));
    this.slotPositions = this.slotPositions.map((row) => slots.map((s) => row[s]));
  }

  truncate(n: number): void {
    if (n >= this.length) return;
    this.select(Array.from({ length: n }, (_, i) => i));
  }

  dispose(): void {
    for (const t of [...this.keys, ...this.values]) t?.dispose();
    this.keys.fill(null);
    this.values.fill(null);
    this.keyMask = this.keyMask.map(() => []);
    this.slotPositions = this.slotPositions.map(() => []);
  }
}
