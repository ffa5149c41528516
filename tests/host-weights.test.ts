// The host copies of trained weights (src/train/host-weights.ts) that the ORT step graph reads and AdamW
// updates in place: read from tfjs once, written back on commit, and read again whenever the variable
// changed elsewhere or a lent buffer did not come back.
import assert from 'node:assert/strict';
import { before, test } from 'node:test';
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../src/backend/backend.ts';
import { HostWeights } from '../src/train/host-weights.ts';

before(async () => {
  await initBackend('wasm');
});

const read = (v: tf.Variable) => Array.from(v.dataSync() as Float32Array);

test('host weights are read once, committed into the variable, and read again after an assign elsewhere', () => {
  const v = tf.variable(tf.tensor1d([1, 2, 3, 4]));
  const host = new HostWeights();
  const a = host.get(v);
  assert.deepEqual(Array.from(a), [1, 2, 3, 4]);
  a[0] = 10; // an update in place
  assert.equal(host.get(v), a, 'the same array while the variable is unchanged');
  const count = tf.memory().numTensors;
  host.commit(v);
  assert.deepEqual(read(v), [10, 2, 3, 4]);
  assert.equal(tf.memory().numTensors, count, 'commit leaves no tensor behind');
  assert.equal(host.get(v), a, 'its own commit does not make it read again');
  a[1] = 20; // not committed: the variable keeps its value
  assert.deepEqual(read(v), [10, 2, 3, 4]);

  // Assigned elsewhere (a checkpoint load, a fault injection): the next get sees the variable's values.
  tf.tidy(() => v.assign(tf.tensor1d([5, 6, 7, 8])));
  const b = host.get(v);
  assert.deepEqual(Array.from(b), [5, 6, 7, 8]);
  v.dispose();
});

test('a lent buffer is taken back when it returns, and read again from the variable when it does not', () => {
  const v = tf.variable(tf.tensor1d([1, 2, 3]));
  const host = new HostWeights();
  const a = host.get(v);
  a[2] = 30;
  host.commit(v);
  // Lent: the buffer moves (as to the ORT worker) and comes back as a new array over the same memory.
  const back = new Float32Array(structuredClone(a.buffer, { transfer: [a.buffer] }));
  assert.equal(a.length, 0, 'the lent array is detached');
  host.returned(v, back);
  assert.equal(host.get(v), back);
  assert.deepEqual(Array.from(host.get(v)), [1, 2, 30]);

  // Lent and lost (a run that failed): the host copy is read again, from the last commit.
  structuredClone(back.buffer, { transfer: [back.buffer] });
  assert.deepEqual(Array.from(host.get(v)), [1, 2, 30]);
  v.dispose();
});
