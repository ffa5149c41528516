// The EAGLE-3 draft vocabulary: token counting over loss-masked positions, top-Vd selection with
// forced ids and fill, d2t/t2d layout, coverage, and the safetensors cache. Expected selections come
// from a plainly written reference here (sort all (count, id) pairs, evict one by one), not from src/.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { prng, removeTempDirs, tempDir } from './helpers.ts';
import {
  TokenCounter,
  buildDraftVocab,
  cachedDraftVocab,
  draftToTarget,
  loadDraftVocab,
  saveDraftVocab,
  targetToDraft,
} from '../src/data/draft-vocab.ts';
import type { DraftVocab } from '../src/data/draft-vocab.ts';
import { SafetensorsFile, writeSafetensors } from '../src/io/safetensors.ts';

const tmpDir = () => tempDir('dv-');
after(removeTempDirs);

/** Reference selection, written out step by step. */
function referenceUsed(seqs: { ids: number[]; mask: number[] }[], V: number, Vd: number, forcedIds: number[]): number[] {
  const count = new Map<number, number>();
  for (const s of seqs) {
    for (let i = 0; i < s.ids.length; i++) if (s.mask[i] === 1) count.set(s.ids[i], (count.get(s.ids[i]) ?? 0) + 1);
  }
  const pairs = [...count.entries()].map(([id, c]) => ({ id, c }));
  pairs.sort((x, y) => (x.c !== y.c ? y.c - x.c : x.id - y.id));
  // kept stays in rank order (most frequent first); forced ids appended are never evicted.
  const kept = pairs.slice(0, Vd).map((p) => p.id);
  const forced = [...new Set(forcedIds)];
  for (const f of forced) {
    if (kept.includes(f)) continue;
    if (kept.length < Vd) {
      kept.push(f);
      continue;
    }
    let j = kept.length - 1;
    while (forced.includes(kept[j])) j--;
    kept.splice(j, 1);
    kept.push(f);
  }
  for (let t = 0; t < V && kept.length < Vd; t++) if (!kept.includes(t)) kept.push(t);
  return kept.sort((a, b) => a - b);
}

function referenceCoverage(seqs: { ids: number[]; mask: number[] }[], used: number[]): number {
  let total = 0;
  let hit = 0;
  for (const s of seqs) {
    for (let i = 0; i < s.ids.length; i++) {
      if (s.mask[i] !== 1) continue;
      total++;
      if (used.includes(s.ids[i])) hit++;
    }
  }
  return total === 0 ? 0 : hit / total;
}

function counterOf(V: number, seqs: { ids: number[]; mask: number[] }[]): TokenCounter {
  const c = new TokenCounter(V);
  for (const s of seqs) c.add(s.ids, s.mask);
  return c;
}

/** Sequences from a flat list of masked ids (all mask 1). */
function masked(...ids: number[]): { ids: number[]; mask: number[] }[] {
  return [{ ids, mask: ids.map(() => 1) }];
}

function usedOf(v: DraftVocab): number[] {
  return [...v.used];
}

describe('TokenCounter', () => {
  test('counts only mask-1 positions', () => {
    const c = new TokenCounter(6);
    c.add([1, 2, 2, 3, 5], [0, 1, 1, 0, 1]);
    c.add(new Int32Array([2, 4]), new Uint8Array([1, 0]));
    assert.deepEqual([...c.counts], [0, 0, 3, 0, 0, 1]);
    assert.equal(c.maskedTokens, 4);
  });

  test('rejects bad input without changing the counts', () => {
    const c = new TokenCounter(4);
    assert.throws(() => c.add([1, 2], [1]), /2 token ids but 1 loss-mask/);
    assert.throws(() => c.add([1, 4], [1, 1]), /token id 4 at position 1 is outside/);
    assert.throws(() => c.add([1, 2], [1, 2]), /loss mask value 2/);
    assert.deepEqual([...c.counts], [0, 0, 0, 0]);
    assert.equal(c.maskedTokens, 0);
    // Out-of-range ids at unmasked positions (padding) are ignored.
    c.add([-1, 3], [0, 1]);
    assert.deepEqual([...c.counts], [0, 0, 0, 1]);
  });
});

