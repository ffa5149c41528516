// ONNX export of the EAGLE-3 draft (src/export/onnx-*.ts), run with onnxruntime-node against the tfjs draft
// (draftDecode with its KV cache, the decoder's own path):
//   - float32: every output (logits, next_hidden, present_key/value, specexit_signals, topk_token_ids)
//     within 1e-4 over a chained drafting sequence (context, three draft steps feeding present -> past,
//     the cache cut back to the context, more context, one more draft step), weights inline and external;
//   - dynamic axes: one exported file run with batch 1 and 3, different sequence and past lengths, and a
//     step mixing aux-feature tokens with draft-hidden tokens;
//   - int8 (weight-only, per output channel): within a stated tolerance, top-1 and top-k ids mostly equal,
//     and the file well under half of float32's (a quarter for the matrices);
//   - real captured inputs: the shipped tiny target's aux-layer outputs and embedding table on a real prompt;
//   - a missing checkpoint and a corrupt model.safetensors are errors naming the file.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, test } from 'node:test';
import * as ort from 'onnxruntime-node';
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../src/backend/backend.ts';
import { Eagle3Drafter } from '../src/decode/tfjs-drafter.ts';
import { type DraftConfig, draftConfigFor } from '../src/draft/config.ts';
import { DraftKVCache, Eagle3Draft, draftDecode } from '../src/draft/eagle3.ts';
import { exportDraftOnnx } from '../src/export/onnx.ts';
import { parseModelConfig } from '../src/io/hf-config.ts';
import { writeSafetensors } from '../src/io/safetensors.ts';
import { TfjsTarget } from '../src/target/tfjs-target.ts';
import { assertSameTensors, maxAbsDiff, prng, randomWeights, removeTempDirs, specforge, tempDir, writeDraftCheckpoint } from './helpers.ts';
import { SafetensorsFile } from '../src/io/safetensors.ts';

const V = 40;
const targetConfig = parseModelConfig({
  architectures: ['LlamaForCausalLM'],
  hidden_size: 32,
  intermediate_size: 48,
  num_hidden_layers: 3,
  num_attention_heads: 4,
  num_key_value_heads: 2,
  head_dim: 8,
  vocab_size: V,
});
const USED = Int32Array.from({ length: V }, (_, i) => i).filter((i) => i % 4 !== 1);
const TOPK = 5;
const TOL = 1e-4;

function normal(n: number, rand: () => number, std = 1): Float32Array {
  return Float32Array.from({ length: n }, () => std * Math.sqrt(-2 * Math.log(1 - rand())) * Math.cos(2 * Math.PI * rand()));
}

/** The embedding table as the target folder holds it. */
function writeEmbeddingTarget(dir: string, embed: Float32Array): void {
  const w = randomWeights(targetConfig, 3);
  w.set('model.embed_tokens.weight', { dtype: 'F32', shape: [V, targetConfig.hiddenSize], data: embed });
  fs.mkdirSync(dir, { recursive: true });
  writeSafetensors(path.join(dir, 'model.safetensors'), w);
  fs.writeFileSync(
    path.join(dir, 'config.json'),
    JSON.stringify({
      architectures: ['LlamaForCausalLM'],
      hidden_size: 32,
      intermediate_size: 48,
      num_hidden_layers: 3,
      num_attention_heads: 4,
      num_key_value_heads: 2,
      head_dim: 8,
      vocab_size: V,
    }),
  );
}

interface StepIn {
  B: number;
  /** [B, Ta, F] and [B, Th, H], row-major. */
  aux: Float32Array;
  Ta: number;
  hidden: Float32Array;
  Th: number;
  ids: number[];
  positions: number[];
  pastK: Float32Array;
  pastV: Float32Array;
  P: number;
}

type Outputs = Record<string, Float32Array | BigInt64Array>;

