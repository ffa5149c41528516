// The ONNX Runtime GEMM worker thread: one product session per rank and transpose pattern, built in memory, and the
// main thread's products answered one at a time. After each reply is posted the shared flag turns 1, which
// wakes the main thread blocked in Atomics.wait (tfjs kernels are synchronous; ORT's run is not).
import { type MessagePort, workerData } from 'node:worker_threads';
import * as ort from 'onnxruntime-node';
import { DataType, encodeModel } from '../io/onnx-proto.ts';
import { type DenormalMode, flushDenormalsOnThisThread } from './denormals.ts';

export interface GemmWorkerData {
  flag: SharedArrayBuffer;
  port: MessagePort;
  threads: number;
}

/** C = op(A) op(B), op a transpose of the last two axes where asked; A and B row-major, both 2-D or both 3-D (batched). */
export interface GemmRequest {
  a: Float32Array;
  aDims: number[];
  b: Float32Array;
  bDims: number[];
  transA: boolean;
  transB: boolean;
}

export type GemmReply = { ok: true; c: Float32Array; dims: number[] } | { ok: false; error: string };

/** The worker's first message: ONNX Runtime has loaded, and whether this thread flushes subnormal floats. */
export type ReadyReply = { ok: true; c: Float32Array; dims: number[]; denormals: DenormalMode };

/** A tensor crossing to or from the worker. */
export interface WireTensor {
  type: 'float32' | 'int64';
  data: Float32Array | BigInt64Array;
  dims: number[];
}

/** One run of a whole graph (a training step): the model bytes and memory choice come with the first run of a key. */
export interface GraphRequest {
  kind: 'graph';
  key: string;
  model?: Uint8Array;
  /** Keep ORT's memory arena between runs (see OrtGemm.runGraph). */
  arena?: boolean;
  feeds: Record<string, WireTensor>;
  /** Feeds whose buffers come back with the reply (see OrtGemm.runGraph). */
  lend?: string[];
}

export type GraphReply = { ok: true; outputs: Record<string, WireTensor>; lent: Record<string, WireTensor> } | { ok: false; error: string };

const data = workerData as GemmWorkerData;
const signal = new Int32Array(data.flag);
const sessions = new Map<string, Promise<ort.InferenceSession>>();
const errorText = (e: unknown) => (e instanceof Error ? e.message : String(e));
// Before the first session: ORT runs sessions on this thread (denormals.ts says why this matters).
const denormals = flushDenormalsOnThisThread();

function reply(message: GemmReply | GraphReply | ReadyReply): void {
  const buffers = !message.ok
    ? []
    : 'c' in message
      ? [message.c.buffer]
      : [...Object.values(message.outputs), ...Object.values(message.lent)].map((t) => t.data.buffer);
  try {
    data.port.postMessage(message, buffers as ArrayBuffer[]);
  } catch {
    data.port.postMessage(message);
  }
  Atomics.store(signal, 0, 1);
  Atomics.notify(signal, 0);
}

/**
 * A product graph with every axis dynamic: Gemm (with its transpose flags) for 2-D operands; for 3-D, MatMul
 * after Transposes of the last two axes, which ORT's optimizer folds into the product.
 */
function productModel(rank: number, transA: boolean, transB: boolean): Uint8Array {
  const axes = (p: string) => Array.from({ length: rank }, (_, i) => `${p}${i}`);
  const nodes =
    rank === 2
      ? [{ opType: 'Gemm', inputs: ['a', 'b'], outputs: ['c'], attributes: { transA: transA ? 1 : 0, transB: transB ? 1 : 0 } }]
      : [
          ...(transA ? [{ opType: 'Transpose', inputs: ['a'], outputs: ['at'], attributes: { perm: [0, 2, 1] } }] : []),
          ...(transB ? [{ opType: 'Transpose', inputs: ['b'], outputs: ['bt'], attributes: { perm: [0, 2, 1] } }] : []),
          { opType: 'MatMul', inputs: [transA ? 'at' : 'a', transB ? 'bt' : 'b'], outputs: ['c'] },
        ];
  return encodeModel({
    irVersion: 8,
    opset: 17,
    producerName: 'specforge',
    producerVersion: '0.1.0',
    graph: {
      name: 'product',
      nodes,
      initializers: [],
      inputs: [
        { name: 'a', elemType: DataType.FLOAT, shape: axes('a') },
        { name: 'b', elemType: DataType.FLOAT, shape: axes('b') },
      ],
      outputs: [{ name: 'c', elemType: DataType.FLOAT, shape: axes('c') }],
    },
  });
}

