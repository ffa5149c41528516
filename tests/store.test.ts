// The offline hidden-state store: writer -> Arrow IPC shards -> reader, resume after a crash, and errors.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { RecordBatchReader } from 'apache-arrow';
import { f16ToF32, f32ToF16 } from '../src/io/dtypes.ts';
import { checkCompatible, readManifest, type StoreExpectation, type StoreSource } from '../src/store/manifest.ts';
import { ArrowStore } from '../src/store/reader.ts';
import { balancedShares } from '../src/store/sampler.ts';
import type { FeatureSample } from '../src/store/schema.ts';
import { StoreWriter, type StoreMetaInput } from '../src/store/writer.ts';
import { Rng } from '../src/util/random.ts';

const tmpRoot = fs.mkdtempSync(path.join(os.tmpdir(), 'specforge-store-'));
after(() => fs.rmSync(tmpRoot, { recursive: true, force: true }));
let dirCount = 0;
const freshDir = () => path.join(tmpRoot, `s${dirCount++}`);

const sha = (c: string) => c.repeat(64);
const H = 8;

const source: StoreSource = {
  data_sha256: sha('e'),
  data_files: ['train.jsonl'],
  format: 'sharegpt',
  skip_invalid: false,
  limit: null,
  answer_extractor: 'gsm8k',
  regenerate: null,
};

function meta(over: Partial<StoreMetaInput> = {}): StoreMetaInput {
  return {
    target: {
      architecture: 'Qwen3ForCausalLM',
      hidden_size: H,
      vocab_size: 100,
      config_sha256: sha('a'),
      weights_sha256: sha('b'),
      tokenizer_sha256: sha('c'),
    },
    template: 'qwen3',
    aux_layer_ids: [1, 3, 5],
    max_length: 32,
    samples_per_shard: 4,
    source,
    ...over,
  };
}

const expectation: StoreExpectation = {
  config_sha256: sha('a'),
  weights_sha256: sha('b'),
  tokenizer_sha256: sha('c'),
  template: 'qwen3',
  aux_layer_ids: [1, 3, 5],
  max_length: 32,
  source,
};

function sample(i: number, h = H): FeatureSample {
  const rng = new Rng(1000 + i);
  const T = 1 + ((i * 7) % 31);
  const spans = i % 3;
  const thinkSpans = new Int32Array(2 * spans);
  for (let k = 0; k < 2 * spans; k++) thinkSpans[k] = k * 2 + 1;
  return {
    id: `sample-${i}-é`,
    inputIds: Int32Array.from({ length: T }, () => rng.int(100)),
    lossMask: Uint8Array.from({ length: T }, (_, t) => (t > T / 3 ? 1 : 0)),
    aux: rng.normalArray(T * 3 * h, 3),
    finalHidden: rng.normalArray(T * h, 2),
    thinkSpans,
    answerPositions: Int32Array.from({ length: spans }, (_, k) => (k % 2 ? -1 : k + 2)),
    answer: i % 2 ? `answer ${i}` : '',
  };
}

async function writeStore(dir: string, n: number, over: Partial<StoreMetaInput> = {}): Promise<void> {
  const w = await StoreWriter.open(dir, meta(over));
  for (let i = 0; i < n; i++) await w.add(sample(i));
  await w.finish();
}

const roundF16 = (x: Float32Array) => Float32Array.from(x, (v) => f16ToF32(f32ToF16(v)));

function assertSample(got: FeatureSample, want: FeatureSample, f16: boolean): void {
  assert.equal(got.id, want.id);
  assert.deepEqual(got.inputIds, want.inputIds);
  assert.deepEqual(got.lossMask, want.lossMask);
  assert.deepEqual(got.thinkSpans, want.thinkSpans);
  assert.deepEqual(got.answerPositions, want.answerPositions);
  assert.equal(got.answer, want.answer);
  assert.ok(got.aux instanceof Float32Array && got.finalHidden instanceof Float32Array);
  assert.deepEqual(got.aux, f16 ? roundF16(want.aux) : want.aux);
  assert.deepEqual(got.finalHidden, f16 ? roundF16(want.finalHidden) : want.finalHidden);
}

