// The exported ONNX draft as the decoder's drafter (src/decode/onnx-drafter.ts, ONNX Runtime in a worker
// thread called synchronously): its logits equal the tfjs Eagle3Drafter's within 1e-4 on context, chain and
// tree nodes (a tree's nodes of one depth run as one batch, each row with its own ancestors as past), and
// speculative decoding with a draft that guesses well (built so, for a target built so) proposes the same
// drafts with the same logits at every call, and accepts the same, as with the tfjs drafter.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../src/backend/backend.ts';
import { OnnxDrafter } from '../src/decode/onnx-drafter.ts';
import type { DraftLogits, Drafter } from '../src/decode/drafter.ts';
import { speculativeDecode } from '../src/decode/speculative.ts';
import { Eagle3Drafter } from '../src/decode/tfjs-drafter.ts';
import { parseTreeShape } from '../src/decode/tree.ts';
import { draftConfigFor } from '../src/draft/config.ts';
import { Eagle3Draft } from '../src/draft/eagle3.ts';
import { exportDraftOnnx } from '../src/export/onnx.ts';
import { parseModelConfig } from '../src/io/hf-config.ts';
import { writeSafetensors } from '../src/io/safetensors.ts';
import { TfjsTarget } from '../src/target/tfjs-target.ts';
import {
  cycleDraftWeights,
  cycleTargetWeights,
  mapSource,
  maxAbsDiff,
  prng,
  randomWeights,
  removeTempDirs,
  tempDir,
  writeDraftCheckpoint,
} from './helpers.ts';

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
/** The cycle target's greedy map: after x comes x + 7 (mod V), one cycle through every token. */
const NEXT = Array.from({ length: V }, (_, x) => (x + 7) % V);
let dir: string;
let target: TfjsTarget;
let draft: Eagle3Draft;
/** A target whose next token is NEXT[current], nearly whatever came before, and a draft that guesses it. */
let cycleTarget: TfjsTarget;
let goodDraft: Eagle3Draft;

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

  const cw = cycleTargetWeights(config, 22, NEXT);
  fs.mkdirSync(path.join(dir, 'cycle-target'), { recursive: true });
  writeSafetensors(path.join(dir, 'cycle-target', 'model.safetensors'), cw);
  fs.writeFileSync(path.join(dir, 'cycle-target', 'config.json'), JSON.stringify(raw));
  cycleTarget = TfjsTarget.fromWeights(config, mapSource(cw));
  // Its MLP knows the tokens but multiples of 5, and its vocabulary lacks multiples of 4: chains break there.
  const lookup = Array.from({ length: V }, (_, i) => i).filter((i) => i % 5 !== 0);
  const base = Eagle3Draft.init(dc, 6);
  goodDraft = new Eagle3Draft(
    dc,
    cycleDraftWeights(base.exportWeights(), cw.get('model.embed_tokens.weight')!.data as Float32Array, NEXT, USED, lookup),
  );
  base.dispose();
  await writeDraftCheckpoint(path.join(dir, 'good-ckpt'), dc, goodDraft, USED);
  exportDraftOnnx(path.join(dir, 'good-ckpt'), path.join(dir, 'good-onnx'), { target: path.join(dir, 'cycle-target') });
});

after(() => {
  target.dispose();
  draft.dispose();
  cycleTarget.dispose();
  goodDraft.dispose();
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

/** A drafter that records every call the decoder makes and what it answered. */
class Recorder implements Drafter {
  readonly calls: { call: string; logits?: Float32Array[] }[] = [];
  constructor(private readonly inner: Drafter) {}
  get featureLayers() {
    return this.inner.featureLayers;
  }
  reset(): void {
    this.calls.push({ call: 'reset' });
    this.inner.reset();
  }
  extend(nextIds: number[], features: tf.Tensor3D | null): void {
    this.calls.push({ call: `extend ${nextIds}` });
    this.inner.extend(nextIds, features);
  }
  expand(paths: number[][]): DraftLogits[] {
    const r = this.inner.expand(paths);
    this.calls.push({ call: `expand ${JSON.stringify(paths)}`, logits: r.map((x) => Float32Array.from(x.logits)) });
    return r;
  }
  dispose(): void {
    this.inner.dispose();
  }
}

test('speculative decoding with the ONNX drafter of a draft that guesses well: the same drafts, logits and accept lengths as the tfjs drafter (chain and tree)', () => {
  const onnx = new Recorder(new OnnxDrafter(path.join(dir, 'good-onnx')));
  const ref = new Recorder(new Eagle3Drafter(goodDraft, cycleTarget.embeddings(), USED));
  const accepted: number[] = [];
  for (const opts of [{ draftSteps: 4 }, { tree: parseTreeShape('3,3,8') }]) {
    for (const prompt of [
      [1, 2, 3, 4, 5, 6, 7],
      [30, 2, 30, 2],
    ]) {
      const a = speculativeDecode(cycleTarget, ref, prompt, { maxNewTokens: 24, stopIds: [], ...opts });
      const b = speculativeDecode(cycleTarget, onnx, prompt, { maxNewTokens: 24, stopIds: [], ...opts });
      assert.deepEqual(b.tokens, a.tokens);
      assert.deepEqual(b.acceptLengths, a.acceptLengths);
      assert.deepEqual(b.accepted, a.accepted);
      accepted.push(...a.acceptLengths);
    }
  }
  // Every call alike: the same contexts, the same nodes expanded (the drafts proposed), logits within 1e-4.
  assert.deepEqual(
    onnx.calls.map((c) => c.call),
    ref.calls.map((c) => c.call),
  );
  let worst = 0;
  ref.calls.forEach((c, i) => c.logits?.forEach((l, j) => (worst = Math.max(worst, maxAbsDiff(l, onnx.calls[i].logits![j])))));
  assert.ok(worst <= 1e-4, `logits max abs diff ${worst}`);
  // The draft is good, so the accept lengths say something about the drafter: most passes accept, some
  // accept the whole chain the vocabulary allows (3), a few none.
  const count = (n: number) => accepted.filter((x) => x === n).length;
  assert.ok(
    count(0) < accepted.length / 3 && count(3) > 0 && accepted.reduce((x, y) => x + y, 0) >= 1.5 * accepted.length,
    `accept lengths ${accepted}`,
  );
  onnx.dispose();
  ref.dispose();
});

test('a folder without draft.json is an error naming it', () => {
  assert.throws(() => new OnnxDrafter(path.join(dir, 'ckpt')), /ckpt: not an exported ONNX draft/);
});