async function ortStep(s: ort.InferenceSession, c: DraftConfig, x: StepIn, embedTable?: Float32Array): Promise<Outputs> {
  const F = c.auxLayerIds.length * c.targetHiddenSize;
  const H = c.hiddenSize;
  const T = x.Ta + x.Th;
  const feeds: Record<string, ort.Tensor> = {
    aux_hidden_states: new ort.Tensor('float32', x.aux, [x.B, x.Ta, F]),
    hidden_states: new ort.Tensor('float32', x.hidden, [x.B, x.Th, H]),
    position_ids: new ort.Tensor('int64', BigInt64Array.from(x.positions, BigInt), [x.B, T]),
    past_key: new ort.Tensor('float32', x.pastK, [x.B, c.numKvHeads, x.P, c.headDim]),
    past_value: new ort.Tensor('float32', x.pastV, [x.B, c.numKvHeads, x.P, c.headDim]),
  };
  if (embedTable) {
    const e = new Float32Array(x.ids.length * H);
    x.ids.forEach((id, i) => e.set(embedTable.subarray(id * H, (id + 1) * H), i * H));
    feeds.inputs_embeds = new ort.Tensor('float32', e, [x.B, T, H]);
  } else feeds.input_ids = new ort.Tensor('int64', BigInt64Array.from(x.ids, BigInt), [x.B, T]);
  const out = await s.run(feeds);
  const r: Outputs = {};
  for (const [k, v] of Object.entries(out)) r[k] = v.data as Float32Array | BigInt64Array;
  return r;
}

/** The tfjs draft on one batch row: draftDecode over concat(fc(aux), hidden), the cache appended. */
function tfjsStep(
  draft: Eagle3Draft,
  embed: tf.Tensor2D,
  cache: DraftKVCache,
  used: Int32Array,
  x: { aux: Float32Array; Ta: number; hidden: Float32Array; Th: number; ids: number[]; positions: number[] },
): Outputs {
  const c = draft.config;
  const F = c.auxLayerIds.length * c.targetHiddenSize;
  const auxT = tf.tensor3d(x.aux, [1, x.Ta, F]);
  const hidden = tf.tidy(() => tf.concat([draft.projectFeatures(auxT), tf.tensor3d(x.hidden, [1, x.Th, c.hiddenSize])], 1) as tf.Tensor3D);
  const { out, logits } = draftDecode(draft, embed, cache, { ids: x.ids, hidden, positions: x.positions });
  const logitsData = logits.dataSync() as Float32Array;
  const r: Outputs = {
    logits: logitsData,
    next_hidden: out.dataSync() as Float32Array,
    present_key: cache.k!.dataSync() as Float32Array,
    present_value: cache.v!.dataSync() as Float32Array,
  };
  if (c.specExit && x.Ta > 0) {
    const sig = new Eagle3Drafter(draft, embed, used).signals(auxT);
    r.specexit_signals = Float32Array.from(sig.flatMap((s) => [s.confidence, s.progress, s.remaining]));
  }
  // Top-k draft ids (ties by index, as ONNX TopK) mapped to target ids.
  const Vd = c.draftVocabSize;
  const ids: bigint[] = [];
  for (let t = 0; t < logitsData.length / Vd; t++) {
    const row = logitsData.subarray(t * Vd, (t + 1) * Vd);
    const order = Array.from({ length: Vd }, (_, j) => j).sort((a, b) => row[b] - row[a] || a - b);
    ids.push(...order.slice(0, TOPK).map((j) => BigInt(used[j])));
  }
  r.topk_token_ids = BigInt64Array.from(ids);
  tf.dispose([auxT, hidden, out, logits]);
  return r;
}

function diff(a: Float32Array | BigInt64Array, b: Float32Array | BigInt64Array): number {
  if (a instanceof BigInt64Array || b instanceof BigInt64Array)
    return maxAbsDiff(Array.from(a as BigInt64Array, Number), Array.from(b as BigInt64Array, Number));
  return maxAbsDiff(a, b);
}

const argmaxLast = (logits: Float32Array, Vd: number) => {
  const row = logits.subarray(logits.length - Vd);
  let best = 0;
  for (let j = 1; j < Vd; j++) if (row[j] > row[best]) best = j;
  return best;
};

/** Slots [0, n) of a [1, kvH, S, hd] cache. */
function keepSlots(a: Float32Array, kvH: number, S: number, hd: number, n: number): Float32Array {
  const out = new Float32Array(kvH * n * hd);
  for (let h = 0; h < kvH; h++) out.set(a.subarray(h * S * hd, h * S * hd + n * hd), h * n * hd);
  return out;
}

let dir: string;
let config: DraftConfig;
let draft: Eagle3Draft;
let embedData: Float32Array;
let embed: tf.Tensor2D;

before(async () => {
  await initBackend('wasm');
  dir = tempDir('specforge-onnx-');
  config = draftConfigFor(targetConfig, [0, 1, 2], USED.length, true);
  draft = Eagle3Draft.init(config, 11);
  await writeDraftCheckpoint(path.join(dir, 'ckpt'), config, draft, USED);
  embedData = normal(V * targetConfig.hiddenSize, prng(5), 0.5);
  embed = tf.tensor2d(embedData, [V, targetConfig.hiddenSize]);
  writeEmbeddingTarget(path.join(dir, 'target'), embedData);
});

