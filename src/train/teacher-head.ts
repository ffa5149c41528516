// What training needs of the target besides captured features: its input embedding (the draft's frozen
// embedding) and its lm_head (to rebuild the teacher from the stored final normed hidden state). Only these
// tensors are read from the checkpoint, not the whole model. At a real vocabulary (Qwen3: 151936) a
// [T, V] logits tensor is 1.2 GB at T = 2048, so the teacher is computed in row chunks and only what the
// loss needs is kept: the logits at the draft vocabulary and each row's argmax over the whole vocabulary.
import * as tf from '@tensorflow/tfjs';
import { linear, ortWorker } from '../backend/matmul.ts';
import type { OrtGemm } from '../backend/ort-gemm.ts';
import type { ModelConfig } from '../io/hf-config.ts';
import { DataType, encodeModel } from '../io/onnx-proto.ts';
import { SafetensorsFolder } from '../io/safetensors.ts';
import { frozenGather } from '../nn/layers.ts';
import type { TargetDraftLogits } from './ttt.ts';
import { argmaxNodes } from './graph/argmax.ts';

/** Floats of full-vocabulary logits computed at once (64 MiB): the row chunk is this over V. */
const CHUNK_FLOATS = 1 << 24;

export class TeacherHead {
  /** The embedding [V, H]; null for a tied model, whose [H, V] head serves the lookups (held once). */
  private readonly table: tf.Tensor2D | null;
  private readonly head: tf.Tensor2D; // [H, V]
  private readonly divisor: number;
  /** Rows of full-vocabulary logits per chunk. */
  readonly chunkRows: number;
  /** The ONNX Runtime graph's key per draft vocabulary (its model holds the head, so it is sent once). */
  private readonly ortKeys = new Map<Int32Array, string>();
  private static nextId = 0;
  private readonly id = TeacherHead.nextId++;

  /** Rows per ONNX Runtime run: native memory, so four times the chunk (fewer, larger products). */
  private readonly ortChunkRows: number;

  constructor(table: tf.Tensor2D | null, headInOut: tf.Tensor2D, logitDivisor: number, chunkRows?: number) {
    this.table = table;
    this.head = headInOut;
    this.divisor = logitDivisor;
    this.chunkRows = chunkRows ?? Math.max(1, Math.floor(CHUNK_FLOATS / headInOut.shape[1]));
    this.ortChunkRows = chunkRows ?? Math.max(1, Math.floor((4 * CHUNK_FLOATS) / headInOut.shape[1]));
  }

  static load(dir: string, c: ModelConfig): TeacherHead {
    const folder = new SafetensorsFolder(dir);
    const read = (name: string) => {
      const t = folder.read(name);
      if (t.shape[0] !== c.vocabSize || t.shape[1] !== c.hiddenSize)
        throw new Error(`${dir}: '${name}' has shape [${t.shape}], expected [${c.vocabSize}, ${c.hiddenSize}]`);
      return t.data as Float32Array;
    };
    const embed = read('model.embed_tokens.weight');
    // Transposed on the host, so the backend never holds both layouts at once.
    const headOf = (rows: Float32Array) => tf.tensor2d(transpose(rows, c.vocabSize, c.hiddenSize), [c.hiddenSize, c.vocabSize]);
    if (c.tieWordEmbeddings && !folder.has('lm_head.weight')) return new TeacherHead(null, headOf(embed), c.logitDivisor);
    const table = tf.tensor2d(embed, [c.vocabSize, c.hiddenSize]);
    return new TeacherHead(table, headOf(read('lm_head.weight')), c.logitDivisor);
  }

  /** Bytes the backend holds for the teacher (the embedding once when tied). */
  get bytes(): number {
    return 4 * (this.head.size + (this.table?.size ?? 0));
  }

  /** The frozen embedding of ids [B, T] -> [B, T, H]. */
  embed(ids: tf.Tensor2D): tf.Tensor3D {
    if (this.table) return frozenGather(this.table, ids) as tf.Tensor3D;
    const [B, T] = ids.shape;
    return tf.tidy(() => tf.transpose(frozenGather(this.head, ids.reshape([B * T]), 1)).reshape([B, T, this.head.shape[0]]));
  }

  /**
   * The teacher of final normed hidden states [B, T, H]: the target's logits at the draft vocabulary
   * `used` [B, T, Vd] and each row's argmax over the whole vocabulary, computed `chunkRows` rows at a time.
   */
  draftLogits(finalHidden: tf.Tensor3D, used: Int32Array): TargetDraftLogits {
    const worker = ortWorker();
    if (worker) return this.ortDraftLogits(worker, finalHidden, used);
    const [B, T, H] = finalHidden.shape;
    const N = B * T;
    const argmax = new Int32Array(N);
    const usedT = tf.tensor1d(used, 'int32');
    const parts: tf.Tensor2D[] = [];
    const flat = finalHidden.reshape([N, H]) as tf.Tensor2D;
    for (let at = 0; at < N; at += this.chunkRows) {
      const n = Math.min(this.chunkRows, N - at);
      const [part, best] = tf.tidy(() => {
        const x = flat.slice([at, 0], [n, H]);
        const logits = linear(this.divisor === 1 ? x : tf.div(x, this.divisor), this.head) as tf.Tensor2D;
        return [tf.gather(logits, usedT, 1) as tf.Tensor2D, tf.argMax(logits, -1)];
      });
      argmax.set(best.dataSync() as Int32Array, at);
      best.dispose();
      parts.push(part);
    }
    const logits = tf.tidy(() => (parts.length === 1 ? parts[0].clone() : tf.concat(parts, 0)).reshape([B, T, used.length])) as tf.Tensor3D;
    tf.dispose([...parts, usedT, flat]);
    const fullArgmax = Array.from({ length: B }, (_, b) => Array.from(argmax.subarray(b * T, (b + 1) * T)));
    return { logits, fullArgmax };
  }

