// The exported ONNX draft as the decoder's drafter (src/decode/onnx-drafter.ts, ONNX Runtime in a worker
// thread called synchronously): its logits equal the tfjs Eagle3Drafter's within 1e-4 on context, chain and
// tree nodes (a tree's nodes of one depth run as one batch, each row with its own ancestors as past), and
// speculative decoding with it gives the same tokens and the same accept lengths.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../src/backend/backend.ts';
import { OnnxDrafter } from '../src/decode/onnx-drafter.ts';
import type { Drafter } from '../src/decode/drafter.ts';
import { speculativeDecode } from '../src/decode/speculative.ts';
import { Eagle3Drafter } from '../src/decode/tfjs-drafter.ts';
import { parseTreeShape } from '../src/decode/tree.ts';
import { draftConfigFor } from '../src/draft/config.ts';
import { Eagle3Draft } from '../src/draft/eagle3.ts';
import { exportDraftOnnx } from '../src/export/onnx.ts';
import { parseModelConfig } from '../src/io/hf-config.ts';
import { writeSafetensors } from '../src/io/safetensors.ts';
import { TfjsTarget } from '../src/target/tfjs-target.ts';
import { mapSource, maxAbsDiff, prng, randomWeights, removeTempDirs, tempDir, writeDraftCheckpoint } from './helpers.ts';

const V = 40;
const raw = {
  architectures: ['LlamaForCausalLM'],
  hidden_size: 32,
  intermediate_size: 48,
  num_hidden_layers: 3,
  num_attention_heads: 4,
  num_key_value_heads: 2,
  head_dim: 8,
  vocab_size: V,
};
const config = parseModelConfig(raw);
const USED = Int32Array.from({ length: V }, (_, i) => i).filter((i) => i % 4 !== 0);
const AUX = [0, 1, 2];
let dir: string;
let target: TfjsTarget;
let draft: Eagle3Draft;

before(async () => {
  await initBackend('wasm');
  dir = tempDir('specforge-onnx-drafter-');
  const weights = randomWeights(config, 21);
  fs.mkdirSync(path.join(dir, 'target'), { recursive: true });
  writeSafetensors(path.join(dir, 'target', 'model.safetensors'), weights);
  fs.writeFileSync(path.join(dir, 'target', 'config.json'), JSON.stringify(raw));
  target = TfjsTarget.fromWeights(config, mapSource(weights));
  const dc = draftConfigFor(config, AUX, USED.length, true);
  draft = Eagle3Draft.init(dc, 5);
  await writeDraftCheckpoint(path.join(dir, 'ckpt'), dc, draft, USED);
  exportDraftOnnx(path.join(dir, 'ckpt'), path.join(dir, 'in-file'), { target: path.join(dir, 'target') });
  exportDraftOnnx(path.join(dir, 'ckpt'), path.join(dir, 'embeds-input'), {});
});

after(() => {
  target.dispose();
  draft.dispose();
  removeTempDirs();
});

function features(n: number, seed: number): tf.Tensor3D {
  const rand = prng(seed);
  return tf.tensor3d(
    Float32Array.from({ length: n * 3 * 32 }, () => 2 * rand() - 1),
    [1, n, 96],
  );
}

for (const kind of ['in-file', 'embeds-input'] as const) {
  test(`ONNX drafter (${kind}) logits equal the tfjs drafter's on context, chain and tree nodes; signals too`, () => {
    const ref = new Eagle3Drafter(draft, target.embeddings(), USED);
    const onnx = new OnnxDrafter(path.join(dir, kind), target.embeddings());
    assert.deepEqual(onnx.featureLayers, AUX);
    let worst = 0;
    const same = (paths: number[][]) => {
      const a = ref.expand(paths);
      const b = onnx.expand(paths);
      a.forEach((x, i) => {
        assert.deepEqual(Array.from(b[i].vocab), Array.from(x.vocab));
        worst = Math.max(worst, maxAbsDiff(x.logits, b[i].logits));
      });
    };
    for (const d of [ref, onnx] as Drafter[]) d.reset();
    const f1 = features(6, 1);
    ref.extend([3, 7, 9, 11, 2, 5], f1);
    onnx.extend([3, 7, 9, 11, 2, 5], f1);
    same([[]]);
    same([[6]]); // a chain
    same([[6, 10]]);
    same([[7], [13], [14]]); // a tree: siblings of one depth in one batch
    same([
      [7, 6],
      [13, 6],
      [13, 7],
      [6, 10, 15],
    ]); // two depths in one call
    // New context (drafts dropped), then more nodes.
    const f2 = features(2, 2);
    ref.extend([6, 10], f2);
    onnx.extend([6, 10], f2);
    same([[]]);
    same([[18], [19]]);
    same([[18, 21]]);
    const sa = ref.signals(f1);
    const sb = onnx.signals(f1);
    const sd = maxAbsDiff(
      sa.flatMap((s) => [s.confidence, s.progress, s.remaining]),
      sb.flatMap((s) => [s.confidence, s.progress, s.remaining]),
    );
    assert.ok(worst <= 1e-4, `logits max abs diff ${worst}`);
    assert.ok(sd <= 1e-4, `signals max abs diff ${sd}`);
    ref.dispose();
    onnx.dispose();
    tf.dispose([f1, f2]);
  });
}

test('speculative decoding with the ONNX drafter: same tokens and accept lengths as with the tfjs drafter (chain and tree)', () => {
  const onnx = new OnnxDrafter(path.join(dir, 'in-file'));
  const ref = new Eagle3Drafter(draft, target.embeddings(), USED);
  for (const opts of [{ draftSteps: 4 }, { tree: parseTreeShape('3,3,8') }]) {
    for (const prompt of [
      [1, 2, 3, 4, 5, 6, 7],
      [30, 2, 30, 2],
    ]) {
      const a = speculativeDecode(target, ref, prompt, { maxNewTokens: 16, stopIds: [], ...opts });
      const b = speculativeDecode(target, onnx, prompt, { maxNewTokens: 16, stopIds: [], ...opts });
      assert.deepEqual(b.tokens, a.tokens);
      assert.deepEqual(b.acceptLengths, a.acceptLengths);
    }
  }
  onnx.dispose();
  ref.dispose();
});

test('a folder without draft.json is an error naming it', () => {
  assert.throws(() => new OnnxDrafter(path.join(dir, 'ckpt')), /ckpt: not an exported ONNX draft/);
});