describe('buildDraftVocab selection', () => {
  test('matches the reference on random data', () => {
    for (let seed = 1; seed <= 60; seed++) {
      const r = prng(seed);
      const V = 5 + Math.floor(r() * 60);
      const Vd = 1 + Math.floor(r() * V);
      const seqs: { ids: number[]; mask: number[] }[] = [];
      const nSeq = Math.floor(r() * 5);
      const spread = 1 + Math.floor(r() * V); // small spread: few distinct ids and many ties
      for (let s = 0; s < nSeq; s++) {
        const len = Math.floor(r() * 40);
        const ids: number[] = [];
        const mask: number[] = [];
        for (let i = 0; i < len; i++) {
          ids.push(Math.floor(r() * r() * spread)); // skewed towards low ids
          mask.push(r() < 0.7 ? 1 : 0);
        }
        seqs.push({ ids, mask });
      }
      const nForced = Math.min(Vd, Math.floor(r() * 4));
      const forced: number[] = [];
      for (let k = 0; k < nForced; k++) forced.push(Math.floor(r() * V));
      const v = buildDraftVocab(counterOf(V, seqs), Vd, forced);
      const want = referenceUsed(seqs, V, Vd, forced);
      const where = `seed ${seed} V=${V} Vd=${Vd} forced=${forced}`;
      assert.deepEqual(usedOf(v), want, where);
      assert.equal(v.coverage, referenceCoverage(seqs, want), where);
      assert.equal(v.vocabSize, V);
      for (const f of forced) assert.ok(v.used.includes(f), where);
    }
  });

  test('ties are broken by the lower id', () => {
    // 7 and 3 both occur twice; 5 and 1 once each.
    const v = buildDraftVocab(counterOf(10, masked(7, 3, 7, 3, 5, 1, 9, 9, 9)), 3, []);
    assert.deepEqual(usedOf(v), [3, 7, 9]);
    const w = buildDraftVocab(counterOf(10, masked(7, 3, 7, 3, 5, 1, 9, 9, 9)), 4, []);
    assert.deepEqual(usedOf(w), [1, 3, 7, 9]);
  });

  test('a forced id with zero count gets in and evicts the least frequent kept id', () => {
    // Ranked: 2 (x3), 4 (x2), 1 (x1), 6 (x1). Top 3 = {2, 4, 1}; forced 8 evicts 1.
    const v = buildDraftVocab(counterOf(10, masked(2, 2, 2, 4, 4, 1, 6)), 3, [8]);
    assert.deepEqual(usedOf(v), [2, 4, 8]);
    assert.equal(v.coverage, 5 / 7);
    // Two forced ids evict the two least frequent in turn, never each other.
    const w = buildDraftVocab(counterOf(10, masked(2, 2, 2, 4, 4, 1, 6)), 3, [8, 9]);
    assert.deepEqual(usedOf(w), [2, 8, 9]);
  });

  test('a forced id already in the top set changes nothing', () => {
    const seqs = masked(2, 2, 2, 4, 4, 1, 6);
    const plain = buildDraftVocab(counterOf(10, seqs), 3, []);
    const forced = buildDraftVocab(counterOf(10, seqs), 3, [4, 4]);
    assert.deepEqual(usedOf(forced), usedOf(plain));
    assert.deepEqual(usedOf(plain), [1, 2, 4]);
  });

  test('fewer distinct masked tokens than Vd: the lowest unused ids fill the rest', () => {
    const v = buildDraftVocab(counterOf(10, masked(5, 5, 7)), 5, [9]);
    assert.deepEqual(usedOf(v), [0, 1, 5, 7, 9]);
    assert.equal(v.coverage, 1);
    // No data at all: forced ids plus the lowest ids; coverage 0.
    const e = buildDraftVocab(new TokenCounter(6), 3, [4]);
    assert.deepEqual(usedOf(e), [0, 1, 4]);
    assert.equal(e.coverage, 0);
    assert.equal(e.maskedTokens, 0);
  });

  test('Vd equal to V keeps everything', () => {
    const v = buildDraftVocab(counterOf(4, masked(3)), 4, [0]);
    assert.deepEqual(usedOf(v), [0, 1, 2, 3]);
  });

  test('argument errors', () => {
    const c = counterOf(5, masked(1, 2));
    assert.throws(() => buildDraftVocab(c, 2, [0, 1, 2]), /3 distinct forced token ids do not fit a draft vocab of 2/);
    assert.throws(() => buildDraftVocab(c, 0, []), /draft vocab size 0/);
    assert.throws(() => buildDraftVocab(c, 6, []), /draft vocab size 6/);
    assert.throws(() => buildDraftVocab(c, 2, [5]), /forced token id 5 is outside/);
    // Repeated forced ids count once.
    assert.deepEqual(usedOf(buildDraftVocab(c, 2, [4, 4])), [1, 4]);
  });

  test('d2t, t2d and the id maps', () => {
    const V = 12;
    const v = buildDraftVocab(counterOf(V, masked(11, 11, 3, 3, 3, 8, 0, 6, 6)), 4, [10]);
    assert.deepEqual(usedOf(v), [3, 6, 10, 11]);
    assert.ok(v.d2t instanceof BigInt64Array);
    assert.deepEqual([...v.d2t], [3n, 5n, 8n, 8n]);
    for (let i = 0; i < v.used.length; i++) {
      assert.equal(i + Number(v.d2t[i]), v.used[i]);
      assert.equal(draftToTarget(v, i), v.used[i]);
    }
    assert.equal(v.t2d.length, V);
    assert.equal(
      v.t2d.reduce((a, b) => a + b, 0),
      4,
    );
    for (const t of v.used) assert.equal(v.t2d[t], 1);
    const t2 = targetToDraft(v);
    assert.deepEqual([...t2], [-1, -1, -1, 0, -1, -1, 1, -1, -1, -1, 2, 3]);
    assert.throws(() => draftToTarget(v, 4), /draft id 4 is outside/);
    assert.throws(() => draftToTarget(v, -1), /draft id -1 is outside/);
  });

  test('coverage on a hand example', () => {
    // Masked: 1 x4, 2 x3, 3 x2, 4 x1 (10 tokens); unmasked 4s do not count. Keep {1, 2}: 7/10.
    const c = new TokenCounter(6);
    c.add([1, 1, 2, 4, 4, 4], [1, 1, 1, 1, 0, 0]);
    c.add([1, 1, 2, 2, 3, 3], [1, 1, 1, 1, 1, 1]);
    const v = buildDraftVocab(c, 2, []);
    assert.deepEqual(usedOf(v), [1, 2]);
    assert.equal(c.maskedTokens, 10);
    assert.equal(v.maskedTokens, 10);
    assert.equal(v.coverage, 0.7);
  });

  test('deterministic: same input, same vocab, regardless of the order tokens were added', () => {
    const r = prng(99);
    const ids = Array.from({ length: 500 }, () => Math.floor(r() * r() * 200));
    const mask = ids.map(() => (r() < 0.8 ? 1 : 0));
    const a = new TokenCounter(200);
    a.add(ids, mask);
    const b = new TokenCounter(200);
    for (let i = ids.length - 1; i >= 0; i--) b.add([ids[i]], [mask[i]]);
    const va = buildDraftVocab(a, 32, [199, 0]);
    const vb = buildDraftVocab(b, 32, [0, 199]);
    const vc = buildDraftVocab(a, 32, [199, 0]);
    for (const v of [vb, vc]) {
      assert.deepEqual(usedOf(v), usedOf(va));
      assert.deepEqual([...v.d2t], [...va.d2t]);
      assert.deepEqual([...v.t2d], [...va.t2d]);
      assert.equal(v.coverage, va.coverage);
    }
  });
});