for (const dtype of ['float16', 'float32'] as const) {
  test(`round trip through shards in ${dtype}, with random access`, async () => {
    const dir = freshDir();
    const n = 11;
    // A small record-batch cap splits each shard into several record batches.
    const w = await StoreWriter.open(dir, meta({ dtype }), { recordBatchBytes: 2000 });
    for (let i = 0; i < n; i++) await w.add(sample(i));
    const m = await w.finish();
    assert.equal(m.complete, true);
    assert.equal(m.total_samples, n);
    assert.deepEqual(
      m.shards.map((s) => [s.file, s.samples, s.first_sample]),
      [
        ['shard-00000.arrow', 4, 0],
        ['shard-00001.arrow', 4, 4],
        ['shard-00002.arrow', 3, 8],
      ],
    );
    assert.equal(
      m.total_tokens,
      Array.from({ length: n }, (_, i) => sample(i).inputIds.length).reduce((a, b) => a + b),
    );
    assert.deepEqual(readManifest(dir), m);

    const store = await ArrowStore.open(dir, expectation);
    assert.equal(store.size, n);
    for (const i of [7, 0, 10, 3, 4, 9, 1]) assertSample(await store.get(i), sample(i), dtype === 'float16');
    // Concurrent reads on the same shards are serialized inside the store.
    const all = await Promise.all(Array.from({ length: n }, (_, i) => store.get(i)));
    all.forEach((s, i) => assertSample(s, sample(i), dtype === 'float16'));
    await assert.rejects(store.get(n), RangeError);
    await store.close();
  });
}

test('batches: deterministic per seed/epoch, a permutation per epoch, disjoint rank shards', async () => {
  const dir = freshDir();
  const n = 23;
  await writeStore(dir, n);
  const store = await ArrowStore.open(dir);
  const ids = async (opts: Parameters<ArrowStore['batches']>[0]) => {
    const out: number[][] = [];
    for await (const b of store.batches(opts)) out.push(b.map((s) => Number(s.id.split('-')[1])));
    return out;
  };
  const base = { batchSize: 5, shuffle: true, seed: 7, epoch: 0, dropLast: false };
  const e0 = await ids(base);
  assert.deepEqual(await ids(base), e0);
  assert.deepEqual(
    e0.map((b) => b.length),
    [5, 5, 5, 5, 3],
  );
  assert.deepEqual(
    e0.flat().sort((a, b) => a - b),
    Array.from({ length: n }, (_, i) => i),
  );
  const e1 = await ids({ ...base, epoch: 1 });
  assert.notDeepEqual(e1, e0);
  assert.deepEqual(
    e1.flat().sort((a, b) => a - b),
    Array.from({ length: n }, (_, i) => i),
  );
  assert.notDeepEqual(await ids({ ...base, seed: 8 }), e0);
  // dropLast (the default) drops the partial batch.
  assert.deepEqual(await ids({ ...base, dropLast: undefined }), e0.slice(0, 4));
  // Unshuffled: store order.
  assert.deepEqual(
    (await ids({ ...base, shuffle: false })).flat(),
    Array.from({ length: n }, (_, i) => i),
  );

  const ranks = await Promise.all([0, 1, 2].map((rank) => ids({ ...base, batchSize: 3, dropLast: true, rank, worldSize: 3 })));
  assert.deepEqual(
    ranks.map((r) => r.length),
    [2, 2, 2],
  ); // floor(23/3) = 7 each -> 2 full batches of 3
  const seen = ranks.flat(2);
  assert.equal(new Set(seen).size, seen.length, 'rank shards overlap');
  // Interleaved: rank r takes positions r, r+3, ... of the epoch's permutation.
  const perm = e0.flat();
  assert.deepEqual(
    ranks[1].flat(),
    [1, 4, 7, 10, 13, 16].map((p) => perm[p]),
  );
  // Balanced: each global batch is the interleaved one's samples, split into equal counts by length.
  const lengthOf = new Map<number, number>();
  for (let i = 0; i < n; i++) lengthOf.set(Number((await store.get(i)).id.split('-')[1]), (await store.get(i)).inputIds.length);
  const bal = await Promise.all([0, 1, 2].map((rank) => ids({ ...base, batchSize: 3, dropLast: true, rank, worldSize: 3, balance: true })));
  for (let b = 0; b < 2; b++) {
    const sorted = (xs: number[]) => [...xs].sort((x, y) => x - y);
    assert.deepEqual(sorted(bal.flatMap((r) => r[b])), sorted(ranks.flatMap((r) => r[b])), `global batch ${b}`);
    assert.deepEqual(
      bal.map((r) => r[b].length),
      [3, 3, 3],
    );
    const tokens = bal.map((r) => r[b].reduce((t, id) => t + lengthOf.get(id)!, 0));
    assert.ok(Math.max(...tokens) - Math.min(...tokens) <= Math.max(...bal.flatMap((r) => r[b]).map((id) => lengthOf.get(id)!)));
  }
  // Breaking out early (with a prefetch in flight) is fine.
  for await (const b of store.batches(base)) {
    assert.equal(b.length, 5);
    break;
  }
  await store.close();
});