function session(rank: number, transA: boolean, transB: boolean): Promise<ort.InferenceSession> {
  return cachedSession(`${rank}${transA}${transB}`, () => productModel(rank, transA, transB));
}

function cachedSession(key: string, model: () => Uint8Array | undefined, arena = true): Promise<ort.InferenceSession> {
  let s = sessions.get(key);
  if (!s) {
    const bytes = model();
    if (!bytes) return Promise.reject(new Error(`no model for graph '${key}'`));
    s = ort.InferenceSession.create(bytes, {
      intraOpNumThreads: data.threads,
      interOpNumThreads: 1,
      executionMode: 'sequential',
      graphOptimizationLevel: 'all',
      enableCpuMemArena: arena,
      // Idle pool threads do not spin: the cores are shared with the tfjs work between products.
      // Pool threads flush subnormal floats exactly when this thread does, so results do not depend on
      // which thread ran which part.
      extra: { session: { intra_op: { allow_spinning: '0' }, set_denormal_as_zero: denormals.flushing ? '1' : '0' } },
    });
    sessions.set(key, s);
  }
  return s;
}

async function handle(m: GemmRequest): Promise<void> {
  let answer: GemmReply;
  try {
    const s = await session(m.aDims.length, m.transA, m.transB);
    const out = await s.run({ a: new ort.Tensor('float32', m.a, m.aDims), b: new ort.Tensor('float32', m.b, m.bDims) });
    const c = out.c as ort.Tensor;
    answer = { ok: true, c: c.data as Float32Array, dims: [...c.dims] };
  } catch (e) {
    answer = { ok: false, error: errorText(e) };
  }
  reply(answer);
}

async function handleGraph(m: GraphRequest): Promise<void> {
  let answer: GraphReply;
  try {
    const s = await cachedSession(`graph:${m.key}`, () => m.model, m.arena ?? false);
    const feeds: Record<string, ort.Tensor> = {};
    for (const [name, t] of Object.entries(m.feeds)) feeds[name] = new ort.Tensor(t.type, t.data, t.dims);
    const out = await s.run(feeds);
    const outputs: Record<string, WireTensor> = {};
    for (const [name, t] of Object.entries(out))
      outputs[name] = { type: t.type as WireTensor['type'], data: t.data as Float32Array | BigInt64Array, dims: [...t.dims] };
    // ORT is done with its inputs once run returns: lent feeds go back as they came.
    const lent = Object.fromEntries((m.lend ?? []).map((name) => [name, m.feeds[name]]));
    answer = { ok: true, outputs, lent };
  } catch (e) {
    answer = { ok: false, error: errorText(e) };
  }
  reply(answer);
}

let queue: Promise<void> = Promise.resolve();
data.port.on('message', (m: GemmRequest | GraphRequest) => {
  queue = queue.then(() => ('kind' in m ? handleGraph(m) : handle(m)));
});
process.on('uncaughtException', (e) => reply({ ok: false, error: `ORT GEMM worker: ${errorText(e)}` }));
process.on('unhandledRejection', (e) => reply({ ok: false, error: `ORT GEMM worker: ${errorText(e)}` }));
process.on('exit', () => {
  Atomics.store(signal, 1, 1);
  Atomics.store(signal, 0, 1);
  Atomics.notify(signal, 0);
});
reply({ ok: true, c: new Float32Array(0), dims: [], denormals });