describe('save / load', () => {
  const vocab = () => buildDraftVocab(counterOf(20, masked(3, 3, 7, 19, 19, 19, 5)), 5, [2]);

  test('round trip', () => {
    const file = path.join(tmpDir(), 'v.safetensors');
    const v = vocab();
    saveDraftVocab(file, v, { note: 'x' });
    const f = new SafetensorsFile(file);
    assert.deepEqual(f.info('d2t'), { dtype: 'I64', shape: [5] });
    assert.deepEqual(f.info('t2d'), { dtype: 'BOOL', shape: [20] });
    assert.equal(f.metadata.note, 'x');
    assert.equal(Number(f.metadata.masked_tokens), 7);
    const w = loadDraftVocab(file);
    assert.deepEqual(usedOf(w), usedOf(v));
    assert.deepEqual([...w.d2t], [...v.d2t]);
    assert.deepEqual([...w.t2d], [...v.t2d]);
    assert.equal(w.coverage, v.coverage);
    assert.equal(w.maskedTokens, v.maskedTokens);
    assert.equal(w.vocabSize, 20);
  });

  test('inconsistent files are errors naming the file', () => {
    const dir = tmpDir();
    const v = vocab();
    const meta = { coverage: String(v.coverage), masked_tokens: String(v.maskedTokens) };
    const write = (name: string, d2t: bigint[], t2d: number[], m: Record<string, string> = meta) => {
      const file = path.join(dir, name);
      writeSafetensors(
        file,
        {
          d2t: { dtype: 'I64', shape: [d2t.length], data: BigInt64Array.from(d2t) },
          t2d: { dtype: 'BOOL', shape: [t2d.length], data: t2d },
        },
        m,
      );
      return file;
    };
    const t2d = [...v.t2d];
    const d2t = [...v.d2t];
    const cases: [string, bigint[], number[], RegExp, Record<string, string>?][] = [
      ['shifted.safetensors', [...d2t.slice(0, 2), d2t[2] + 1n, ...d2t.slice(3)], t2d, /t2d\[6\] is 0/],
      ['extra-one.safetensors', d2t, t2d.map((b, t) => (t === 0 ? 1 : b)), /t2d marks 6 target ids but d2t holds 5/],
      ['outside.safetensors', [...d2t.slice(0, 4), 100n], t2d, /outside \[0, 20\)/],
      ['unsorted.safetensors', [d2t[1] + 1n, d2t[0] - 1n, ...d2t.slice(2)], t2d, /not strictly ascending/],
      ['no-meta.safetensors', d2t, t2d, /metadata coverage/, {}],
    ];
    for (const [name, a, b, re, m] of cases) {
      const file = write(name, a, b, m);
      assert.throws(
        () => loadDraftVocab(file),
        (e: Error) => e.message.includes(file) && re.test(e.message),
        name,
      );
    }
    const noT2d = path.join(dir, 'no-t2d.safetensors');
    writeSafetensors(noT2d, { d2t: { dtype: 'I64', shape: [1], data: BigInt64Array.from([0n]) } }, meta);
    assert.throws(
      () => loadDraftVocab(noT2d),
      (e: Error) => e.message.includes(noT2d) && /no tensor 't2d'/.test(e.message),
    );
    const missing = path.join(dir, 'missing.safetensors');
    assert.throws(
      () => loadDraftVocab(missing),
      (e: Error) => e.message.includes(missing),
    );
  });
});