after(() => {
  draft.dispose();
  embed.dispose();
  removeTempDirs();
});

/**
 * Context of 5 tokens, three draft steps (each feeding ORT's own present and next_hidden back), the cache
 * cut to the context, 3 more context tokens, one more draft step. Token choices follow the tfjs logits so
 * that both sides see the same ids. Returns the largest difference per output over all steps.
 */
async function chainedSequence(
  session: ort.InferenceSession,
  o: { embedInput?: boolean; feedOwn: boolean; seed: number },
): Promise<Map<string, number>> {
  const c = config;
  const F = c.auxLayerIds.length * c.targetHiddenSize;
  const H = c.hiddenSize;
  const [kvH, hd] = [c.numKvHeads, c.headDim];
  const rand = prng(o.seed);
  const worst = new Map<string, number>();
  const cache = new DraftKVCache();
  let past: { k: Float32Array; v: Float32Array; P: number } = { k: new Float32Array(0), v: new Float32Array(0), P: 0 };
  let ctx = 0;
  const step = async (x: {
    aux: Float32Array;
    Ta: number;
    hidden: Float32Array;
    ortHidden: Float32Array;
    Th: number;
    ids: number[];
    positions: number[];
  }) => {
    const ref = tfjsStep(draft, embed, cache, USED, x);
    const got = await ortStep(
      session,
      c,
      {
        B: 1,
        aux: x.aux,
        Ta: x.Ta,
        hidden: o.feedOwn ? x.ortHidden : x.hidden,
        Th: x.Th,
        ids: x.ids,
        positions: x.positions,
        pastK: past.k,
        pastV: past.v,
        P: past.P,
      },
      o.embedInput ? embedData : undefined,
    );
    for (const [name, r] of Object.entries(ref)) {
      if (!(name in got)) continue; // an output this export leaves out (the caller checks which it expects)
      worst.set(name, Math.max(worst.get(name) ?? 0, diff(r, got[name])));
    }
    const S = past.P + x.ids.length;
    past = o.feedOwn
      ? { k: got.present_key as Float32Array, v: got.present_value as Float32Array, P: S }
      : { k: ref.present_key as Float32Array, v: ref.present_value as Float32Array, P: S };
    return { ref, got };
  };
  const none = new Float32Array(0);
  const context = async (n: number) => {
    const ids = Array.from({ length: n }, () => Math.floor(rand() * V));
    const r = await step({
      aux: normal(n * F, rand),
      Ta: n,
      hidden: none,
      ortHidden: none,
      Th: 0,
      ids,
      positions: ids.map((_, i) => ctx + i),
    });
    ctx += n;
    return r;
  };
  let last = await context(5);
  for (let d = 1; d <= 3; d++) {
    const token = USED[argmaxLast(last.ref.logits as Float32Array, c.draftVocabSize)];
    const tail = (a: Float32Array | BigInt64Array) => (a as Float32Array).slice(a.length - H);
    last = await step({
      aux: none,
      Ta: 0,
      hidden: tail(last.ref.next_hidden),
      ortHidden: tail(last.got.next_hidden),
      Th: 1,
      ids: [token],
      positions: [ctx - 1 + d],
    });
  }
  // Drafts rejected: back to the context, then more context and one more draft step.
  cache.truncate(ctx);
  past = { k: keepSlots(past.k, kvH, past.P, hd, ctx), v: keepSlots(past.v, kvH, past.P, hd, ctx), P: ctx };
  last = await context(3);
  const token = USED[argmaxLast(last.ref.logits as Float32Array, c.draftVocabSize)];
  const tail = (a: Float32Array | BigInt64Array) => (a as Float32Array).slice(a.length - H);
  await step({
    aux: none,
    Ta: 0,
    hidden: tail(last.ref.next_hidden),
    ortHidden: tail(last.got.next_hidden),
    Th: 1,
    ids: [token],
    positions: [ctx],
  });
  cache.dispose();
  return worst;
}

const fmt = (m: Map<string, number>) => [...m].map(([k, v]) => `${k} ${v.toExponential(2)}`).join(', ');