test('balancedShares: equal counts, longest first to the share with the fewest tokens', () => {
  // 9 8 7 6 5 4 over 2 ranks: 9->0, 8->1, 7->1 (8 < 9), 6->0 (9 < 15), 5->0 (15 = 15: lower rank), then
  // rank 0 is full and 4->1: rank 0 {9, 6, 5} = 20 tokens, rank 1 {8, 7, 4} = 19.
  assert.deepEqual(balancedShares([4, 9, 6, 8, 5, 7], 2), [
    [1, 2, 4],
    [3, 5, 0],
  ]);
  // Equal lengths go in position order, alternating as the token counts tie and then differ.
  assert.deepEqual(balancedShares([3, 3, 3, 3], 2), [
    [0, 2],
    [1, 3],
  ]);
  assert.throws(() => balancedShares([1, 2, 3], 2), /do not split into 2 equal shares/);
});

test('resume after a crash gives byte-identical shards', async () => {
  const S = 4;
  const n = 13;
  const full = freshDir();
  await writeStore(full, n);

  const dir = freshDir();
  const w = await StoreWriter.open(dir, meta());
  assert.equal(w.completedSamples, 0);
  for (let i = 0; i < 2.5 * S; i++) await w.add(sample(i));
  // Crash: the writer is dropped without finish(), leaving a half-written temporary file.
  fs.writeFileSync(path.join(dir, 'shard-00002.arrow.12345.tmp'), 'partial');
  assert.equal(readManifest(dir).complete, false);
  await assert.rejects(ArrowStore.open(dir), /incomplete.*allowIncomplete/s);
  const partial = await ArrowStore.open(dir, null, { allowIncomplete: true });
  assert.equal(partial.size, 2 * S);
  assertSample(await partial.get(5), sample(5), true);
  await partial.close();

  await assert.rejects(StoreWriter.open(dir, meta({ template: 'llama3', max_length: 64 })), (e: Error) => {
    assert.match(e.message, /manifest\.json/);
    assert.match(e.message, /template: store has "qwen3", expected "llama3"/);
    assert.match(e.message, /max_length: store has 32, expected 64/);
    return true;
  });
  await assert.rejects(StoreWriter.open(dir, meta({ dtype: 'float32' })), /dtype/);

  const w2 = await StoreWriter.open(dir, meta());
  assert.equal(w2.completedSamples, 2 * S);
  assert.ok(!fs.readdirSync(dir).some((f) => f.endsWith('.tmp')), 'leftover temp file removed');
  for (let i = w2.completedSamples; i < n; i++) await w2.add(sample(i));
  await w2.finish();

  const files = fs.readdirSync(full).sort();
  assert.deepEqual(fs.readdirSync(dir).sort(), files);
  for (const f of files) assert.ok(fs.readFileSync(path.join(dir, f)).equals(fs.readFileSync(path.join(full, f))), `${f} differs`);
  await assert.rejects(StoreWriter.open(dir, meta()), /already complete/);
});

test('writer rejects samples whose shapes do not match the store', async () => {
  const w = await StoreWriter.open(freshDir(), meta());
  const s = sample(3);
  await assert.rejects(w.add({ ...s, aux: s.aux.subarray(1) }), /aux has .* expected T\*3\*Ht/);
  await assert.rejects(w.add({ ...s, finalHidden: new Float32Array(5) }), /finalHidden has 5 values/);
  await assert.rejects(w.add({ ...s, lossMask: new Uint8Array(1) }), /loss_mask/);
  await assert.rejects(w.add(sample(3, H + 1)), /aux has/);
  await w.add(s); // still usable
  assert.equal((await w.finish()).total_samples, 1);
});

