// The teacher at a real vocabulary: logits at the draft vocabulary and the full-vocabulary argmax,
// computed in row chunks, against a plain loop; the chunked form feeds the TTT loss exactly as full
// logits do; a tied model holds its embedding once and looks rows up from the head.
import assert from 'node:assert/strict';
import path from 'node:path';
import { after, test } from 'node:test';
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../src/backend/backend.ts';
import { stopOrtGemm, useOrtGemm } from '../src/backend/matmul.ts';
import { parseModelConfig } from '../src/io/hf-config.ts';
import { writeSafetensors } from '../src/io/safetensors.ts';
import { TeacherHead } from '../src/train/teacher-head.ts';
import { prepareTeacher } from '../src/train/ttt.ts';
import { Rng } from '../src/util/random.ts';
import { removeTempDirs, tempDir } from './helpers.ts';

after(removeTempDirs);

await initBackend('cpu');

const V = 37;
const H = 8;
const B = 2;
const T = 5;
const used = Int32Array.from([0, 3, 4, 9, 10, 17, 22, 30, 36]);
const t2d = new Uint8Array(V);
for (const u of used) t2d[u] = 1;

/** Plain logits: hidden [N, H] times weight rows [V, H], divided. */
function plainLogits(hidden: Float32Array, weight: Float32Array, divisor: number): Float32Array {
  const N = hidden.length / H;
  const out = new Float32Array(N * V);
  for (let n = 0; n < N; n++)
    for (let v = 0; v < V; v++) {
      let s = 0;
      for (let h = 0; h < H; h++) s += (hidden[n * H + h] / divisor) * weight[v * H + h];
      out[n * V + v] = s;
    }
  return out;
}

function transposed(w: Float32Array): Float32Array {
  const out = new Float32Array(w.length);
  for (let v = 0; v < V; v++) for (let h = 0; h < H; h++) out[h * V + v] = w[v * H + h];
  return out;
}

for (const [chunkRows, engine] of [
  [1, 'tfjs'],
  [3, 'tfjs'],
  [64, 'tfjs'],
  [3, 'ort'],
  [64, 'ort'],
] as const) {
  test(`draftLogits (${engine}) in chunks of ${chunkRows} rows equals the plain logits at the draft vocabulary and the full argmax`, async () => {
    if (engine === 'ort') await useOrtGemm(1);
    const rng = new Rng(chunkRows);
    const w = rng.normalArray(V * H, 1);
    const x = rng.normalArray(B * T * H, 1);
    const divisor = 2.5;
    const head = new TeacherHead(null, tf.tensor2d(transposed(w), [H, V]), divisor, chunkRows);
    const fin = tf.tensor3d(x, [B, T, H]);
    const got = head.draftLogits(fin, used);
    const ref = plainLogits(x, w, divisor);
    const data = got.logits.dataSync();
    assert.deepEqual(got.logits.shape, [B, T, used.length]);
    for (let n = 0; n < B * T; n++) {
      let best = 0;
      for (let v = 1; v < V; v++) if (ref[n * V + v] > ref[n * V + best]) best = v;
      assert.equal(got.fullArgmax[Math.floor(n / T)][n % T], best, `row ${n}: full-vocabulary argmax`);
      used.forEach((u, j) => assert.ok(Math.abs(data[n * used.length + j] - ref[n * V + u]) < 1e-5, `row ${n}, draft id ${j}`));
    }
    tf.dispose([fin, got.logits]);
    head.dispose();
    stopOrtGemm();
  });
}

test('prepareTeacher gives the same teacher from draft-vocabulary logits as from full logits', () => {
  const rng = new Rng(7);
  const w = rng.normalArray(V * H, 1);
  const x = rng.normalArray(B * T * H, 1);
  const head = new TeacherHead(null, tf.tensor2d(transposed(w), [H, V]), 1, 4);
  const fin = tf.tensor3d(x, [B, T, H]);
  const inputIds = [
    [1, 2, 3, 4, 5],
    [6, 7, 8, 0, 0],
  ];
  const lossMask = [
    [0, 1, 1, 1, 1],
    [0, 1, 1, 0, 0],
  ];
  const aux = tf.zeros([B, T, 3]) as tf.Tensor3D;
  const full = tf.tensor3d(plainLogits(x, w, 1), [B, T, V]);
  const a = prepareTeacher({ inputIds, lossMask, aux, targetLogits: full }, { used, t2d });
  const draft = head.draftLogits(fin, used);
  const b = prepareTeacher({ inputIds, lossMask, aux, targetDraft: draft }, { used, t2d });
  assert.deepEqual(b.argmax, a.argmax);
  assert.deepEqual(b.positionMask, a.positionMask);
  assert.deepEqual(b.lossMask, a.lossMask);
  const pa = a.probs.dataSync();
  const pb = b.probs.dataSync();
  for (let i = 0; i < pa.length; i++) assert.ok(Math.abs(pa[i] - pb[i]) < 1e-6, `probs[${i}]: ${pa[i]} vs ${pb[i]}`);
  tf.dispose([fin, aux, full, draft.logits, a.probs, b.probs]);
  head.dispose();
});

test('a tied target holds its embedding once and looks rows up from the head; an untied one keeps both', () => {
  const rng = new Rng(3);
  const embed = rng.normalArray(V * H, 1);
  const lmHead = rng.normalArray(V * H, 1);
  const config = (tied: boolean) =>
    parseModelConfig({
      architectures: ['LlamaForCausalLM'],
      hidden_size: H,
      intermediate_size: 16,
      num_attention_heads: 2,
      num_hidden_layers: 1,
      vocab_size: V,
      tie_word_embeddings: tied,
    });
  const ids = tf.tensor2d(
    [
      [0, 5, 36],
      [7, 7, 1],
    ],
    [2, 3],
    'int32',
  );
  for (const tied of [true, false]) {
    const dir = tempDir('teacher-head-');
    const tensors = new Map([['model.embed_tokens.weight', { dtype: 'F32' as const, shape: [V, H], data: embed }]]);
    if (!tied) tensors.set('lm_head.weight', { dtype: 'F32', shape: [V, H], data: lmHead });
    writeSafetensors(path.join(dir, 'model.safetensors'), tensors);
    const head = TeacherHead.load(dir, config(tied));
    assert.equal(head.bytes, (tied ? 1 : 2) * 4 * V * H);
    const rows = head.embed(ids);
    assert.deepEqual(rows.shape, [2, 3, H]);
    const got = rows.dataSync();
    [0, 5, 36, 7, 7, 1].forEach((id, r) => {
      for (let h = 0; h < H; h++) assert.equal(got[r * H + h], embed[id * H + h]);
    });
    // The head is the embedding when tied, lm_head otherwise.
    const fin = tf.tensor3d(rng.normalArray(H, 1), [1, 1, H]);
    const out = head.draftLogits(
      fin,
      Int32Array.from({ length: V }, (_, i) => i),
    );
    const ref = plainLogits(fin.dataSync() as Float32Array, tied ? embed : lmHead, 1);
    const d = out.logits.dataSync();
    for (let v = 0; v < V; v++) assert.ok(Math.abs(d[v] - ref[v]) < 1e-5);
    tf.dispose([rows, fin, out.logits]);
    head.dispose();
  }
  ids.dispose();
});