describe('float32 export', () => {
  test('every output matches the tfjs draft within 1e-4 over a chained drafting sequence (weights inline and external)', async () => {
    for (const external of ['never', 'always'] as const) {
      const out = path.join(dir, `f32-${external}`);
      const files = exportDraftOnnx(path.join(dir, 'ckpt'), out, { topk: TOPK, target: path.join(dir, 'target'), externalData: external });
      assert.deepEqual(
        files.map((f) => path.basename(f)),
        external === 'always' ? ['model.onnx', 'model.onnx.data', 'draft.json'] : ['model.onnx', 'draft.json'],
      );
      const session = await ort.InferenceSession.create(path.join(out, 'model.onnx'));
      assert.deepEqual(session.inputNames, ['aux_hidden_states', 'hidden_states', 'input_ids', 'position_ids', 'past_key', 'past_value']);
      assert.deepEqual(session.outputNames, [
        'logits',
        'next_hidden',
        'present_key',
        'present_value',
        'specexit_signals',
        'topk_token_ids',
      ]);
      const worst = await chainedSequence(session, { feedOwn: true, seed: 7 });
      assert.deepEqual([...worst.keys()].sort(), [
        'logits',
        'next_hidden',
        'present_key',
        'present_value',
        'specexit_signals',
        'topk_token_ids',
      ]);
      for (const [name, d] of worst) assert.ok(d <= TOL, `${external}: ${name} max abs diff ${d} > ${TOL} (${fmt(worst)})`);
      assert.equal(worst.get('topk_token_ids'), 0);
      console.log(`# f32 (${external} external data): ${fmt(worst)}`);
      await session.release();
    }
  });

  test("external data 'auto': weights stay inline up to the switch (1 GiB by default) and go to model.onnx.data past it", async () => {
    const { AUTO_EXTERNAL_BYTES, writeOnnxModel } = await import('../src/io/onnx-write.ts');
    const { buildDraftModel } = await import('../src/export/onnx-draft.ts');
    const { loadDraftCheckpoint } = await import('../src/draft/load.ts');
    assert.equal(AUTO_EXTERNAL_BYTES, 2 ** 30);
    const { draft: d, config: c, used } = loadDraftCheckpoint(path.join(dir, 'ckpt'));
    const model = buildDraftModel(c, d.exportWeights(), used, { quantize: null, topk: 0, embed: null });
    d.dispose();
    const total = model.graph.initializers.reduce((s, t) => s + (t.raw?.length ?? 0), 0);
    const at = path.join(dir, 'auto-at', 'model.onnx');
    const past = path.join(dir, 'auto-past', 'model.onnx');
    for (const f of [at, past]) fs.mkdirSync(path.dirname(f), { recursive: true });
    assert.deepEqual(writeOnnxModel(at, model, 'auto', total), [at]);
    assert.deepEqual(writeOnnxModel(past, model, 'auto', total - 1), [past, `${past}.data`]);
    // The larger tensors moved (those under 1 KiB stay inline).
    const moved = fs.statSync(at).size - fs.statSync(past).size;
    assert.ok(moved >= total / 2, `${moved} of ${total} weight bytes moved out of the model`);
    assert.ok(fs.statSync(`${past}.data`).size >= moved, 'into the data file');
    // Either way ONNX Runtime loads it.
    for (const f of [at, past]) await (await ort.InferenceSession.create(f)).release();
  });

  test('without --target the model takes inputs_embeds and gives the same outputs', async () => {
    const out = path.join(dir, 'f32-embeds');
    exportDraftOnnx(path.join(dir, 'ckpt'), out, {});
    const session = await ort.InferenceSession.create(path.join(out, 'model.onnx'));
    assert.ok(session.inputNames.includes('inputs_embeds') && !session.inputNames.includes('input_ids'));
    assert.ok(!session.outputNames.includes('topk_token_ids'));
    const worst = await chainedSequence(session, { embedInput: true, feedOwn: true, seed: 8 });
    assert.deepEqual([...worst.keys()].sort(), ['logits', 'next_hidden', 'present_key', 'present_value', 'specexit_signals']);
    for (const [name, d] of worst) assert.ok(d <= TOL, `${name} max abs diff ${d}`);
    await session.release();
  });

  test('dynamic axes: batch 1 and 3, different lengths, and a step mixing aux tokens with draft-hidden tokens, on one file', async () => {
    const out = path.join(dir, 'f32-dyn');
    exportDraftOnnx(path.join(dir, 'ckpt'), out, { topk: TOPK, target: path.join(dir, 'target') });
    const session = await ort.InferenceSession.create(path.join(out, 'model.onnx'));
    const c = config;
    const F = c.auxLayerIds.length * c.targetHiddenSize;
    const H = c.hiddenSize;
    // The declared shapes: symbolic batch, sequence and cache axes, fixed model widths.
    const shapes = Object.fromEntries(
      [...session.inputMetadata, ...session.outputMetadata].map((m) => [m.name, m.isTensor ? m.shape : null]),
    );
    assert.deepEqual(shapes, {
      aux_hidden_states: ['batch', 'aux_seq', F],
      hidden_states: ['batch', 'hidden_seq', H],
      input_ids: ['batch', 'seq'],
      position_ids: ['batch', 'seq'],
      past_key: ['batch', c.numKvHeads, 'past_seq', c.headDim],
      past_value: ['batch', c.numKvHeads, 'past_seq', c.headDim],
      logits: ['batch', 'seq', c.draftVocabSize],
      next_hidden: ['batch', 'seq', H],
      present_key: ['batch', c.numKvHeads, 'present_seq', c.headDim],
      present_value: ['batch', c.numKvHeads, 'present_seq', c.headDim],
      specexit_signals: ['batch', 'aux_seq', 3],
      topk_token_ids: ['batch', 'seq', TOPK],
    });
    const rand = prng(9);
    for (const [B, P, Ta, Th] of [
      [1, 0, 7, 0],
      [3, 4, 2, 0],
      [3, 6, 0, 1],
      [3, 5, 2, 3],
      [2, 9, 1, 1],
    ]) {
      // Each row has its own context (P tokens through the tfjs draft), then one step of Ta aux + Th hidden tokens.
      const caches = Array.from({ length: B }, () => new DraftKVCache());
      const rows = caches.map((cache) => {
        if (P) {
          const ids = Array.from({ length: P }, () => Math.floor(rand() * V));
          tfjsStep(draft, embed, cache, USED, {
            aux: normal(P * F, rand),
            Ta: P,
            hidden: new Float32Array(0),
            Th: 0,
            ids,
            positions: ids.map((_, i) => i),
          });
        }
        const T = Ta + Th;
        return {
          Ta,
          Th,
          aux: normal(Ta * F, rand),
          hidden: normal(Th * H, rand),
          ids: Array.from({ length: T }, () => Math.floor(rand() * V)),
          positions: Array.from({ length: T }, (_, i) => P + i),
          pastK: cache.k?.dataSync() as Float32Array,
          pastV: cache.v?.dataSync() as Float32Array,
        };
      });
      const cat = (xs: (Float32Array | undefined)[]) => {
        const out = new Float32Array(xs.reduce((s, x) => s + (x?.length ?? 0), 0));
        let at = 0;
        for (const x of xs) {
          if (!x) continue;
          out.set(x, at);
          at += x.length;
        }
        return out;
      };
      const got = await ortStep(session, c, {
        B,
        aux: cat(rows.map((r) => r.aux)),
        Ta,
        hidden: cat(rows.map((r) => r.hidden)),
        Th,
        ids: rows.flatMap((r) => r.ids),
        positions: rows.flatMap((r) => r.positions),
        pastK: cat(rows.map((r) => r.pastK)),
        pastV: cat(rows.map((r) => r.pastV)),
        P,
      });
      rows.forEach((row, b) => {
        const ref = tfjsStep(draft, embed, caches[b], USED, row);
        for (const [name, r] of Object.entries(ref)) {
          const all = got[name];
          const per = all.length / B;
          assert.equal(per, r.length, `${name}: batch ${B}, past ${P}, aux ${Ta}, hidden ${Th}: row size`);
          const d = diff(r, all.subarray(b * per, (b + 1) * per) as Float32Array);
          assert.ok(d <= TOL, `${name}: batch ${B}, past ${P}, aux ${Ta}, hidden ${Th}, row ${b}: max abs diff ${d}`);
        }
        if (!Ta) assert.equal(got.specexit_signals.length, 0);
      });
      for (const cache of caches) cache.dispose();
    }
    await session.release();
  });
});