  /**
   * draftLogits on ONNX Runtime (when runtime.gemm put a worker up): the head lives in the worker's graph, so
   * only the hidden rows go there and only the draft-vocabulary logits and argmax come back; tfjs would copy
   * the whole [H, V] head to ORT for every chunk's product and keep each chunk's [rows, V] logits.
   */
  private ortDraftLogits(worker: OrtGemm, finalHidden: tf.Tensor3D, used: Int32Array): TargetDraftLogits {
    const [B, T, H] = finalHidden.shape;
    const N = B * T;
    let key = this.ortKeys.get(used);
    if (!key) {
      key = `teacher:${this.id}:${this.ortKeys.size}`;
      this.ortKeys.set(used, key);
    }
    const x = Float32Array.from(finalHidden.dataSync() as Float32Array);
    const logits = new Float32Array(N * used.length);
    const argmax = new Int32Array(N);
    // Chunks of equal size (512 rows as 2 x 256, not 441 + 71): a short last chunk runs the product slower.
    const rows = Math.ceil(N / Math.ceil(N / this.ortChunkRows));
    for (let at = 0; at < N; at += rows) {
      const n = Math.min(rows, N - at);
      // With ORT's arena: a chunk's [rows, V] logits (up to 256 MiB) reuse the last chunk's memory.
      const { outputs: out } = worker.runGraph(
        key,
        () => this.teacherModel(used),
        { x: { type: 'float32', data: x.slice(at * H, (at + n) * H), dims: [n, H] } },
        { arena: true },
      );
      logits.set(out.draft.data as Float32Array, at * used.length);
      argmax.set(Int32Array.from(out.argmax.data as BigInt64Array, Number), at);
    }
    const fullArgmax = Array.from({ length: B }, (_, b) => Array.from(argmax.subarray(b * T, (b + 1) * T)));
    return { logits: tf.tensor3d(logits, [B, T, used.length]), fullArgmax };
  }

  /** x [N, H] -> draft = (x / divisor) head [:, used], argmax = argmax over all V (the first on ties, as tfjs). */
  private teacherModel(used: Int32Array): Uint8Array {
    const [H, V] = this.head.shape;
    const bytes = (a: ArrayBufferView) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
    const argmax = argmaxNodes('logits', 'argmax', 2, V, 'argmax');
    return encodeModel({
      irVersion: 8,
      opset: 17,
      producerName: 'specforge',
      producerVersion: '0.1.0',
      graph: {
        name: 'teacher',
        nodes: [
          { opType: 'Div', inputs: ['x', 'divisor'], outputs: ['xs'] },
          { opType: 'MatMul', inputs: ['xs', 'head'], outputs: ['logits'] },
          { opType: 'Gather', inputs: ['logits', 'used'], outputs: ['draft'], attributes: { axis: 1 } },
          ...argmax.nodes,
        ],
        initializers: [
          { name: 'head', dataType: DataType.FLOAT, dims: [H, V], raw: bytes(this.head.dataSync() as Float32Array) },
          { name: 'used', dataType: DataType.INT64, dims: [used.length], raw: bytes(BigInt64Array.from(used, BigInt)) },
          { name: 'divisor', dataType: DataType.FLOAT, dims: [], raw: bytes(Float32Array.of(this.divisor)) },
          ...argmax.initializers,
        ],
        inputs: [{ name: 'x', elemType: DataType.FLOAT, shape: ['N', H] }],
        outputs: [
          { name: 'draft', elemType: DataType.FLOAT, shape: ['N', used.length] },
          { name: 'argmax', elemType: DataType.INT64, shape: ['N'] },
        ],
      },
    });
  }

  dispose(): void {
    this.table?.dispose();
    this.head.dispose();
  }
}

/** [rows, cols] row-major -> [cols, rows]. */
function transpose(x: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(x.length);
  const B = 64; // blocked, so both sides stay in cache
  for (let r0 = 0; r0 < rows; r0 += B)
    for (let c0 = 0; c0 < cols; c0 += B)
      for (let r = r0; r < Math.min(r0 + B, rows); r++)
        for (let c = c0; c < Math.min(c0 + B, cols); c++) out[c * rows + r] = x[r * cols + c];
  return out;
}
