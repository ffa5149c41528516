// The trained weights as host arrays, kept from step to step. The ONNX Runtime step graph reads them and
// AdamW updates them in place; without them every step copied each weight out of tfjs memory twice (for the
// graph and for the update), about 200 ms a step at a 30M-parameter draft. The tfjs variables stay the
// truth for everything else (checkpoints, evaluation, the SpecExit heads): `commit` writes the host values
// into them after each update, and a variable assigned anywhere else is read again at the next `get`.
import * as tf from '@tensorflow/tfjs';

interface Entry {
  values: Float32Array;
  /** The variable's data at the last sync; an assign elsewhere replaces it. */
  dataId: object;
}

export class HostWeights {
  private readonly entries = new Map<tf.Variable, Entry>();

  /** The variable's values on the host, read from tfjs only on first use or after it was assigned elsewhere. */
  get(v: tf.Variable): Float32Array {
    const e = this.entries.get(v);
    // A buffer lent out and not returned (a failed run) reads as empty: read the variable again.
    if (e && e.dataId === v.dataId && e.values.length === v.size) return e.values;
    const values = (v.dataSync() as Float32Array).slice();
    this.entries.set(v, { values, dataId: v.dataId });
    return values;
  }

  /** Takes back the values of `v` after they were lent out (their buffer moved to another thread and back). */
  returned(v: tf.Variable, values: Float32Array): void {
    const e = this.entries.get(v);
    if (e && values.length === v.size) e.values = values;
  }

  /** Writes the host values of `v` (changed in place since `get`) into the variable. */
  commit(v: tf.Variable): void {
    const values = this.get(v);
    // The wasm backend copies what it is given into its own memory; the others may keep the array itself,
    // which is updated in place and lent out, so they get a copy.
    const data = tf.getBackend() === 'wasm' ? values : values.slice();
    tf.tidy(() => v.assign(tf.tensor(data, v.shape)));
    this.entries.get(v)!.dataId = v.dataId;
  }
}
