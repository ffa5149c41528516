// The EAGLE-3 draft checkpoint, run by tfjs, as a Drafter (the ONNX Runtime one is onnx-drafter.ts).
// It keeps the draft's KV cache for the committed context and one cache slot per expanded tree node, and
// batches the expansion of a tree level into one draftDecode call.
import * as tf from '@tensorflow/tfjs';
import { DraftKVCache, type Eagle3Draft, draftDecode } from '../draft/eagle3.ts';
import type { ExitSignals } from '../specexit/policy.ts';
import type { DraftLogits, Drafter } from './drafter.ts';

interface DraftNode {
  /** Draft-cache slots of this node's ancestors and itself (empty for the root). */
  slots: number[];
  /** Pre-norm output [1, 1, H]: the hidden input of its children's expansion. */
  out: tf.Tensor3D;
  logits: Float32Array;
}

/**
 * The EAGLE-3 draft as a Drafter. Context position p enters with hidden fc(features_p) and the embedding
 * of the committed token after p; a tree node at depth d (position ctx-1+d) enters with its parent's output
 * as hidden and the embedding of its own token, seeing the context and its ancestors only (TTT's causal
 * plus diagonal pattern, see draftDecode). Draft tokens are target ids (`used` maps draft ids to them).
 */
export class Eagle3Drafter implements Drafter {
  readonly featureLayers: readonly number[];
  private readonly cache = new DraftKVCache();
  private contextLength = 0;
  private readonly nodes = new Map<string, DraftNode>();

  /** `embed`: the target's input embedding table [V, H]; `used`: target id of each draft-vocabulary id. */
  constructor(
    readonly draft: Eagle3Draft,
    private readonly embed: tf.Tensor2D,
    readonly used: Int32Array,
  ) {
    if (used.length !== draft.config.draftVocabSize)
      throw new Error(`draft vocabulary map has ${used.length} ids; the draft has ${draft.config.draftVocabSize}`);
    if (embed.shape[1] !== draft.config.hiddenSize)
      throw new Error(`embedding table is ${embed.shape[1]} wide; the draft's hidden size is ${draft.config.hiddenSize}`);
    this.featureLayers = [...draft.config.auxLayerIds];
  }

  private clearNodes(): void {
    for (const node of this.nodes.values()) node.out.dispose();
    this.nodes.clear();
  }

  reset(): void {
    this.clearNodes();
    this.cache.dispose();
    this.contextLength = 0;
  }

  extend(nextIds: number[], features: tf.Tensor3D | null): void {
    const c = this.draft.config;
    const n = nextIds.length;
    if (features?.shape[0] !== 1 || features.shape[1] !== n || features.shape[2] !== c.auxLayerIds.length * c.targetHiddenSize) {
      throw new Error(
        `EAGLE-3 drafter: features must be [1, ${n}, ${c.auxLayerIds.length * c.targetHiddenSize}], got ${features ? `[${features.shape}]` : 'none'}`,
      );
    }
    this.clearNodes();
    this.cache.truncate(this.contextLength);
    const hidden = this.draft.projectFeatures(features);
    const positions = Array.from({ length: n }, (_, i) => this.contextLength + i);
    const { out, logits } = draftDecode(this.draft, this.embed, this.cache, { ids: nextIds, hidden, positions });
    const Vd = c.draftVocabSize;
    const last = tf.tidy(() => logits.slice([0, n - 1, 0], [1, 1, Vd]));
    this.nodes.set('', { slots: [], out: out.slice([0, n - 1, 0], [1, 1, -1]), logits: last.dataSync() as Float32Array });
    tf.dispose([hidden, out, logits, last]);
    this.contextLength += n;
  }

  expand(paths: number[][]): DraftLogits[] {
    const todo: { key: string; path: number[]; parent: DraftNode }[] = [];
    for (const path of paths) {
      const key = path.join(',');
      if (this.nodes.has(key) || todo.some((t) => t.key === key)) continue;
      if (!path.length) throw new Error('EAGLE-3 drafter: no context yet (extend first)');
      const parent = this.nodes.get(path.slice(0, -1).join(','));
      if (!parent) throw new Error(`EAGLE-3 drafter: node [${path}] expanded before its parent`);
      todo.push({ key, path, parent });
    }
    if (todo.length) {
      const m = todo.length;
      const S = this.cache.length;
      const visible = todo.map(({ parent }, i) => {
        const row = new Array(S + m).fill(0);
        for (let s = 0; s < this.contextLength; s++) row[s] = 1;
        for (const s of parent.slots) row[s] = 1;
        row[S + i] = 1;
        return row;
      });
      const hidden =
        m === 1
          ? todo[0].parent.out
          : (tf.concat(
              todo.map((t) => t.parent.out),
              1,
            ) as tf.Tensor3D);
      const { out, logits } = draftDecode(this.draft, this.embed, this.cache, {
        ids: todo.map((t) => t.path[t.path.length - 1]),
        hidden,
        positions: todo.map((t) => this.contextLength - 1 + t.path.length),
        visible,
      });
      const data = logits.dataSync() as Float32Array;
      const Vd = this.draft.config.draftVocabSize;
      const outs = m === 1 ? [tf.clone(out)] : tf.split(out, m, 1);
      todo.forEach((t, i) =>
        this.nodes.set(t.key, { slots: [...t.parent.slots, S + i], out: outs[i] as tf.Tensor3D, logits: data.slice(i * Vd, (i + 1) * Vd) }),
      );
      tf.dispose([out, logits, ...(m === 1 ? [] : [hidden])]);
    }
    return paths.map((p) => ({ vocab: this.used, logits: this.nodes.get(p.join(','))!.logits }));
  }

  /** SpecExit signals from target features [1, n, k*Ht]: sigmoid / sigmoid / exp of the signal logits. */
  signals(features: tf.Tensor3D): ExitSignals[] {
    const z = tf.tidy(() => this.draft.signalLogits(features)).dataSync() as Float32Array;
    const sigmoid = (x: number) => 1 / (1 + Math.exp(-x));
    return Array.from({ length: z.length / 3 }, (_, i) => ({
      confidence: sigmoid(z[3 * i]),
      progress: sigmoid(z[3 * i + 1]),
      remaining: Math.exp(z[3 * i + 2]),
    }));
  }

  dispose(): void {
    this.reset();
  }
}
