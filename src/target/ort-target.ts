// The target LM on ONNX Runtime (CPU by default, CUDA on request): the TargetModel interface over the
// graphs of onnx-decoder.ts and the weight cache of ort-weights.ts. The sessions and the KV caches' buffers
// live in a worker thread (ort-worker.ts); forward() blocks on it, as the rest of the interface is
// synchronous, and forwardAsync() awaits it, leaving the calling thread free. Outputs are tfjs tensors like
// TfjsTarget's, so that capture, training and eval take either target.
import fs from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { MessageChannel, type MessagePort, Worker } from 'node:worker_threads';
import * as tf from '@tensorflow/tfjs';
import { encodeModel } from '../io/onnx-proto.ts';
import { writeAtomic } from '../io/atomic.ts';
import { type ModelConfig, loadModelConfig } from '../io/hf-config.ts';
import { type BodyKind, CAPTURE_BLOCKS, MASKED, buildBodyGraph, buildHeadGraph } from './onnx-decoder.ts';
import { type CacheOp, OrtKVCache, capacityFor } from './ort-kv-cache.ts';
import { type WeightCache, ensureWeightCache, readStored } from './ort-weights.ts';
import type { HeadRequest, RunRequest, WorkerData, WorkerReply, WorkerRequest } from './ort-worker.ts';
import { takeReply } from '../util/worker-reply.ts';
import { checkIds, type ForwardOptions, type TargetInput, type TargetModel, type TargetOutput } from './runtime.ts';

export const ORT_PROVIDERS = ['cpu', 'cuda'] as const;
export type OrtProvider = (typeof ORT_PROVIDERS)[number];

export interface OrtTargetOptions {
  /** ONNX Runtime intra-op threads; 0 or absent: every core of this machine (give cores / ranks when several processes share it). */
  threads?: number;
  provider?: OrtProvider;
  /**
   * Let ORT's idle threads spin between ops (its own default). Off by default: on cores shared with other
   * processes (ranks, other jobs) spinning burns CPU they need, and large ops gain nothing from it.
   */
  spin?: boolean;
  /**
   * Pack the weights for the GEMM kernel once per session (default true). Packed copies are private to each
   * session (capture, decode, head) and each process or rank; without them every session and rank shares the
   * one page-cache copy of the data file, at ~5% slower long prefills and ~2.5x slower few-token steps
   * (measured on Qwen3-0.6B shapes, 2 threads).
   */
  prepack?: boolean;
  /** Root of the converted-weights cache (default $SPECFORGE_CACHE or ~/.cache/specforge). */
  cacheDir?: string;
  log?: (msg: string) => void;
}

export class OrtTargetError extends Error {}

const require = createRequire(import.meta.url);

/** Fails with instructions when the CUDA provider cannot load: its libraries are not in the npm package. */
export function checkProvider(provider: OrtProvider): void {
  if (!ORT_PROVIDERS.includes(provider))
    throw new OrtTargetError(`ONNX Runtime provider '${provider}': expected one of ${ORT_PROVIDERS.join(', ')}`);
  if (provider !== 'cuda') return;
  const how =
    'onnxruntime-node ships its CUDA provider only for Linux x64 (CUDA 12 with cuDNN 9), downloaded at install time: ' +
    "reinstall with `npm install onnxruntime-node --onnxruntime-node-install=cuda12` (this project's .npmrc skips that download), " +
    'or use runtime.target_provider: cpu';
  if (process.platform !== 'linux' || process.arch !== 'x64')
    throw new OrtTargetError(`ONNX Runtime provider 'cuda' is not available on ${process.platform}/${process.arch}: ${how}`);
  const binDir = path.join(path.dirname(require.resolve('onnxruntime-node/package.json')), 'bin', 'napi-v6', 'linux', 'x64');
  const lib = path.join(binDir, 'libonnxruntime_providers_cuda.so');
  if (!fs.existsSync(lib)) throw new OrtTargetError(`ONNX Runtime provider 'cuda' is not installed (${lib} is missing): ${how}`);
}

let nextCacheId = 1;

export class OrtTarget implements TargetModel {
  readonly config: ModelConfig;
  /** The converted-weights folder in use, and whether this load built it. */
  readonly weights: WeightCache;
  readonly threads: number;
  readonly provider: OrtProvider;
  private readonly worker: Worker;
  private readonly port: MessagePort;
  private readonly flag: Int32Array;
  private readonly graphs = new Map<string, string>();
  private readonly caches = new Map<number, OrtKVCache>();
  private embed: tf.Tensor2D | null = null;
  private busy = false;
  private closed = false;

