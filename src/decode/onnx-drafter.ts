// The exported ONNX draft (export-onnx --format onnx) as a Drafter, run by ONNX Runtime, so that eval
// measures the very file a server would load. The decoder calls drafters synchronously and onnxruntime-node
// only runs asynchronously, so the session lives in a worker thread (ort-worker.mjs) and each call blocks
// on a shared flag until the worker has replied.
//
// Cache bookkeeping, host side: the context's keys/values [kvH, C, hd] (batch 1), and for each draft node
// its own key/value slot. Expanding nodes of depth d runs them as one batch, one row per node, whose past
// is the context followed by that node's ancestors (depth d - 1 slots each): the graph's built-in mask
// (all past slots, causal among new tokens) then gives exactly the tree visibility of draftDecode.
import fs from 'node:fs';
import path from 'node:path';
import { MessageChannel, type MessagePort, Worker } from 'node:worker_threads';
import type * as tf from '@tensorflow/tfjs';
import type { OnnxDraftInfo } from '../export/onnx.ts';
import { parsePolicy } from '../specexit/policy-file.ts';
import type { ExitRule, ExitSignals } from '../specexit/policy.ts';
import { takeReply } from '../util/worker-reply.ts';
import type { DraftLogits, Drafter } from './drafter.ts';

type FeedTensor = { type: 'float32' | 'int64'; data: Float32Array | BigInt64Array; dims: number[] };
type Outputs = Record<string, { type: string; data: Float32Array | BigInt64Array; dims: number[] }>;

const WAIT_LIMIT_MS = 300_000;

/** An ONNX Runtime session in a worker thread, called synchronously. */
export class SyncOrtSession {
  private readonly worker: Worker;
  private readonly port: MessagePort;
  private readonly flag: Int32Array;
  readonly inputNames: string[];
  readonly outputNames: string[];

  constructor(modelFile: string, threads = 1) {
    const sab = new SharedArrayBuffer(4);
    this.flag = new Int32Array(sab);
    const { port1, port2 } = new MessageChannel();
    this.port = port1;
    this.worker = new Worker(new URL('./ort-worker.mjs', import.meta.url), {
      workerData: { modelFile, flag: sab, port: port2, threads },
      transferList: [port2],
    });
    this.worker.unref();
    const ready = this.wait() as { inputs: string[]; outputs: string[] };
    this.inputNames = ready.inputs;
    this.outputNames = ready.outputs;
  }

  private wait(): Record<string, unknown> {
    // A worker that died cannot answer: give up after a bound far above any draft step rather than hang.
    let msg: { ok: boolean; error?: string };
    try {
      msg = takeReply(this.port, this.flag, () => null, WAIT_LIMIT_MS) as typeof msg;
    } catch (e) {
      throw new Error(`ONNX Runtime worker: ${(e as Error).message}`);
    }
    if (!msg.ok) throw new Error(`ONNX Runtime: ${msg.error}`);
    return msg as Record<string, unknown>;
  }

  run(feeds: Record<string, FeedTensor>): Outputs {
    this.port.postMessage(feeds);
    return (this.wait() as { outputs: Outputs }).outputs;
  }

  close(): void {
    void this.worker.terminate();
    this.port.close();
  }
}

/** Reads <dir>/draft.json, checking that it is an export of this project and that model.onnx is there. */
export function readOnnxDraftInfo(dir: string): OnnxDraftInfo {
  const file = path.join(dir, 'draft.json');
  if (!fs.existsSync(file))
    throw new Error(`${dir}: not an exported ONNX draft (needs draft.json and model.onnx; see specforge export-onnx --format onnx)`);
  const info = JSON.parse(fs.readFileSync(file, 'utf8')) as OnnxDraftInfo;
  if (info.format !== 'specforge-eagle3-onnx')
    throw new Error(`${file}: format is ${JSON.stringify(info.format)}; expected "specforge-eagle3-onnx"`);
  if (!fs.existsSync(path.join(dir, info.model))) throw new Error(`${path.join(dir, info.model)}: missing`);
  return info;
}

/** The exit policy stored in draft.json (field specexit_policy; null when none was calibrated). */
export function onnxDraftPolicy(dir: string, info: OnnxDraftInfo): ExitRule | null {
  const v = info.specexit_policy;
  return v === undefined || v === null ? null : parsePolicy(v, `${path.join(dir, 'draft.json')}: field 'specexit_policy'`);
}

interface Node {
  /** Key and value of this node's own slot, [kvH, hd] each. */
  k: Float32Array;
  v: Float32Array;
  /** Pre-norm output [H]: the hidden input of its children. */
  out: Float32Array;
  logits: Float32Array;
  depth: number;
}