describe('int8 export', () => {
  test('weight-only per-channel int8: well under half the size here, logits within 3% of their range, the same top-1 but where float32 nearly ties, top-k ids mostly equal', async () => {
    const out = path.join(dir, 'int8');
    exportDraftOnnx(path.join(dir, 'ckpt'), out, { topk: TOPK, target: path.join(dir, 'target'), quantize: 'int8' });
    exportDraftOnnx(path.join(dir, 'ckpt'), path.join(dir, 'f32-size'), { topk: TOPK, target: path.join(dir, 'target') });
    const f32 = fs.statSync(path.join(dir, 'f32-size', 'model.onnx')).size;
    const int8 = fs.statSync(path.join(out, 'model.onnx')).size;
    const session = await ort.InferenceSession.create(path.join(out, 'model.onnx'));
    // Fed the tfjs path's own inputs each step (the error of one step, not compounded).
    const worst = await chainedSequence(session, { feedOwn: false, seed: 7 });
    // Five chained sequences of 8 rows each (5 context positions, then 3 chained steps).
    const ref = { logits: [] as Float32Array[] };
    const got = { logits: [] as Float32Array[] };
    for (const seed of [7, 8, 9, 10, 11]) {
      ref.logits.push(...(await chainedSequenceLogits(seed)).logits);
      got.logits.push(...(await chainedSequenceLogits(seed, session)).logits);
    }
    let agree = 0;
    /** Float32's lead of its top-1 over the runner-up, in each row where int8 picks another top-1. */
    const nearTies: number[] = [];
    let topkShared = 0;
    let range = 0;
    const Vd = config.draftVocabSize;
    for (let i = 0; i < ref.logits.length; i++) {
      const a = ref.logits[i];
      const b = got.logits[i];
      for (const x of a) range = Math.max(range, Math.abs(x));
      if (argmaxLast(a, Vd) === argmaxLast(b, Vd)) agree++;
      else {
        const sorted = Array.from(a).sort((p, q) => q - p);
        nearTies.push(sorted[0] - sorted[1]);
      }
      const top = (x: Float32Array) =>
        new Set(
          Array.from(x.keys())
            .sort((p, q) => x[q] - x[p])
            .slice(0, TOPK),
        );
      const [ta, tb] = [top(a), top(b)];
      topkShared += [...ta].filter((j) => tb.has(j)).length / TOPK;
    }
    const rel = worst.get('logits')! / range;
    console.log(
      `# int8: size ${int8} vs ${f32} bytes (ratio ${(int8 / f32).toFixed(3)}); max abs ${fmt(worst)}; logits error ${(100 * rel).toFixed(2)}% of max |logit|; top-1 agree ${agree}/${ref.logits.length} (the others led by ${nearTies.map((m) => m.toExponential(2))}), top-${TOPK} overlap ${(topkShared / ref.logits.length).toFixed(2)}`,
    );
    // A quarter for the matrices; in a model this small the float32 parts (norms, scales, RoPE
    // frequencies) and the graph itself weigh enough to lift the ratio to about 0.4.
    assert.ok(int8 / f32 < 0.45, `int8 file ${int8} bytes vs float32 ${f32}`);
    assert.ok(rel < 0.03, `int8 logits error ${rel} of their range`);
    assert.ok(worst.get('logits')! > 1e-5, 'the int8 model is not the float32 one');
    assert.equal(ref.logits.length, 40);
    // The same top-1 in at least 38 of the 40 rows, and only where float32 itself nearly ties (its top-1 leads by
    // under 1% of the logit range).
    assert.ok(agree >= 38, `top-1 agreement ${agree}/${ref.logits.length}`);
    for (const m of nearTies)
      assert.ok(m < 0.01 * range, `int8 changed a top-1 that led by ${m} (${((100 * m) / range).toFixed(2)}% of the range)`);
    assert.ok(topkShared / ref.logits.length >= 0.8, `top-${TOPK} overlap ${topkShared / ref.logits.length}`);
    assert.ok(worst.get('specexit_signals')! <= TOL, 'the signal rows stay float32');
    await session.release();
  });
});