test('truncated or corrupt shards and bad manifests are clear errors naming the file', async () => {
  const dir = freshDir();
  await writeStore(dir, 9);
  const shard1 = path.join(dir, 'shard-00001.arrow');
  const bytes = fs.readFileSync(shard1);

  // Cut the file: caught at open from the manifest's byte count.
  fs.writeFileSync(shard1, bytes.subarray(0, bytes.length - 100));
  await assert.rejects(ArrowStore.open(dir), /shard-00001\.arrow: shard is \d+ bytes but manifest\.json says \d+ \(truncated\)/);

  // Cut it after open: caught when the shard is first read.
  fs.writeFileSync(shard1, bytes);
  let store = await ArrowStore.open(dir);
  fs.writeFileSync(shard1, bytes.subarray(0, bytes.length - 100));
  await assert.rejects(store.get(5), /shard-00001\.arrow: .*truncated/);
  assertSample(await store.get(0), sample(0), true); // other shards still read
  await store.close();

  // Same length, footer damaged.
  const bad = Buffer.from(bytes);
  bad.fill(0xff, bad.length - 40, bad.length - 10);
  fs.writeFileSync(shard1, bad);
  store = await ArrowStore.open(dir);
  await assert.rejects(store.get(4), /shard-00001\.arrow: /);
  await store.close();

  // Same length, end magic missing (an unfinished file padded to size).
  bad.set(bytes);
  bad.fill(0, bad.length - 6);
  fs.writeFileSync(shard1, bad);
  store = await ArrowStore.open(dir);
  await assert.rejects(store.get(4), /shard-00001\.arrow: Arrow IPC footer missing/);
  await store.close();
  fs.writeFileSync(shard1, bytes);

  // A manifest whose row counts disagree with the shard.
  const manifestPath = path.join(dir, 'manifest.json');
  const good = fs.readFileSync(manifestPath, 'utf8');
  const m = JSON.parse(good);
  m.shards[1].samples = 3;
  m.shards[2].first_sample = 7;
  m.total_samples = 8;
  fs.writeFileSync(manifestPath, JSON.stringify(m));
  store = await ArrowStore.open(dir);
  await assert.rejects(store.get(4), /shard-00001\.arrow: holds 4 rows, manifest\.json says 3 samples/);
  await store.close();

  // Wrong field types.
  for (const [mutate, re] of [
    [(x: any) => (x.max_length = '32'), /manifest\.json: field max_length must be an integer >= 1, got string "32"/],
    [(x: any) => (x.target.hidden_size = 8.5), /manifest\.json: field target\.hidden_size must be an integer >= 1, got number 8\.5/],
    [(x: any) => (x.shards[0].bytes = null), /manifest\.json: field shards\[0\]\.bytes must be an integer >= 1, got null/],
    [(x: any) => (x.complete = 'yes'), /manifest\.json: field complete must be a boolean/],
    [(x: any) => (x.dtype = 'bfloat16'), /manifest\.json: field dtype must be "float16" or "float32"/],
    [(x: any) => (x.aux_layer_ids = [1, -2]), /manifest\.json: field aux_layer_ids\[1\] must be a non-negative integer/],
  ] as const) {
    const x = JSON.parse(good);
    mutate(x);
    fs.writeFileSync(manifestPath, JSON.stringify(x));
    await assert.rejects(ArrowStore.open(dir), re);
    assert.throws(() => readManifest(dir), re);
  }
  fs.writeFileSync(manifestPath, good);
});

test('checkCompatible lists every mismatching field', async () => {
  const dir = freshDir();
  await writeStore(dir, 2);
  const m = readManifest(dir);
  checkCompatible(m, expectation);
  const wrong = { ...expectation, weights_sha256: sha('d'), aux_layer_ids: [2, 4, 6], max_length: 16 };
  assert.throws(
    () => checkCompatible(m, wrong),
    (e: Error) => {
      assert.match(e.message, /does not match the recipe \(3 fields\)/);
      assert.match(e.message, /target\.weights_sha256: store has "b{64}", expected "d{64}"/);
      assert.match(e.message, /aux_layer_ids: store has \[1,3,5\], expected \[2,4,6\]/);
      assert.match(e.message, /max_length: store has 32, expected 16/);
      assert.doesNotMatch(e.message, /config_sha256|template/);
      return true;
    },
  );
  await assert.rejects(ArrowStore.open(dir, wrong), /does not match the recipe/);
});

