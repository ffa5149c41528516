// Large 2-D products of the tfjs models run by ONNX Runtime's GEMM (MLAS) in a worker thread. On the wasm
// backend tfjs multiplies on one core through XNNPACK at about 16-25 GFLOP/s; ORT's GEMM uses every core it
// is given at several times that. A product crosses the wasm heap twice each way (copies), so only products
// large enough for the copies to be cheap against the arithmetic go this way (backend/matmul.ts decides).
// The call is synchronous, as tfjs kernels are: the worker runs ORT's asynchronous run() and wakes the caller,
// blocked in Atomics.wait, through a shared flag.
import { MessageChannel, type MessagePort, Worker } from 'node:worker_threads';
import { takeReply } from '../util/worker-reply.ts';
import type { DenormalMode } from './denormals.ts';
import type { GemmReply, GemmRequest, GemmWorkerData, GraphReply, GraphRequest, ReadyReply, WireTensor } from './ort-gemm-worker.ts';

export type { WireTensor } from './ort-gemm-worker.ts';

export class OrtGemmError extends Error {}

export class OrtGemm {
  readonly threads: number;
  /** Whether the worker thread flushes subnormal floats to zero (backend/denormals.ts). */
  denormals: DenormalMode = { flushing: false, reason: 'not started' };
  private readonly worker: Worker;
  private readonly port: MessagePort;
  private readonly flag: Int32Array;
  private closed = false;
  private failure: string | null = null;
  /** Graph keys whose model the worker has. */
  private readonly graphs = new Set<string>();

  private constructor(threads: number) {
    this.threads = threads;
    // flag[0]: a reply is waiting; flag[1]: the worker has exited.
    const sab = new SharedArrayBuffer(8);
    this.flag = new Int32Array(sab);
    const { port1, port2 } = new MessageChannel();
    this.port = port1;
    const workerData: GemmWorkerData = { flag: sab, port: port2, threads };
    this.worker = new Worker(new URL('./ort-gemm-worker-bootstrap.mjs', import.meta.url), { workerData, transferList: [port2] });
    this.worker.unref();
    this.worker.on('error', (e) => {
      this.failure ??= e instanceof Error ? e.message : String(e);
      this.signalExit();
    });
    this.worker.on('exit', () => this.signalExit());
  }

  /** Starts the worker with `threads` intra-op threads; resolves once ONNX Runtime has loaded there. */
  static async start(threads: number): Promise<OrtGemm> {
    const g = new OrtGemm(threads);
    const wait = (
      Atomics as unknown as { waitAsync(a: Int32Array, i: number, v: number): { async: boolean; value: Promise<string> | string } }
    ).waitAsync(g.flag, 0, 0);
    g.worker.ref();
    try {
      if (wait.async) await wait.value;
    } finally {
      g.worker.unref();
    }
    try {
      g.denormals = (g.wake() as ReadyReply).denormals;
    } catch (e) {
      g.dispose();
      throw e;
    }
    return g;
  }

  /**
   * op(A) op(B) for row-major A [aDims] and B [bDims], both 2-D or both 3-D (batched; op: a transpose of
   * the last two axes where asked). The inputs are handed
   * to the worker (their buffers are transferred when they own them whole, so the caller must not reuse them).
   */
  product(a: Float32Array, aDims: number[], b: Float32Array, bDims: number[], transA = false, transB = false) {
    if (this.closed) throw new OrtGemmError('ORT GEMM: used after dispose()');
    if (Atomics.load(this.flag, 1)) throw new OrtGemmError(this.exitMessage());
    const request: GemmRequest = { a, aDims, b, bDims, transA, transB };
    const own = (x: Float32Array) => (x.byteOffset === 0 && x.buffer.byteLength === x.byteLength ? [x.buffer as ArrayBuffer] : []);
    this.port.postMessage(request, a.buffer === b.buffer ? own(a) : [...own(a), ...own(b)]);
    const reply = this.wake();
    return { c: reply.c, dims: reply.dims };
  }

  /**
   * Runs a whole graph once, synchronously; `model` is built (and sent) only the first time `key` is seen.
   * Feed buffers are transferred when they own their memory whole, so the caller must not reuse them, except
   * the feeds named in `lend`: their buffers come back untouched in `lent`, so values the caller keeps from
   * run to run (the weights) cross to the worker and back without a copy.
   * With `arena` the session keeps ORT's memory arena between runs: each run then reuses the blocks the
   * last one touched, where without it every large tensor is a fresh allocation whose pages fault in on
   * first write (measured 10-15% of a training step at the Qwen2.5-0.5B draft shape). The arena holds what
   * it grew to, in powers of two (22 GiB at the Qwen3-0.6B shape), so callers ask for it only where that fits.
   */
  runGraph(
    key: string,
    model: () => Uint8Array,
    feeds: Record<string, WireTensor>,
    opts: { arena?: boolean; lend?: string[] } = {},
  ): { outputs: Record<string, WireTensor>; lent: Record<string, WireTensor> } {
    if (this.closed) throw new OrtGemmError('ORT GEMM: used after dispose()');
    if (Atomics.load(this.flag, 1)) throw new OrtGemmError(this.exitMessage());
    const first = !this.graphs.has(key);
    const request: GraphRequest = {
      kind: 'graph',
      key,
      feeds,
      ...(opts.lend ? { lend: opts.lend } : {}),
      ...(first ? { model: model(), arena: opts.arena ?? false } : {}),
    };
    const buffers = new Set<ArrayBuffer>();
    for (const t of Object.values(feeds))
      if (t.data.byteOffset === 0 && t.data.buffer.byteLength === t.data.byteLength) buffers.add(t.data.buffer as ArrayBuffer);
    this.port.postMessage(request, [...buffers]);
    this.graphs.add(key);
    const reply = this.wake() as unknown as GraphReply & { ok: true }; // wake() throws a failed run's error
    return { outputs: reply.outputs, lent: reply.lent };
  }

  dispose(): void {
    if (this.closed) return;
    this.closed = true;
    this.port.close();
    void this.worker.terminate();
  }

  /** The worker's next reply (blocking until it is there). */
  private wake(): GemmReply & { ok: true } {
    let reply: GemmReply;
    try {
      reply = takeReply(this.port, this.flag, () => (Atomics.load(this.flag, 1) ? this.exitMessage() : null)) as GemmReply;
    } catch (e) {
      throw new OrtGemmError((e as Error).message);
    }
    if (!reply.ok) throw new OrtGemmError(`ONNX Runtime GEMM: ${reply.error}`);
    return reply;
  }

  private exitMessage(): string {
    return `ONNX Runtime GEMM worker exited${this.failure ? `: ${this.failure}` : ''}`;
  }

  private signalExit(): void {
    Atomics.store(this.flag, 1, 1);
    Atomics.store(this.flag, 0, 1);
    Atomics.notify(this.flag, 0);
  }
}