/** The last-row logits of each step of chainedSequence's first part (context + 3 draft steps), tfjs or ORT fed tfjs inputs. */
async function chainedSequenceLogits(seed: number, session?: ort.InferenceSession): Promise<{ logits: Float32Array[] }> {
  const c = config;
  const F = c.auxLayerIds.length * c.targetHiddenSize;
  const Vd = c.draftVocabSize;
  const rand = prng(seed);
  const cache = new DraftKVCache();
  const logits: Float32Array[] = [];
  const ids = Array.from({ length: 5 }, () => Math.floor(rand() * V));
  let x = { aux: normal(5 * F, rand), Ta: 5, hidden: new Float32Array(0), Th: 0, ids, positions: ids.map((_, i) => i) };
  for (let d = 0; d <= 3; d++) {
    const pastK = cache.k ? (cache.k.dataSync() as Float32Array) : new Float32Array(0);
    const pastV = cache.v ? (cache.v.dataSync() as Float32Array) : new Float32Array(0);
    const P = cache.length;
    const ref = tfjsStep(draft, embed, cache, USED, x);
    const l = session
      ? ((await ortStep(session, c, { B: 1, ...x, pastK, pastV, P })).logits as Float32Array)
      : (ref.logits as Float32Array);
    for (let r = 0; r < l.length / Vd; r++) logits.push(l.slice(r * Vd, (r + 1) * Vd)); // every position's row
    const H = c.hiddenSize;
    const next = ref.next_hidden as Float32Array;
    x = {
      aux: new Float32Array(0),
      Ta: 0,
      hidden: next.slice(next.length - H),
      Th: 1,
      ids: [USED[argmaxLast(ref.logits as Float32Array, Vd)]],
      positions: [4 + d + 1],
    };
  }
  cache.dispose();
  return { logits };
}