export class OnnxDrafter implements Drafter {
  readonly featureLayers: readonly number[];
  readonly info: OnnxDraftInfo;
  readonly used: Int32Array;
  /** The SpecExit exit policy stored in draft.json (null: none). */
  readonly exitPolicy: ExitRule | null;
  private readonly session: SyncOrtSession;
  /** The target's embedding table [V, H] when the model takes inputs_embeds. */
  private readonly embed: Float32Array | null;
  private ctxK: Float32Array = new Float32Array(0);
  private ctxV: Float32Array = new Float32Array(0);
  private contextLength = 0;
  private readonly nodes = new Map<string, Node>();

  /** `embeddings`: the target's input embedding table, needed when the export has no table of its own. */
  constructor(dir: string, embeddings?: tf.Tensor2D, threads = 1) {
    this.info = readOnnxDraftInfo(dir);
    this.exitPolicy = onnxDraftPolicy(dir, this.info);
    this.used = Int32Array.from(this.info.draft_to_target);
    this.featureLayers = [...this.info.aux_layer_ids];
    if (this.info.embedding === 'input') {
      if (!embeddings) throw new Error(`${dir}: exported without an embedding table; give the target's`);
      if (embeddings.shape[1] !== this.info.hidden_size)
        throw new Error(`embedding table is ${embeddings.shape[1]} wide; the draft's hidden size is ${this.info.hidden_size}`);
      this.embed = embeddings.dataSync() as Float32Array;
    } else this.embed = null;
    this.session = new SyncOrtSession(path.join(dir, this.info.model), threads);
  }

  /** One graph run: B rows of T tokens (Ta from aux features, the rest from hiddens), past of P slots. */
  private step(x: {
    B: number;
    aux: Float32Array;
    Ta: number;
    hidden: Float32Array;
    Th: number;
    ids: number[];
    positions: number[];
    pastK: Float32Array;
    pastV: Float32Array;
    P: number;
  }): Outputs {
    const i = this.info;
    const T = x.Ta + x.Th;
    const F = i.aux_layer_ids.length * i.target_hidden_size;
    const H = i.hidden_size;
    const feeds: Record<string, FeedTensor> = {
      aux_hidden_states: { type: 'float32', data: x.aux, dims: [x.B, x.Ta, F] },
      hidden_states: { type: 'float32', data: x.hidden, dims: [x.B, x.Th, H] },
      position_ids: { type: 'int64', data: BigInt64Array.from(x.positions, BigInt), dims: [x.B, T] },
      past_key: { type: 'float32', data: x.pastK, dims: [x.B, i.num_key_value_heads, x.P, i.head_dim] },
      past_value: { type: 'float32', data: x.pastV, dims: [x.B, i.num_key_value_heads, x.P, i.head_dim] },
    };
    if (this.embed) {
      const e = new Float32Array(x.ids.length * H);
      x.ids.forEach((id, j) => e.set(this.embed!.subarray(id * H, (id + 1) * H), j * H));
      feeds.inputs_embeds = { type: 'float32', data: e, dims: [x.B, T, H] };
    } else feeds.input_ids = { type: 'int64', data: BigInt64Array.from(x.ids, BigInt), dims: [x.B, T] };
    return this.session.run(feeds);
  }

  reset(): void {
    this.nodes.clear();
    this.ctxK = new Float32Array(0);
    this.ctxV = new Float32Array(0);
    this.contextLength = 0;
  }

  extend(nextIds: number[], features: tf.Tensor3D | null): void {
    const i = this.info;
    const n = nextIds.length;
    const F = i.aux_layer_ids.length * i.target_hidden_size;
    if (features?.shape[0] !== 1 || features.shape[1] !== n || features.shape[2] !== F) {
      throw new Error(`ONNX drafter: features must be [1, ${n}, ${F}], got ${features ? `[${features.shape}]` : 'none'}`);
    }
    this.nodes.clear();
    const C = this.contextLength;
    const out = this.step({
      B: 1,
      aux: features.dataSync() as Float32Array,
      Ta: n,
      hidden: new Float32Array(0),
      Th: 0,
      ids: nextIds,
      positions: nextIds.map((_, j) => C + j),
      pastK: this.ctxK,
      pastV: this.ctxV,
      P: C,
    });
    this.ctxK = out.present_key.data as Float32Array;
    this.ctxV = out.present_value.data as Float32Array;
    this.contextLength = C + n;
    const H = i.hidden_size;
    const Vd = i.draft_vocab_size;
    const hid = out.next_hidden.data as Float32Array;
    const logits = out.logits.data as Float32Array;
    this.nodes.set('', {
      k: new Float32Array(0),
      v: new Float32Array(0),
      out: hid.slice((n - 1) * H),
      logits: logits.slice((n - 1) * Vd),
      depth: 0,
    });
  }

