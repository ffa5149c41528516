// Memory of the tfjs backend: its limit, what it holds, peak figures, and a clear error when work cannot
// fit. The WebAssembly backend keeps every tensor in one 32-bit heap of at most 4 GiB; past it, wasm fails
// with "memory access out of bounds" or "Aborted()", which says nothing of what to change.
import * as tf from '@tensorflow/tfjs';

/** The wasm heap's hard limit (32-bit addresses). */
export const WASM_HEAP_LIMIT = 4 * 2 ** 30;

export class OutOfMemoryError extends Error {}

export const gib = (bytes: number) => `${(bytes / 2 ** 30).toFixed(2)} GiB`;

/** The active backend's limit in bytes, or null where only the machine's memory bounds it. */
export function backendLimit(): number | null {
  return tf.getBackend() === 'wasm' ? WASM_HEAP_LIMIT : null;
}

/** The wasm heap's current size (it only grows, so this is its peak), or null on other backends. */
export function wasmHeapBytes(): number | null {
  if (tf.getBackend() !== 'wasm') return null;
  const heap = (tf.backend() as unknown as { wasm?: { HEAPU8?: Uint8Array } }).wasm?.HEAPU8;
  return heap ? heap.buffer.byteLength : null;
}

/** Peak resident memory of this process so far. */
export function peakRssBytes(): number {
  return process.resourceUsage().maxRSS * 1024;
}

/** Throws a clear error when `bytes` (what `what` needs held at once) exceeds the backend's limit. */
export function checkFits(what: string, bytes: number, hint: string): void {
  const limit = backendLimit();
  if (limit !== null && bytes > limit)
    throw new OutOfMemoryError(
      `${what} needs ${gib(bytes)} in the tfjs '${tf.getBackend()}' backend, past its ${gib(limit)} limit; ${hint}`,
    );
}

const OUT_OF_MEMORY = /memory access out of bounds|^Aborted|out of memory|Array buffer allocation failed|Invalid typed array length/i;

/** An allocation failure of the backend, said in terms of what ran and what to change; other errors as they are. */
export function explainOutOfMemory(e: unknown, what: string, hint: string): unknown {
  const msg = e instanceof Error ? e.message : String(e);
  if (!OUT_OF_MEMORY.test(msg)) return e;
  if (process.env.SPECFORGE_DEBUG) console.error(e);
  const limit = backendLimit();
  const held = tf.memory().numBytes;
  return new OutOfMemoryError(
    `${what} ran out of memory in the tfjs '${tf.getBackend()}' backend (${msg.split('\n')[0]}; tensors held ${gib(held)}` +
      `${limit !== null ? `, limit ${gib(limit)}` : ''}); ${hint}`,
  );
}