  private constructor(
    config: ModelConfig,
    weights: WeightCache,
    threads: number,
    provider: OrtProvider,
    tuning: { spin: boolean; prepack: boolean },
  ) {
    this.config = config;
    this.weights = weights;
    this.threads = threads;
    this.provider = provider;
    // flag[0]: a reply is waiting; flag[1]: the worker has exited (set by the worker, or here on its 'error').
    const sab = new SharedArrayBuffer(8);
    this.flag = new Int32Array(sab);
    const { port1, port2 } = new MessageChannel();
    this.port = port1;
    const workerData: WorkerData = {
      flag: sab,
      port: port2,
      threads,
      provider,
      ...tuning,
      numLayers: config.numLayers,
      kvHeads: config.numKvHeads,
      headDim: config.headDim,
    };
    this.worker = new Worker(new URL('./ort-worker-bootstrap.mjs', import.meta.url), { workerData, transferList: [port2] });
    this.worker.unref();
    // A worker that fails before it can reply (its imports, say) must still wake a waiting caller.
    this.worker.on('error', (e) => {
      this.failure ??= e instanceof Error ? e.message : String(e);
      this.signalExit();
    });
    this.worker.on('exit', () => this.signalExit());
  }

  private failure: string | null = null;

  private exitMessage(): string {
    return `ONNX Runtime worker exited${this.failure ? `: ${this.failure}` : ''}; load the target again`;
  }

  private signalExit(): void {
    Atomics.store(this.flag, 1, 1);
    Atomics.store(this.flag, 0, 1);
    Atomics.notify(this.flag, 0);
  }

  /**
   * Loads a Hugging Face folder (config.json plus safetensors): converts the weights into the cache on first
   * use (a few seconds per GB), then starts the worker.
   */
  static async load(dir: string, opts: OrtTargetOptions = {}): Promise<OrtTarget> {
    const provider = opts.provider ?? 'cpu';
    checkProvider(provider);
    if (opts.threads !== undefined && !(Number.isInteger(opts.threads) && opts.threads >= 0))
      throw new OrtTargetError(`ONNX Runtime threads: expected a non-negative integer (0: every core), got ${opts.threads}`);
    const threads = opts.threads || os.availableParallelism();
    const config = loadModelConfig(dir);
    const weights = ensureWeightCache(dir, config, { cacheRoot: opts.cacheDir, log: opts.log });
    const target = new OrtTarget(config, weights, threads, provider, { spin: opts.spin ?? false, prepack: opts.prepack ?? true });
    try {
      await target.awaitReply(); // the worker's greeting: ONNX Runtime loaded
    } catch (e) {
      target.dispose();
      throw e;
    }
    return target;
  }

  // ---- worker channel ----

  /** The worker's next reply, once its flag has been seen (blocking until it is on the port). */
  private wake(): WorkerReply {
    try {
      return takeReply(this.port, this.flag, () => (Atomics.load(this.flag, 1) ? this.exitMessage() : null)) as WorkerReply;
    } catch (e) {
      throw new OrtTargetError((e as Error).message);
    }
  }

  private async awaitReply(): Promise<WorkerReply> {
    const wait = (
      Atomics as unknown as { waitAsync(a: Int32Array, i: number, v: number): { async: boolean; value: Promise<string> | string } }
    ).waitAsync(this.flag, 0, 0);
    // A pending waitAsync does not keep Node alive; the worker does while it is referenced.
    this.worker.ref();
    try {
      if (wait.async) await wait.value;
    } finally {
      this.worker.unref();
    }
    const reply = this.wake();
    if (!reply.ok) throw new OrtTargetError(`ONNX Runtime: ${reply.error}`);
    return reply;
  }

  private request(m: WorkerRequest, transfer: ArrayBuffer[]): void {
    if (this.closed) throw new OrtTargetError('ORT target: used after dispose()');
    if (Atomics.load(this.flag, 1)) throw new OrtTargetError(this.exitMessage());
    if (this.busy) throw new OrtTargetError('ORT target: a forwardAsync call is still running; await it first');
    this.port.postMessage(m, transfer);
  }

  private callSync(m: WorkerRequest, transfer: ArrayBuffer[]): WorkerReply & { ok: true } {
    this.request(m, transfer);
    const reply = this.wake();
    if (!reply.ok) throw new OrtTargetError(`ONNX Runtime: ${reply.error}`);
    return reply;
  }

  private async callAsync(m: WorkerRequest, transfer: ArrayBuffer[]): Promise<WorkerReply & { ok: true }> {
    this.request(m, transfer);
    this.busy = true;
    try {
      return (await this.awaitReply()) as WorkerReply & { ok: true };
    } finally {
      this.busy = false;
    }
  }

