// ONNX Runtime in a worker thread, answering one request at a time so that the main thread can wait for
// it synchronously (see SyncOrtSession in onnx-drafter.ts): after each reply is posted, the shared flag
// becomes 1 and the main thread, blocked in Atomics.wait, wakes and takes the reply off its port.
// Plain JavaScript so that the worker needs no TypeScript loader.
import { workerData } from 'node:worker_threads';
import * as ort from 'onnxruntime-node';

const { modelFile, flag, port, threads } = workerData;
const signal = new Int32Array(flag);

function reply(message) {
  port.postMessage(message);
  Atomics.store(signal, 0, 1);
  Atomics.notify(signal, 0);
}

const errorText = (e) => (e instanceof Error ? e.message : String(e));

let session = null;
try {
  session = await ort.InferenceSession.create(modelFile, {
    intraOpNumThreads: threads,
    interOpNumThreads: 1,
    executionMode: 'sequential',
    graphOptimizationLevel: 'all',
  });
  reply({ ok: true, inputs: session.inputNames, outputs: session.outputNames });
} catch (e) {
  reply({ ok: false, error: `${modelFile}: ${errorText(e)}` });
}

port.on('message', async (feeds) => {
  try {
    const tensors = {};
    for (const [name, t] of Object.entries(feeds)) tensors[name] = new ort.Tensor(t.type, t.data, t.dims);
    const out = await session.run(tensors);
    const result = {};
    for (const [name, t] of Object.entries(out)) result[name] = { type: t.type, data: t.data, dims: t.dims };
    reply({ ok: true, outputs: result });
  } catch (e) {
    reply({ ok: false, error: errorText(e) });
  }
});
