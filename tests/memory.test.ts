// The backend's memory limit becomes a clear error that names what needed the memory and what to change.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../src/backend/backend.ts';
import { OutOfMemoryError, WASM_HEAP_LIMIT, checkFits, explainOutOfMemory, wasmHeapBytes } from '../src/backend/memory.ts';

await initBackend('wasm');

test('on wasm, work past the 4 GiB heap is refused up front, naming what it needs and the limit', () => {
  assert.throws(
    () => checkFits('the teacher', 5 * 2 ** 30, 'use a native backend'),
    (e: Error) =>
      e instanceof OutOfMemoryError &&
      /the teacher needs 5\.00 GiB in the tfjs 'wasm' backend, past its 4\.00 GiB limit; use a native backend/.test(e.message),
  );
  checkFits('a small model', WASM_HEAP_LIMIT - 1, 'n/a');
  const heap = wasmHeapBytes();
  assert.ok(heap !== null && heap > 0 && heap <= WASM_HEAP_LIMIT);
});

test("wasm's allocation failures are explained; other errors pass through unchanged", () => {
  const x = tf.zeros([4]);
  for (const msg of ['memory access out of bounds', 'Aborted(). Build with -sASSERTIONS for more info.']) {
    const e = explainOutOfMemory(new Error(msg), 'step 3: a micro-batch of 1 sample up to 2048 tokens', 'lower data.max_length') as Error;
    assert.ok(e instanceof OutOfMemoryError);
    assert.match(e.message, /^step 3: a micro-batch of 1 sample up to 2048 tokens ran out of memory in the tfjs 'wasm' backend/);
    assert.match(e.message, /limit 4\.00 GiB\); lower data\.max_length$/);
  }
  const other = new Error('shapes do not match');
  assert.equal(explainOutOfMemory(other, 'x', 'y'), other);
  x.dispose();
});