  private sendCacheOp = (op: CacheOp): void => {
    if (op.op === 'cache-dispose') this.caches.delete(op.id);
    if (!this.closed) this.port.postMessage(op);
  };

  // ---- graphs ----

  /**
   * The graph file for a body kind, layer set and attention blocking, (re)written when missing or different
   * from what this code builds.
   */
  private graphFile(kind: BodyKind | 'head', layers: number[] = [], blocks = 1): string {
    const name =
      kind === 'head' ? 'head.onnx' : `${kind}${kind === 'capture' ? `-b${blocks}` : ''}-${layers.length ? layers.join('_') : 'none'}.onnx`;
    const known = this.graphs.get(name);
    if (known) return known;
    const file = path.join(this.weights.dir, name);
    const proto =
      kind === 'head'
        ? buildHeadGraph(this.config, this.weights.table)
        : buildBodyGraph(this.config, this.weights.table, kind, layers, blocks);
    const bytes = Buffer.from(encodeModel(proto));
    const same = fs.existsSync(file) && fs.statSync(file).size === bytes.length && fs.readFileSync(file).equals(bytes);
    if (!same) {
      try {
        writeAtomic(file, [bytes]);
      } catch (e) {
        throw new OrtTargetError(`${file}: cannot write the graph (${(e as Error).message})`);
      }
    }
    this.graphs.set(name, file);
    return file;
  }

  // ---- TargetModel ----

  newCache(batch: number): OrtKVCache {
    if (this.closed) throw new OrtTargetError('ORT target: used after dispose()');
    const cache = new OrtKVCache(batch, nextCacheId++, this.sendCacheOp);
    this.caches.set(cache.id, cache);
    return cache;
  }

  forward(input: TargetInput, opts: ForwardOptions = {}): TargetOutput {
    const p = this.prepare(input, opts);
    const reply = this.callSync(p.request, p.transfer);
    return this.finish(p, reply);
  }

  /** forward() without blocking this thread while ONNX Runtime computes. */
  async forwardAsync(input: TargetInput, opts: ForwardOptions = {}): Promise<TargetOutput> {
    const p = this.prepare(input, opts);
    // The cache's bookkeeping is updated when the reply comes; until then it must not change.
    if (p.cache) p.cache.inFlight = true;
    try {
      const reply = await this.callAsync(p.request, p.transfer);
      return this.finish(p, reply);
    } finally {
      if (p.cache) p.cache.inFlight = false;
    }
  }

  private prepare(input: TargetInput, opts: ForwardOptions) {
    const c = this.config;
    const { ids } = input;
    const [B, T] = checkIds(ids, c.vocabSize);
    const mask = input.attentionMask ?? ids.map((row) => row.map(() => 1));
    if (mask.length !== B || mask.some((r) => r.length !== T))
      throw new Error(`target forward: attentionMask must be [${B}][${T}] like ids`);
    const cache = opts.cache as OrtKVCache | undefined;
    if (cache && !(cache instanceof OrtKVCache)) throw new Error('target forward: cache was not made by this model');
    if (cache?.isDisposed) throw new Error('target forward: the cache was disposed');
    if (cache && this.caches.get(cache.id) !== cache) throw new Error('target forward: cache was not made by this model');
    if (cache && cache.batch !== B) throw new Error(`target forward: cache holds ${cache.batch} rows, input has ${B}`);
    const start = cache ? cache.nextPositions() : new Array(B).fill(0);
    const positions = input.positionIds ?? ids.map((row, b) => row.map((_, t) => start[b] + t));
    if (positions.length !== B || positions.some((r) => r.length !== T))
      throw new Error(`target forward: positionIds must be [${B}][${T}] like ids`);
    const layers = [...new Set(opts.layers ?? [])].sort((a, b) => a - b);
    for (const l of layers)
      if (!Number.isInteger(l) || l < 0 || l >= c.numLayers) throw new Error(`target forward: layer ${l} outside [0, ${c.numLayers})`);
    const capacity = cache?.capacity ?? 0;
    const bias = attentionBias(mask, cache?.length ?? 0, capacity, cache?.keyMask, input.treeMask);
    const request: RunRequest = {
      op: 'run',
      // Blocked attention skips keys after each query block: only when no token may see a later one.
      body: cache
        ? this.graphFile('decode', layers)
        : this.graphFile('capture', layers, seesOnlyEarlier(input.treeMask) ? CAPTURE_BLOCKS : 1),
      head: opts.logits === false ? null : this.graphFile('head'),
      B,
      T,
      S: capacity + T,
      ids: BigInt64Array.from(ids.flat(), (v) => BigInt(v)),
      positions: BigInt64Array.from(positions.flat(), (v) => BigInt(v)),
      bias,
      layerOutputs: layers.map((l) => `layer_${l}`),
      ...(cache ? { cache: { id: cache.id, capacity: cache.length + T > capacity ? capacityFor(cache.length + T) : capacity } } : {}),
    };
    return {
      request,
      transfer: [request.ids.buffer, request.positions.buffer, bias.buffer] as ArrayBuffer[],
      cache,
      mask,
      positions,
      layers,
    };
  }