test('float16 store size per token for Ht=96', async (t) => {
  const h = 96;
  const dir = freshDir();
  const w = await StoreWriter.open(dir, meta({ target: { ...meta().target, hidden_size: h }, max_length: 64, samples_per_shard: 8 }));
  let tokens = 0;
  for (let i = 0; i < 16; i++) {
    const s = sample(i, h);
    tokens += s.inputIds.length;
    await w.add(s);
  }
  const m = await w.finish();
  const bytes = m.shards.reduce((a, s) => a + s.bytes, 0);
  const perToken = bytes / tokens;
  t.diagnostic(
    `float16 store, Ht=${h}: ${perToken.toFixed(1)} bytes/token (${bytes} bytes, ${tokens} tokens; features alone ${2 * 4 * h})`,
  );
  assert.ok(perToken > 2 * 4 * h && perToken < 2 * 4 * h * 1.15, `${perToken} bytes/token`);
});

/** Where the bytes of `x` first occur in `file`'s contents (a sample's stored column). */
function offsetOf(bytes: Buffer, x: Uint16Array | Int32Array): number {
  const at = bytes.indexOf(Buffer.from(x.buffer, x.byteOffset, x.byteLength));
  assert.ok(at > 0, 'column bytes not found in the shard');
  return at;
}