  expand(paths: number[][]): DraftLogits[] {
    const todo = new Map<string, number[]>();
    for (const p of paths) {
      const key = p.join(',');
      if (this.nodes.has(key) || todo.has(key)) continue;
      if (!p.length) throw new Error('ONNX drafter: no context yet (extend first)');
      if (!this.nodes.has(p.slice(0, -1).join(','))) throw new Error(`ONNX drafter: node [${p}] expanded before its parent`);
      todo.set(key, p);
    }
    // One batched run per depth: rows of equal past length.
    const byDepth = new Map<number, number[][]>();
    for (const p of todo.values()) byDepth.set(p.length, [...(byDepth.get(p.length) ?? []), p]);
    for (const [d, group] of byDepth) this.expandDepth(d, group);
    return paths.map((p) => ({ vocab: this.used, logits: this.nodes.get(p.join(','))!.logits }));
  }

  private expandDepth(d: number, group: number[][]): void {
    const i = this.info;
    const B = group.length;
    const C = this.contextLength;
    const P = C + d - 1;
    const kvH = i.num_key_value_heads;
    const hd = i.head_dim;
    const H = i.hidden_size;
    const Vd = i.draft_vocab_size;
    const pastK = new Float32Array(B * kvH * P * hd);
    const pastV = new Float32Array(B * kvH * P * hd);
    const hidden = new Float32Array(B * H);
    group.forEach((p, b) => {
      const ancestors = Array.from({ length: d - 1 }, (_, j) => this.nodes.get(p.slice(0, j + 1).join(','))!);
      for (let h = 0; h < kvH; h++) {
        const at = (b * kvH + h) * P * hd;
        pastK.set(this.ctxK.subarray(h * C * hd, (h + 1) * C * hd), at);
        pastV.set(this.ctxV.subarray(h * C * hd, (h + 1) * C * hd), at);
        ancestors.forEach((a, j) => {
          pastK.set(a.k.subarray(h * hd, (h + 1) * hd), at + (C + j) * hd);
          pastV.set(a.v.subarray(h * hd, (h + 1) * hd), at + (C + j) * hd);
        });
      }
      hidden.set(this.nodes.get(p.slice(0, -1).join(','))!.out, b * H);
    });
    const out = this.step({
      B,
      aux: new Float32Array(0),
      Ta: 0,
      hidden,
      Th: 1,
      ids: group.map((p) => p[d - 1]),
      positions: group.map(() => C - 1 + d),
      pastK,
      pastV,
      P,
    });
    const presentK = out.present_key.data as Float32Array;
    const presentV = out.present_value.data as Float32Array;
    const hid = out.next_hidden.data as Float32Array;
    const logits = out.logits.data as Float32Array;
    group.forEach((p, b) => {
      const k = new Float32Array(kvH * hd);
      const v = new Float32Array(kvH * hd);
      for (let h = 0; h < kvH; h++) {
        const at = ((b * kvH + h) * (P + 1) + P) * hd;
        k.set(presentK.subarray(at, at + hd), h * hd);
        v.set(presentV.subarray(at, at + hd), h * hd);
      }
      this.nodes.set(p.join(','), { k, v, out: hid.slice(b * H, (b + 1) * H), logits: logits.slice(b * Vd, (b + 1) * Vd), depth: d });
    });
  }

  /** SpecExit signals of target features [1, n, F], from the graph's specexit_signals output. */
  signals(features: tf.Tensor3D): ExitSignals[] {
    if (!this.info.specexit)
      throw new Error('this ONNX draft has no SpecExit signal heads (export a draft trained with training.specexit: true)');
    const n = features.shape[1];
    const none = new Float32Array(0);
    // The signals depend on the aux features only; token ids and positions are placeholders here.
    const out = this.step({
      B: 1,
      aux: features.dataSync() as Float32Array,
      Ta: n,
      hidden: none,
      Th: 0,
      ids: new Array(n).fill(0),
      positions: Array.from({ length: n }, (_, j) => j),
      pastK: none,
      pastV: none,
      P: 0,
    });
    const s = out.specexit_signals.data as Float32Array;
    return Array.from({ length: n }, (_, j) => ({ confidence: s[3 * j], progress: s[3 * j + 1], remaining: s[3 * j + 2] }));
  }

  dispose(): void {
    this.reset();
    this.session.close();
  }
}