  private finish(p: ReturnType<OrtTarget['prepare']>, reply: WorkerReply & { ok: true }): TargetOutput {
    if (p.cache) p.cache.recordSlots(p.mask, p.positions, p.request.cache!.capacity);
    const t3 = (name: string) => {
      const o = reply.outputs[name];
      return tf.tensor3d(o.data, o.dims as [number, number, number]);
    };
    const layers = new Map<number, tf.Tensor3D>();
    for (const l of p.layers) layers.set(l, t3(`layer_${l}`));
    return { finalNormed: t3('final_normed'), layers, ...(reply.outputs.logits ? { logits: t3('logits') } : {}) };
  }

  lmHead(finalNormed: tf.Tensor): tf.Tensor {
    const { request, transfer } = this.headRequest(finalNormed);
    const o = this.callSync(request, transfer).outputs.logits;
    return tf.tensor(o.data, [...finalNormed.shape.slice(0, -1), this.config.vocabSize]);
  }

  /** lmHead() without blocking this thread. */
  async lmHeadAsync(finalNormed: tf.Tensor): Promise<tf.Tensor> {
    const { request, transfer } = this.headRequest(finalNormed);
    const o = (await this.callAsync(request, transfer)).outputs.logits;
    return tf.tensor(o.data, [...finalNormed.shape.slice(0, -1), this.config.vocabSize]);
  }

  private headRequest(x: tf.Tensor): { request: HeadRequest; transfer: ArrayBuffer[] } {
    const H = this.config.hiddenSize;
    if (x.shape[x.shape.length - 1] !== H) throw new Error(`lmHead: input is [${x.shape}]; its last axis must be the hidden size ${H}`);
    const rows = x.size / H;
    const data = Float32Array.from(x.dataSync() as Float32Array);
    return { request: { op: 'head', head: this.graphFile('head'), x: data, dims: [1, rows, H] }, transfer: [data.buffer] };
  }

  /** The input embedding table [V, H], read once from the converted weights. */
  embeddings(): tf.Tensor2D {
    if (!this.embed)
      this.embed = tf.tensor2d(readStored(this.weights, 'model.embed_tokens.weight'), [this.config.vocabSize, this.config.hiddenSize]);
    return this.embed;
  }

  dispose(): void {
    if (this.closed) return;
    for (const c of [...this.caches.values()]) c.dispose();
    this.closed = true;
    this.embed?.dispose();
    this.embed = null;
    void this.worker.terminate();
    this.port.close();
  }
}

/** Whether a tree mask (absent: the causal rule) lets each token see only itself and earlier tokens. */
function seesOnlyEarlier(tree: number[][] | undefined): boolean {
  return !tree || tree.every((row, i) => row.every((v, j) => j <= i || v !== 1));
}

/**
 * Additive attention bias [B, 1, T, capacity + T], the host side of TfjsTarget's: the cache's real slots
 * are visible, its padding and unfilled slots (length .. capacity) are not; among the new tokens the
 * causal rule (or the tree mask) applies, and padding is never attended to.
 */
export function attentionBias(
  mask: number[][],
  past: number,
  capacity: number,
  pastMask: number[][] | undefined,
  tree: number[][] | undefined,
): Float32Array {
  const B = mask.length;
  const T = mask[0].length;
  const S = capacity + T;
  if (tree && (tree.length !== T || tree.some((r) => r.length !== T))) throw new Error(`target forward: treeMask must be [${T}][${T}]`);
  const bias = new Float32Array(B * T * S).fill(MASKED);
  for (let b = 0; b < B; b++) {
    for (let i = 0; i < T; i++) {
      const row = (b * T + i) * S;
      for (let j = 0; j < past; j++) if (pastMask![b][j]) bias[row + j] = 0;
      for (let j = 0; j < T; j++) {
        const visible = tree ? tree[i][j] === 1 : j <= i;
        if (visible && mask[b][j]) bias[row + capacity + j] = 0;
      }
    }
  }
  return bias;
}