test('checksums: a flipped byte in a float region, or a token id changed within the vocabulary, names the shard and the sample', async () => {
  const dir = freshDir();
  await writeStore(dir, 9); // shards of 4: sample 5 is row 1 of shard 1
  let store = await ArrowStore.open(dir);
  assert.deepEqual(await store.verify(), []);
  await store.close();
  const shard1 = path.join(dir, 'shard-00001.arrow');
  const good = fs.readFileSync(shard1);

  const aux = offsetOf(good, Uint16Array.from(sample(5).aux, f32ToF16));
  const ids = offsetOf(good, sample(5).inputIds);
  for (const [at, flip, column] of [
    [aux + 6, (b: number) => b ^ 0x01, 'aux_hidden'], // the lowest mantissa bit of one float16
    [ids, (b: number) => (b + 1) % 100, 'input_ids'], // another token id, still in the vocabulary
  ] as const) {
    const bad = Buffer.from(good);
    bad[at] = flip(bad[at]);
    fs.writeFileSync(shard1, bad);
    store = await ArrowStore.open(dir);
    await assert.rejects(
      store.get(5),
      /shard-00001\.arrow: sample "sample-5-é" \(#5, row 1 of the shard\) fails its checksum \(CRC-32 [0-9a-f]{8}, recorded [0-9a-f]{8}\): the shard is corrupt/,
    );
    // The other rows of its record batch still read; batches() reports the same error.
    assertSample(await store.get(4), sample(4), true);
    await assert.rejects(async () => {
      for await (const _ of store.batches({ batchSize: 3, shuffle: false, seed: 0, epoch: 0 }));
    }, /shard-00001\.arrow: sample "sample-5-é" \(#5/);
    const problems = await store.verify();
    assert.equal(problems.length, 1);
    assert.match(
      problems[0],
      new RegExp(`shard-00001\\.arrow: record batch 0 \\(samples #4 to #7\\), column ${column} fails its checksum .*recapture the store`),
    );
    await store.close();
  }
  fs.writeFileSync(shard1, good);
});

test("a shard's checksum: a shard of another store with the same size, or damaged checksum metadata, is refused naming it", async () => {
  const dir = freshDir();
  await writeStore(dir, 9);
  // Another store: the same ids and shapes, other feature values (so the same file sizes).
  const other = freshDir();
  const w = await StoreWriter.open(other, meta());
  for (let i = 0; i < 9; i++) await w.add({ ...sample(i), aux: sample(i).aux.map((x) => x + 1) });
  await w.finish();
  const shard1 = path.join(dir, 'shard-00001.arrow');
  const good = fs.readFileSync(shard1);
  const foreign = fs.readFileSync(path.join(other, 'shard-00001.arrow'));
  assert.equal(foreign.length, good.length);
  fs.writeFileSync(shard1, foreign);
  let store = await ArrowStore.open(dir);
  await assert.rejects(
    store.get(4),
    /shard-00001\.arrow: checksum specforge\.crc32 is "[0-9a-f]{8}", manifest\.json says [0-9a-f]{8} \(the shard was replaced\)/,
  );
  await store.close();

  // One row's sum edited in the schema metadata (every copy of it in the file).
  const reader = RecordBatchReader.from(good);
  reader.open();
  const sums = Buffer.from(reader.schema.metadata.get('specforge.row_crc32')!);
  const bad = Buffer.from(good);
  let copies = 0;
  for (let at = good.indexOf(sums); at >= 0; at = good.indexOf(sums, at + 1), copies++) bad[at] = bad[at] === 0x30 ? 0x31 : 0x30;
  assert.ok(copies >= 1);
  fs.writeFileSync(shard1, bad);
  store = await ArrowStore.open(dir);
  await assert.rejects(
    store.get(4),
    /shard-00001\.arrow: its checksums do not add up to its specforge\.crc32 [0-9a-f]{8}: the schema metadata is damaged/,
  );
  await store.close();
  fs.writeFileSync(shard1, good);
});

test('token ids outside the vocabulary: refused at write, and at read naming the shard and the sample', async () => {
  const dir = freshDir();
  const w = await StoreWriter.open(dir, meta());
  const s = sample(3);
  await assert.rejects(
    w.add({ ...s, inputIds: Int32Array.from(s.inputIds, (x, t) => (t === 2 ? 100 : x)) }),
    /sample "sample-3-é" \(#0\): token id 100 at position 2 is outside the target's vocabulary \[0, 100\)/,
  );
  await assert.rejects(
    w.add({ ...s, lossMask: Uint8Array.from(s.lossMask, () => 2) }),
    /loss_mask value 2 at position 0 \(must be 0 or 1\)/,
  );
  await w.add(s);
  await w.finish();
  // A store whose ids pass their checksums but not the vocabulary (here: a manifest that says 10 tokens).
  const file = path.join(dir, 'manifest.json');
  const m = JSON.parse(fs.readFileSync(file, 'utf8'));
  m.target.vocab_size = 10;
  fs.writeFileSync(file, JSON.stringify(m));
  const store = await ArrowStore.open(dir);
  const first = s.inputIds.findIndex((x) => x >= 10);
  await assert.rejects(
    store.get(0),
    new RegExp(
      `shard-00000\\.arrow: sample "sample-3-é" \\(#0, row 0 of the shard\\) token id ${s.inputIds[first]} at position ${first} is outside the target's vocabulary \\[0, 10\\)`,
    ),
  );
  await store.close();
});

test("a shard's entry removed from the manifest (totals adjusted) is refused, naming the shard", async () => {
  const dir = freshDir();
  await writeStore(dir, 9); // shards of 4, 4, 1
  const file = path.join(dir, 'manifest.json');
  const good = fs.readFileSync(file, 'utf8');
  const drop = (k: number) => {
    const m = JSON.parse(good);
    const [gone] = m.shards.splice(k, 1);
    m.total_samples -= gone.samples;
    m.total_tokens -= gone.tokens;
    fs.writeFileSync(file, JSON.stringify(m));
  };
  drop(2);
  await assert.rejects(
    ArrowStore.open(dir),
    /manifest\.json: lists 2 shards, but the store folder also holds shard-00002\.arrow, which it does not list .*recapture the store/,
  );
  drop(1);
  await assert.rejects(
    ArrowStore.open(dir),
    /manifest\.json: field shards\[1\]\.first_sample is 8, but the shards before it hold 4 samples/,
  );
  fs.writeFileSync(file, good);
  await (await ArrowStore.open(dir)).close();
});

test('a store of an older specforge (schema 1) is refused with a recapture message naming it', async () => {
  const dir = freshDir();
  await writeStore(dir, 2);
  const file = path.join(dir, 'manifest.json');
  const m = JSON.parse(fs.readFileSync(file, 'utf8'));
  m.schema_version = 1;
  delete m.source;
  fs.writeFileSync(file, JSON.stringify(m));
  const re = new RegExp(
    `${file.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}: the store was written by an older specforge \\(store schema 1, this one reads 2\\).*recapture it: delete ${dir.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}`,
  );
  await assert.rejects(ArrowStore.open(dir), re);
  await assert.rejects(StoreWriter.open(dir, meta()), re);
});

test('features that are NaN, infinite or beyond float16 are refused at write, naming the sample, column and token', async () => {
  const w = await StoreWriter.open(freshDir(), meta());
  const s = sample(3); // 22 tokens
  const aux = s.aux.slice();
  aux[3 * H * 5 + 7] = Number.NaN;
  await assert.rejects(w.add({ ...s, aux }), /sample "sample-3-é" \(#0\): aux_hidden value at token 5 is NaN$/);
  const fin = s.finalHidden.slice();
  fin[H * 2] = 70000;
  await assert.rejects(
    w.add({ ...s, finalHidden: fin }),
    /sample "sample-3-é" \(#0\): final_hidden value at token 2 is 70000 overflows float16 \(largest 65504\); capture with capture\.dtype: float32/,
  );
  fin[H * 2] = Number.NEGATIVE_INFINITY;
  await assert.rejects(w.add({ ...s, finalHidden: fin }), /final_hidden value at token 2 is -Infinity/);
  await w.add(s); // still usable
  // float32 keeps 70000, and refuses infinity as well.
  const w32 = await StoreWriter.open(freshDir(), meta({ dtype: 'float32' }));
  fin[H * 2] = 70000;
  await w32.add({ ...s, finalHidden: fin });
  fin[H * 2] = Number.POSITIVE_INFINITY;
  await assert.rejects(w32.add({ ...s, finalHidden: fin }), /final_hidden value at token 2 is Infinity/);
});

test('a full disk while writing a shard or the manifest: one error naming the file and what the store keeps; a rerun resumes to the same store', async (t) => {
  const full = freshDir();
  await writeStore(full, 13);
  const dir = freshDir();
  const rejections: unknown[] = [];
  const onRejection = (e: unknown) => rejections.push(e);
  process.on('unhandledRejection', onRejection);
  t.after(() => process.off('unhandledRejection', onRejection));
  // ENOSPC for the writes into files whose (temporary) name matches `failing`.
  let failing: RegExp | null = null;
  const doomed = new Set<number>();
  const { openSync, writeSync } = fs;
  const openMock = t.mock.method(fs, 'openSync', (p: fs.PathLike, ...rest: never[]) => {
    const fd = (openSync as (...a: unknown[]) => number)(p, ...rest);
    if (failing?.test(String(p))) doomed.add(fd);
    return fd;
  });
  const writeMock = t.mock.method(fs, 'writeSync', (fd: number, ...rest: never[]) => {
    if (doomed.has(fd)) throw Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' });
    return (writeSync as (...a: unknown[]) => number)(fd, ...rest);
  });

  failing = /shard-00002\.arrow\..*\.tmp$/;
  const w = await StoreWriter.open(dir, meta());
  for (let i = 0; i < 11; i++) await w.add(sample(i));
  const err = await w.add(sample(11)).then(
    () => null,
    (e: Error) => e,
  );
  await new Promise((r) => setImmediate(r));
  assert.ok(err);
  assert.match(
    err.message,
    /shard-00002\.arrow: cannot write shard \(ENOSPC: no space left on device, write\); .* keeps the 2 finished shards \(8 samples\) that its manifest\.json lists; rerun to resume from them$/,
  );
  assert.doesNotMatch(err.message, /\n/);
  assert.deepEqual(rejections, []);
  assert.deepEqual(fs.readdirSync(dir).sort(), ['manifest.json', 'shard-00000.arrow', 'shard-00001.arrow'], 'no temporary file is left');

  // The manifest's turn (a resume rewrites it first): refused naming it, and the old one stays.
  const manifest = fs.readFileSync(path.join(dir, 'manifest.json'));
  failing = /manifest\.json\..*\.tmp$/;
  await assert.rejects(
    StoreWriter.open(dir, meta()),
    /manifest\.json: cannot write the store manifest \(ENOSPC: no space left on device, write\); the previous one is kept$/,
  );
  assert.ok(fs.readFileSync(path.join(dir, 'manifest.json')).equals(manifest));
  assert.deepEqual(rejections, []);
  failing = null;
  openMock.mock.restore();
  writeMock.mock.restore();
  const w3 = await StoreWriter.open(dir, meta());
  assert.equal(w3.completedSamples, 8);
  for (let i = 8; i < 13; i++) await w3.add(sample(i));
  await w3.finish();
  for (const f of fs.readdirSync(full)) assert.ok(fs.readFileSync(path.join(dir, f)).equals(fs.readFileSync(path.join(full, f))), f);
});

test('what a store was captured from: a resume with other data is refused naming the field and the files', async () => {
  const dir = freshDir();
  const w = await StoreWriter.open(dir, meta());
  for (let i = 0; i < 6; i++) await w.add(sample(i)); // one finished shard, then a crash
  const other = { ...source, data_sha256: sha('f'), data_files: ['other.jsonl'] };
  await assert.rejects(StoreWriter.open(dir, meta({ source: other })), (e: Error) => {
    assert.match(e.message, /manifest\.json: cannot resume the existing store, it was captured with different settings/);
    assert.match(e.message, /source\.data_sha256: store has "e{64}" \(train\.jsonl\), expected "f{64}" \(other\.jsonl\)/);
    assert.doesNotMatch(e.message, /source\.limit|template/);
    return true;
  });
  await assert.rejects(
    StoreWriter.open(dir, meta({ source: { ...source, format: 'openai', answer_extractor: 'boxed' } })),
    /source\.format: store has "sharegpt", expected "openai"\n {2}source\.answer_extractor: store has "gsm8k", expected "boxed"/,
  );
  assert.equal(readManifest(dir).total_samples, 4, 'the store is untouched');
  // A reader expecting other data refuses it too (train), naming the field.
  await w.finish();
  await assert.rejects(
    ArrowStore.open(dir, { ...expectation, source: { ...source, regenerate: { temperature: 0.7 } } }),
    /does not match the recipe \(1 field\).*\n {2}source\.regenerate: store has null, expected \{"temperature":0\.7\}/s,
  );
});

test('capture.limit raised on a complete store: its full shards are kept and the rest added, equal to a capture of the larger limit', async () => {
  const limited = (limit: number | null) => meta({ source: { ...source, limit } });
  const full = freshDir();
  const wf = await StoreWriter.open(full, limited(13));
  for (let i = 0; i < 13; i++) await wf.add(sample(i));
  await wf.finish();

  const dir = freshDir();
  const w = await StoreWriter.open(dir, limited(10));
  for (let i = 0; i < 10; i++) await w.add(sample(i)); // shards of 4, 4, 2
  await w.finish();
  const before = fs.readFileSync(path.join(dir, 'manifest.json'));
  // Without extend (online training, tests), lowered, or with other data as well: refused, the store untouched.
  await assert.rejects(
    StoreWriter.open(dir, limited(13)),
    /cannot add to the existing store.*\n {2}source\.limit: store has 10, expected 13/s,
  );
  await assert.rejects(StoreWriter.open(dir, limited(8), { extend: true }), /source\.limit: store has 10, expected 8/);
  await assert.rejects(
    StoreWriter.open(dir, meta({ source: { ...source, limit: 13, skip_invalid: true } }), { extend: true }),
    /source\.skip_invalid: store has false, expected true/,
  );
  assert.ok(fs.readFileSync(path.join(dir, 'manifest.json')).equals(before));

  const grown = await StoreWriter.open(dir, limited(13), { extend: true });
  assert.equal(grown.completedSamples, 8, 'the partial shard is recaptured');
  assert.ok(!fs.existsSync(path.join(dir, 'shard-00002.arrow')));
  assert.equal(readManifest(dir).complete, false);
  for (let i = 8; i < 13; i++) await grown.add(sample(i));
  await grown.finish();
  const files = fs.readdirSync(full).sort();
  assert.deepEqual(fs.readdirSync(dir).sort(), files);
  for (const f of files) assert.ok(fs.readFileSync(path.join(dir, f)).equals(fs.readFileSync(path.join(full, f))), f);
});

test('storeState: what a store folder needs before training, and a store of other data refused naming the fields', async () => {
  const { storeState } = await import('../src/store/identity.ts');
  const dir = freshDir();
  const want = (over: Partial<StoreSource>) => ({ ...expectation, source: { ...source, ...over } });
  assert.equal(storeState(dir, expectation), 'missing');
  const w = await StoreWriter.open(dir, meta({ source: { ...source, limit: 6 } }));
  for (let i = 0; i < 4; i++) await w.add(sample(i));
  assert.equal(storeState(dir, want({ limit: 6 })), 'incomplete');
  for (let i = 4; i < 6; i++) await w.add(sample(i));
  await w.finish();
  assert.equal(storeState(dir, want({ limit: 6 })), 'complete');
  assert.equal(storeState(dir, want({ limit: 9 })), 'extend');
  assert.equal(storeState(dir, want({ limit: null })), 'extend');
  assert.throws(
    () => storeState(dir, want({ limit: 5 })),
    /does not match the recipe \(1 field\).*source\.limit: store has 6, expected 5/s,
  );
  assert.throws(
    () => storeState(dir, want({ limit: 9, data_sha256: sha('f') })),
    /does not match the recipe \(2 fields\).*source\.data_sha256: .*\n {2}source\.limit: store has 6, expected 9/s,
  );
});