describe('real captured inputs', () => {
  test("the shipped tiny target's aux features and embedding on a real prompt: float32 within 1e-4", async () => {
    const tinyDir = fileURLToPath(new URL('../data/tiny-target', import.meta.url));
    const target = TfjsTarget.load(tinyDir);
    const tc = target.config;
    const aux = [1, 3, 4];
    const used = Int32Array.from({ length: tc.vocabSize }, (_, i) => i).filter((i) => i % 3 !== 2);
    const dc = draftConfigFor(tc, aux, used.length, true);
    const tiny = Eagle3Draft.init(dc, 4);
    const ck = path.join(dir, 'tiny-ckpt');
    await writeDraftCheckpoint(ck, dc, tiny, used);
    const out = path.join(dir, 'tiny-onnx');
    exportDraftOnnx(ck, out, { topk: 4, target: tinyDir });
    const session = await ort.InferenceSession.create(path.join(out, 'model.onnx'));
    // Captured: the target's aux-layer outputs over a prompt of real token ids (a word-level chat prompt).
    const prompt = [1, 5, 17, 23, 40, 41, 42, 60, 7, 90, 100, 3];
    const fwd = target.forward({ ids: [prompt] }, { layers: aux });
    const feats = tf.tidy(
      () =>
        tf.concat(
          aux.map((l) => fwd.layers.get(l)!),
          -1,
        ) as tf.Tensor3D,
    );
    const F = feats.shape[2];
    const featData = feats.dataSync() as Float32Array;
    fwd.logits?.dispose();
    fwd.finalNormed.dispose();
    for (const t of fwd.layers.values()) t.dispose();
    const n = prompt.length - 1;
    const drafter = new Eagle3Drafter(tiny, target.embeddings(), used);
    // Drafter context = positions 0..n-1 with the next ids; then a chain of 3 draft tokens.
    const ctxFeat = tf.tidy(() => feats.slice([0, 0, 0], [1, n, F]) as tf.Tensor3D);
    drafter.extend(prompt.slice(1), ctxFeat);
    const none = new Float32Array(0);
    let got = await ortStep(session, dc, {
      B: 1,
      aux: featData.slice(0, n * F),
      Ta: n,
      hidden: none,
      Th: 0,
      ids: prompt.slice(1),
      positions: Array.from({ length: n }, (_, i) => i),
      pastK: none,
      pastV: none,
      P: 0,
    });
    const Vd = dc.draftVocabSize;
    const path_: number[] = [];
    let worst = 0;
    for (let d = 0; d < 3; d++) {
      const [ref] = drafter.expand([path_.slice()]);
      const l = got.logits as Float32Array;
      worst = Math.max(worst, maxAbsDiff(ref.logits, l.subarray(l.length - Vd)));
      const token = used[argmaxLast(ref.logits, Vd)];
      assert.equal(Number((got.topk_token_ids as BigInt64Array).at(-4)), token, 'top-1 id (d2t applied) equals the drafter token');
      path_.push(token);
      const h = got.next_hidden as Float32Array;
      const S = n + d;
      got = await ortStep(session, dc, {
        B: 1,
        aux: none,
        Ta: 0,
        hidden: h.slice(h.length - dc.hiddenSize),
        Th: 1,
        ids: [token],
        positions: [n - 1 + d + 1],
        pastK: got.present_key as Float32Array,
        pastV: got.present_value as Float32Array,
        P: S,
      });
    }
    const sig = drafter.signals(ctxFeat);
    const sigOrt = (
      await ortStep(session, dc, {
        B: 1,
        aux: featData.slice(0, n * F),
        Ta: n,
        hidden: none,
        Th: 0,
        ids: prompt.slice(1),
        positions: Array.from({ length: n }, (_, i) => i),
        pastK: none,
        pastV: none,
        P: 0,
      })
    ).specexit_signals as Float32Array;
    const sigDiff = maxAbsDiff(Float32Array.from(sig.flatMap((s) => [s.confidence, s.progress, s.remaining])), sigOrt);
    console.log(`# tiny target, real features: logits max abs ${worst.toExponential(2)}, signals ${sigDiff.toExponential(2)}`);
    assert.ok(worst <= TOL, `logits ${worst}`);
    assert.ok(sigDiff <= TOL, `signals ${sigDiff}`);
    drafter.dispose();
    tf.dispose([feats, ctxFeat]);
    tiny.dispose();
    target.dispose();
    await session.release();
  });
});

