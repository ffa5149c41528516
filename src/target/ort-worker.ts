// The ONNX Runtime target's worker thread: owns the sessions (one per graph file, created on first use) and
// the KV caches' buffers, and answers the main thread's requests one at a time, in order. After each reply
// is posted the shared flag turns 1, which wakes the main thread whether it waits synchronously
// (Atomics.wait, for TargetModel.forward) or asynchronously (Atomics.waitAsync, for forwardAsync).
import { type MessagePort, workerData } from 'node:worker_threads';
import * as ort from 'onnxruntime-node';
import { type CacheOp, KVStore } from './ort-kv-cache.ts';

export interface WorkerData {
  flag: SharedArrayBuffer;
  port: MessagePort;
  threads: number;
  provider: 'cpu' | 'cuda';
  /** Let idle pool threads spin between ops (ORT's default): lower latency, but CPU burnt that others sharing the cores could use. */
  spin: boolean;
  /** Pack MatMul weights once per session (ORT's default); off, every session reads the one mapped data file. */
  prepack: boolean;
  numLayers: number;
  kvHeads: number;
  headDim: number;
}

export interface RunRequest {
  op: 'run';
  /** Body graph file (capture or decode) and, when logits are wanted, the head graph file. */
  body: string;
  head: string | null;
  B: number;
  T: number;
  /** Width of attention_bias: T (capture) or the cache's capacity + T (decode). */
  S: number;
  ids: BigInt64Array;
  positions: BigInt64Array;
  bias: Float32Array;
  /** Graph outputs to send back besides final_normed (layer_<l>). */
  layerOutputs: string[];
  /** Decode: the cache to read and extend, and its capacity after this step. */
  cache?: { id: number; capacity: number };
}

export interface HeadRequest {
  op: 'head';
  head: string;
  x: Float32Array;
  dims: [number, number, number];
}

export type WorkerRequest = RunRequest | HeadRequest | CacheOp;

export type WorkerReply = { ok: true; outputs: Record<string, { data: Float32Array; dims: number[] }> } | { ok: false; error: string };

const data = workerData as WorkerData;
const signal = new Int32Array(data.flag);
const sessions = new Map<string, Promise<ort.InferenceSession>>();
const caches = new Map<number, KVStore>();
/** An error of a request that has no reply of its own (a cache op), reported with the next reply. */
let deferred: string | null = null;

const errorText = (e: unknown) => (e instanceof Error ? e.message : String(e));

function reply(message: WorkerReply): void {
  const transfer = message.ok ? Object.values(message.outputs).map((o) => o.data.buffer as ArrayBuffer) : [];
  try {
    data.port.postMessage(message, transfer);
  } catch {
    data.port.postMessage(message); // buffers that cannot be detached are copied instead
  }
  Atomics.store(signal, 0, 1);
  Atomics.notify(signal, 0);
}

function session(file: string): Promise<ort.InferenceSession> {
  let s = sessions.get(file);
  if (!s) {
    s = ort.InferenceSession.create(file, {
      intraOpNumThreads: data.threads,
      interOpNumThreads: 1,
      executionMode: 'sequential',
      graphOptimizationLevel: 'all',
      executionProviders: [data.provider],
      extra: { session: { intra_op: { allow_spinning: data.spin ? '1' : '0' }, disable_prepacking: data.prepack ? '0' : '1' } },
    });
    // A failed creation is not cached: the next request tries again (after the main thread rewrote the file).
    s.catch(() => sessions.delete(file));
    sessions.set(file, s);
  }
  return s;
}

function store(id: number): KVStore {
  const s = caches.get(id);
  if (!s) throw new Error(`KV cache ${id} does not exist in the ORT worker (disposed?)`);
  return s;
}