describe('cachedDraftVocab', () => {
  const key = { data: 'sha-a', template: 'llama3', tokenizer: 'sha-t', max_length: 2048, size: 4 };
  const make = () => buildDraftVocab(counterOf(16, masked(1, 1, 2, 9, 9, 9, 15)), 4, [15]);

  test('computes once, then returns the cached vocab without calling compute', async () => {
    const dir = tmpDir();
    let calls = 0;
    const compute = async () => {
      calls++;
      return make();
    };
    const first = await cachedDraftVocab(dir, key, compute);
    assert.equal(first.cached, false);
    assert.equal(calls, 1);
    assert.match(path.basename(first.file), /^draft-vocab-[0-9a-f]{16}\.safetensors$/);
    assert.equal(path.dirname(first.file), dir);
    assert.ok(fs.existsSync(first.file));
    assert.deepEqual(fs.readdirSync(dir), [path.basename(first.file)]); // no temporary left behind
    const meta = new SafetensorsFile(first.file).metadata;
    assert.deepEqual(JSON.parse(meta.key_parts), key);

    // Key order does not matter.
    const reordered = Object.fromEntries(Object.entries(key).reverse());
    const second = await cachedDraftVocab(dir, reordered, async () => assert.fail('compute called on a cache hit'));
    assert.equal(second.cached, true);
    assert.equal(second.file, first.file);
    assert.deepEqual(usedOf(second.vocab), usedOf(first.vocab));
    assert.deepEqual([...second.vocab.d2t], [...first.vocab.d2t]);
    assert.equal(second.vocab.coverage, first.vocab.coverage);
    assert.equal(second.vocab.maskedTokens, first.vocab.maskedTokens);
  });

  test('changing any key part misses', async () => {
    const dir = tmpDir();
    const base = await cachedDraftVocab(dir, key, async () => make());
    const variants: Record<string, string | number>[] = [
      { ...key, data: 'sha-b' },
      { ...key, template: 'qwen' },
      { ...key, tokenizer: 'sha-u' },
      { ...key, max_length: 4096 },
      { ...key, size: 5 },
      { ...key, size: '4' }, // a string is not the number
      { ...key, extra: 1 },
    ];
    const files = new Set([base.file]);
    for (const k of variants) {
      let called = false;
      const r = await cachedDraftVocab(dir, k, async () => {
        called = true;
        return make();
      });
      assert.equal(r.cached, false, JSON.stringify(k));
      assert.ok(called);
      files.add(r.file);
    }
    assert.equal(files.size, variants.length + 1);
  });

  test('a corrupted cache file is an error naming the file', async () => {
    const dir = tmpDir();
    const { file, vocab } = await cachedDraftVocab(dir, key, async () => make());
    const meta = new SafetensorsFile(file).metadata;
    const d2t = BigInt64Array.from(vocab.d2t);
    d2t[1] += 1n; // now disagrees with t2d
    writeSafetensors(
      file,
      { d2t: { dtype: 'I64', shape: [d2t.length], data: d2t }, t2d: { dtype: 'BOOL', shape: [vocab.t2d.length], data: vocab.t2d } },
      meta,
    );
    await assert.rejects(
      cachedDraftVocab(dir, key, async () => assert.fail('compute called on a corrupted cache')),
      (e: Error) => e.message.includes(file) && /t2d/.test(e.message),
    );
    fs.writeFileSync(file, 'garbage');
    await assert.rejects(
      cachedDraftVocab(dir, key, async () => make()),
      (e: Error) => e.message.includes(file),
    );
  });

  test('rejects key parts that are not strings or finite numbers', async () => {
    await assert.rejects(
      cachedDraftVocab(tmpDir(), { size: Number.NaN }, async () => make()),
      /key part 'size'/,
    );
  });
});