describe('bad checkpoints', () => {
  test('a missing checkpoint, a corrupt model.safetensors and a target without an embedding are errors naming the file', () => {
    assert.throws(
      () => exportDraftOnnx(path.join(dir, 'nowhere'), path.join(dir, 'x')),
      /nowhere: not a draft checkpoint \(needs config\.json and model\.safetensors\)/,
    );
    const bad = path.join(dir, 'corrupt');
    fs.cpSync(path.join(dir, 'ckpt'), bad, { recursive: true });
    const file = path.join(bad, 'model.safetensors');
    fs.writeFileSync(file, fs.readFileSync(file).subarray(0, 200));
    assert.throws(
      () => exportDraftOnnx(bad, path.join(dir, 'x')),
      (e: Error) => e.message.includes(file),
    );
    fs.writeFileSync(file, Buffer.from('not a safetensors file at all'));
    assert.throws(
      () => exportDraftOnnx(bad, path.join(dir, 'x')),
      (e: Error) => e.message.includes(file),
    );
    assert.throws(
      () => exportDraftOnnx(path.join(dir, 'ckpt'), path.join(dir, 'x'), { target: path.join(dir, 'ckpt') }),
      /model\.embed_tokens\.weight/,
    );
    assert.ok(!fs.existsSync(path.join(dir, 'x', 'model.onnx')), 'nothing written');
  });
});

describe('command line', () => {
  test('export-onnx --format onnx,sglang --format specexit writes every serving target into its own subfolder', async () => {
    const out = path.join(dir, 'all');
    const r = specforge([
      'export-onnx',
      '--checkpoint',
      path.join(dir, 'ckpt'),
      '--out',
      out,
      '--format',
      'onnx,sglang',
      '--format',
      'specexit',
      '--quantize',
      'int8',
      '--topk',
      '3',
      '--target',
      path.join(dir, 'target'),
    ]);
    assert.equal(r.status, 0, r.stderr);
    for (const f of [
      'onnx/model.onnx',
      'onnx/draft.json',
      'sglang/config.json',
      'sglang/model.safetensors',
      'specexit/config.json',
      'specexit/model.safetensors',
    ])
      assert.ok(fs.existsSync(path.join(out, f)), f);
    const info = JSON.parse(fs.readFileSync(path.join(out, 'onnx', 'draft.json'), 'utf8'));
    assert.equal(info.quantize, 'int8');
    assert.deepEqual(info.draft_to_target, Array.from(USED));
    const session = await ort.InferenceSession.create(path.join(out, 'onnx', 'model.onnx'));
    assert.deepEqual(session.outputNames, info.outputs);
    await session.release();
    // The sglang folder in bfloat16 by default; --dtype f32 keeps the checkpoint's float32 bits.
    assert.equal(new SafetensorsFile(path.join(out, 'sglang', 'model.safetensors')).info('fc.weight').dtype, 'BF16');
    const f32 = specforge([
      'export-onnx',
      '--checkpoint',
      path.join(dir, 'ckpt'),
      '--out',
      path.join(dir, 'f32'),
      '--format',
      'sglang',
      '--dtype',
      'f32',
    ]);
    assert.equal(f32.status, 0, f32.stderr);
    await assertSameTensors(path.join(dir, 'ckpt', 'model.safetensors'), path.join(dir, 'f32', 'sglang', 'model.safetensors'));
    assert.equal(JSON.parse(fs.readFileSync(path.join(dir, 'f32', 'sglang', 'config.json'), 'utf8')).torch_dtype, 'float32');
    const bad = specforge(['export-onnx', '--checkpoint', path.join(dir, 'ckpt'), '--out', out, '--format', 'onnx,tflite']);
    assert.equal(bad.status, 1);
    assert.match(bad.stderr, /--format tflite: expected onnx, sglang or specexit/);
  });
});
