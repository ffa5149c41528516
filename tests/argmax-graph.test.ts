// The blocked argmax (src/train/graph/argmax.ts) against a plain first-index argmax, on ONNX Runtime: random
// rows, and rows whose maximum repeats within a block, across blocks and at the block edges.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import * as ort from 'onnxruntime-node';
import { DataType, encodeModel } from '../src/io/onnx-proto.ts';
import { argmaxBlock, argmaxNodes } from '../src/train/graph/argmax.ts';
import { Rng } from '../src/util/random.ts';

function reference(x: Float32Array, V: number): number[] {
  const out: number[] = [];
  for (let r = 0; r < x.length / V; r++) {
    let best = 0;
    for (let v = 1; v < V; v++) if (x[r * V + v] > x[r * V + best]) best = v;
    out.push(best);
  }
  return out;
}

async function run(x: Float32Array, dims: number[]): Promise<number[]> {
  const V = dims[dims.length - 1];
  const { nodes, initializers } = argmaxNodes('x', 'y', dims.length, V, 'am');
  const model = encodeModel({
    irVersion: 8,
    opset: 17,
    producerName: 'test',
    producerVersion: '0',
    graph: {
      name: 'argmax',
      nodes,
      initializers,
      inputs: [{ name: 'x', elemType: DataType.FLOAT, shape: dims.map((d, i) => (i < dims.length - 1 ? `d${i}` : d)) }],
      outputs: [{ name: 'y', elemType: DataType.INT64, shape: dims.slice(0, -1).map((_, i) => `d${i}`) }],
    },
  });
  const s = await ort.InferenceSession.create(model);
  const out = await s.run({ x: new ort.Tensor('float32', x, dims) });
  await s.release();
  return Array.from(out.y.data as BigInt64Array, Number);
}

test('the blocked argmax picks the first maximal index, as ArgMax, for rank 2 and 3', async () => {
  const rng = new Rng(5);
  const V = 16000;
  assert.equal(argmaxBlock(V), 250);
  assert.equal(argmaxBlock(151936), 128);
  assert.equal(argmaxBlock(73448), null, 'no divisor in [32, 256]: ArgMax as is');
  assert.equal(argmaxBlock(256), null, 'short rows: ArgMax as is');
  const rows = 12;
  const x = Float32Array.from(rng.normalArray(rows * V));
  const set = (r: number, v: number, value: number) => (x[r * V + v] = value);
  // Ties: within one block, across two blocks (the later block first in memory order only by value), at
  // block edges, the first and last element, and a row that is all equal.
  set(1, 10, 9);
  set(1, 20, 9);
  set(2, 4999, 9);
  set(2, 250, 9);
  set(3, 249, 9);
  set(3, 250, 9);
  set(4, V - 1, 9);
  set(5, 0, 9);
  set(5, V - 1, 9);
  x.fill(-3, 6 * V, 7 * V);
  set(7, 7777, 12);
  set(7, 15999, 12);
  set(8, 251, 9);
  set(8, 499, 9);
  const want = reference(x, V);
  assert.deepEqual(want.slice(1, 9), [10, 250, 249, V - 1, 0, 0, 7777, 251]);
  assert.deepEqual(await run(x, [rows, V]), want);
  assert.deepEqual(await run(x, [3, 4, V]), want);
  // A vocabulary without a block: plain ArgMax.
  const y = Float32Array.from(rng.normalArray(5 * 73448));
  assert.deepEqual(await run(y, [5, 73448]), reference(y, 73448));
});