async function run(r: RunRequest): Promise<WorkerReply> {
  const { B, T } = r;
  const feeds: Record<string, ort.Tensor> = {
    input_ids: new ort.Tensor('int64', r.ids, [B, T]),
    position_ids: new ort.Tensor('int64', r.positions, [B, T]),
    attention_bias: new ort.Tensor('float32', r.bias, [B, 1, T, r.S]),
  };
  const fetch = [...r.layerOutputs, 'final_normed'];
  const kv = r.cache ? store(r.cache.id) : null;
  if (kv) {
    if (kv.batch !== B) throw new Error(`KV cache ${r.cache!.id} holds ${kv.batch} rows, the input has ${B}`);
    const dims = [B, data.kvHeads, kv.capacity, data.headDim];
    for (let l = 0; l < data.numLayers; l++) {
      feeds[`past_key_${l}`] = new ort.Tensor('float32', kv.keys[l], dims);
      feeds[`past_value_${l}`] = new ort.Tensor('float32', kv.values[l], dims);
      fetch.push(`new_key_${l}`, `new_value_${l}`);
    }
  }
  const out = await (await session(r.body)).run(feeds, fetch);
  if (kv) {
    const keys = Array.from({ length: data.numLayers }, (_, l) => out[`new_key_${l}`].data as Float32Array);
    const values = Array.from({ length: data.numLayers }, (_, l) => out[`new_value_${l}`].data as Float32Array);
    kv.append(keys, values, T, r.cache!.capacity);
  }
  const outputs: Record<string, { data: Float32Array; dims: number[] }> = {};
  for (const name of [...r.layerOutputs, 'final_normed'])
    outputs[name] = { data: out[name].data as Float32Array, dims: [...out[name].dims] };
  if (r.head) {
    const logits = (await (await session(r.head)).run({ final_normed: out.final_normed as ort.Tensor }, ['logits'])).logits;
    outputs.logits = { data: logits.data as Float32Array, dims: [...logits.dims] };
  }
  return { ok: true, outputs };
}

async function head(r: HeadRequest): Promise<WorkerReply> {
  const out = await (await session(r.head)).run({ final_normed: new ort.Tensor('float32', r.x, r.dims) }, ['logits']);
  return { ok: true, outputs: { logits: { data: out.logits.data as Float32Array, dims: [...out.logits.dims] } } };
}

function cacheOp(m: CacheOp): void {
  switch (m.op) {
    case 'cache-new':
      caches.set(m.id, new KVStore(m.batch, data.numLayers, data.kvHeads, data.headDim));
      break;
    case 'cache-select':
      store(m.id).select(m.slots, m.capacity);
      break;
    case 'cache-truncate':
      store(m.id).truncate(m.length);
      break;
    case 'cache-dispose':
      caches.delete(m.id);
      break;
  }
}

async function handle(m: WorkerRequest): Promise<void> {
  if (m.op === 'run' || m.op === 'head') {
    let answer: WorkerReply;
    try {
      if (deferred) throw new Error(deferred);
      answer = m.op === 'run' ? await run(m) : await head(m);
    } catch (e) {
      answer = { ok: false, error: errorText(e) };
    }
    deferred = null;
    reply(answer);
    return;
  }
  try {
    cacheOp(m);
  } catch (e) {
    deferred ??= errorText(e);
  }
}

// Requests are handled strictly in order: a cache op posted during a run waits for it.
let queue: Promise<void> = Promise.resolve();
data.port.on('message', (m: WorkerRequest) => {
  queue = queue.then(() => handle(m));
});
process.on('uncaughtException', (e) => reply({ ok: false, error: `ORT worker: ${errorText(e)}` }));
process.on('exit', () => {
  // Wakes a main thread blocked in Atomics.wait, which cannot see the worker's 'exit' event.
  Atomics.store(signal, 1, 1);
  Atomics.store(signal, 0, 1);
  Atomics.notify(signal, 0);
});
process.on('unhandledRejection', (e) => reply({ ok: false, error: `ORT worker: ${errorText(e)}` }));
reply({ ok: true, outputs: {} });
