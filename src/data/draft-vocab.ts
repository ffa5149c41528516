// The EAGLE-3 draft vocabulary (FR-Spec style): the draft head predicts over the Vd target tokens
// that occur most often in the loss-masked training tokens, plus the forced end-of-turn/eos ids.
//   used[0..Vd)  kept target ids, ascending
//   d2t[i]       used[i] - i as int64 (target_id = i + d2t[i]), the layout EAGLE-3 checkpoints store
//   t2d[t]       1 where target id t is in the draft vocabulary (length V)
// Selection: rank the masked ids by (count desc, id asc) and keep the first Vd; a forced id outside
// that set replaces the least frequent kept non-forced id (so the result is the forced ids plus the
// first Vd - |forced| non-forced ranked ids); when fewer than Vd ids were seen, the lowest unused ids
// fill the rest. Cached as safetensors under a sha256 of the inputs that decide it.
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { SafetensorsFile, writeSafetensors } from '../io/safetensors.ts';

export interface DraftVocab {
  /** Kept target ids, strictly ascending, length Vd. */
  used: Int32Array;
  /** used[i] - i, length Vd. */
  d2t: BigInt64Array;
  /** 1 at the kept target ids, length V. */
  t2d: Uint8Array;
  /** Share of masked tokens (with multiplicity) whose id is kept; 0 when no tokens were masked. */
  coverage: number;
  maskedTokens: number;
  vocabSize: number;
}

export class DraftVocabError extends Error {}

/** Counts target ids over loss-masked positions (mask 1; mask 0 positions are skipped). */
export class TokenCounter {
  readonly counts: Float64Array;
  private masked = 0;

  constructor(vocabSize: number) {
    if (!Number.isInteger(vocabSize) || vocabSize < 1) throw new DraftVocabError(`vocab size must be a positive integer, got ${vocabSize}`);
    this.counts = new Float64Array(vocabSize);
  }

  get maskedTokens(): number {
    return this.masked;
  }

  add(ids: ArrayLike<number>, lossMask: ArrayLike<number>): void {
    if (ids.length !== lossMask.length) throw new DraftVocabError(`${ids.length} token ids but ${lossMask.length} loss-mask values`);
    const V = this.counts.length;
    // Validate first so a bad sequence leaves the counts untouched.
    let n = 0;
    for (let i = 0; i < ids.length; i++) {
      const m = lossMask[i];
      if (m === 0) continue;
      if (m !== 1) throw new DraftVocabError(`loss mask value ${m} at position ${i} (expected 0 or 1)`);
      const t = ids[i];
      if (!Number.isInteger(t) || t < 0 || t >= V)
        throw new DraftVocabError(`token id ${t} at position ${i} is outside the vocabulary [0, ${V})`);
      n++;
    }
    for (let i = 0; i < ids.length; i++) if (lossMask[i] === 1) this.counts[ids[i]]++;
    this.masked += n;
  }
}

/** Builds the draft vocabulary from counts; deterministic for given counts, size and forced ids. */
export function buildDraftVocab(counter: TokenCounter, draftVocabSize: number, forcedIds: number[]): DraftVocab {
  const counts = counter.counts;
  const V = counts.length;
  const Vd = draftVocabSize;
  if (!Number.isInteger(Vd) || Vd < 1 || Vd > V)
    throw new DraftVocabError(`draft vocab size ${Vd} must be an integer in [1, ${V}] (the target vocab size)`);
  const forced = new Set<number>();
  for (const f of forcedIds) {
    if (!Number.isInteger(f) || f < 0 || f >= V) throw new DraftVocabError(`forced token id ${f} is outside the vocabulary [0, ${V})`);
    forced.add(f);
  }
  if (forced.size > Vd) throw new DraftVocabError(`${forced.size} distinct forced token ids do not fit a draft vocab of ${Vd}`);

  const ranked: number[] = [];
  for (let t = 0; t < V; t++) if (counts[t] > 0 && !forced.has(t)) ranked.push(t);
  ranked.sort((a, b) => counts[b] - counts[a] || a - b);

  const keep = new Uint8Array(V);
  for (const f of forced) keep[f] = 1;
  let size = forced.size;
  for (let k = 0; k < ranked.length && size < Vd; k++, size++) keep[ranked[k]] = 1;
  for (let t = 0; t < V && size < Vd; t++) {
    if (!keep[t]) {
      keep[t] = 1;
      size++;
    }
  }

  const used = new Int32Array(Vd);
  let covered = 0;
  for (let t = 0, i = 0; t < V; t++) {
    if (keep[t]) {
      used[i++] = t;
      covered += counts[t];
    }
  }
  const masked = counter.maskedTokens;
  return makeVocab(used, V, masked === 0 ? 0 : covered / masked, masked);
}

function makeVocab(used: Int32Array, vocabSize: number, coverage: number, maskedTokens: number): DraftVocab {
  const d2t = new BigInt64Array(used.length);
  const t2d = new Uint8Array(vocabSize);
  for (let i = 0; i < used.length; i++) {
    d2t[i] = BigInt(used[i] - i);
    t2d[used[i]] = 1;
  }
  return { used, d2t, t2d, coverage, maskedTokens, vocabSize };
}

/** Target id of draft id `draftId`. */
export function draftToTarget(v: DraftVocab, draftId: number): number {
  if (!Number.isInteger(draftId) || draftId < 0 || draftId >= v.used.length) {
    throw new DraftVocabError(`draft id ${draftId} is outside the draft vocabulary [0, ${v.used.length})`);
  }
  return draftId + Number(v.d2t[draftId]);
}

/** target id -> draft id, -1 where the target id is not in the draft vocabulary. */
export function targetToDraft(v: DraftVocab): Int32Array {
  const out = new Int32Array(v.vocabSize).fill(-1);
  for (let i = 0; i < v.used.length; i++) out[v.used[i]] = i;
  return out;
}

/** Checks that a vocab's arrays agree; returns a reason or null. */
function inconsistency(v: DraftVocab): string | null {
  const V = v.vocabSize;
  const Vd = v.used.length;
  if (v.t2d.length !== V) return `t2d has ${v.t2d.length} entries, vocab size is ${V}`;
  if (v.d2t.length !== Vd) return `d2t has ${v.d2t.length} entries, used has ${Vd}`;
  if (Vd < 1 || Vd > V) return `draft vocab size ${Vd} is not in [1, ${V}]`;
  for (let i = 0; i < Vd; i++) {
    const t = i + Number(v.d2t[i]);
    if (t !== v.used[i]) return `d2t[${i}] = ${v.d2t[i]} maps to ${t}, used[${i}] is ${v.used[i]}`;
    if (!Number.isInteger(t) || t < 0 || t >= V) return `d2t[${i}] = ${v.d2t[i]} maps draft id ${i} to target id ${t}, outside [0, ${V})`;
    if (i > 0 && t <= v.used[i - 1])
      return `d2t maps draft ids ${i - 1} and ${i} to target ids ${v.used[i - 1]} and ${t}, not strictly ascending`;
    if (v.t2d[t] !== 1) return `d2t maps draft id ${i} to target id ${t}, but t2d[${t}] is ${v.t2d[t]}`;
  }
  let ones = 0;
  for (let t = 0; t < V; t++) {
    const b = v.t2d[t];
    if (b !== 0 && b !== 1) return `t2d[${t}] is ${b}, not 0 or 1`;
    ones += b;
  }
  if (ones !== Vd) return `t2d marks ${ones} target ids but d2t holds ${Vd}`;
  if (!(v.coverage >= 0 && v.coverage <= 1)) return `coverage ${v.coverage} is not in [0, 1]`;
  if (!Number.isInteger(v.maskedTokens) || v.maskedTokens < 0) return `masked token count ${v.maskedTokens} is not a non-negative integer`;
  return null;
}

/** Writes d2t (I64 [Vd]) and t2d (BOOL [V]) with metadata {coverage, masked_tokens, ...metadata}. */
export function saveDraftVocab(file: string, vocab: DraftVocab, metadata: Record<string, string> = {}): void {
  const bad = inconsistency(vocab);
  if (bad) throw new DraftVocabError(`${file}: refusing to write an inconsistent draft vocab: ${bad}`);
  writeSafetensors(
    file,
    {
      d2t: { dtype: 'I64', shape: [vocab.d2t.length], data: vocab.d2t },
      t2d: { dtype: 'BOOL', shape: [vocab.t2d.length], data: vocab.t2d },
    },
    { ...metadata, coverage: String(vocab.coverage), masked_tokens: String(vocab.maskedTokens) },
  );
}

/** Reads a draft vocab written by saveDraftVocab, checking shapes and that d2t and t2d agree. */
export function loadDraftVocab(file: string): DraftVocab {
  const fail = (msg: string): never => {
    throw new DraftVocabError(`${file}: not a valid draft vocab: ${msg}`);
  };
  const f = new SafetensorsFile(file); // its own errors name the file
  for (const [name, dtype] of [
    ['d2t', 'I64'],
    ['t2d', 'BOOL'],
  ] as const) {
    if (!f.has(name)) fail(`no tensor '${name}'`);
    const info = f.info(name);
    if (info.dtype !== dtype || info.shape.length !== 1) fail(`tensor '${name}' is ${info.dtype} [${info.shape}], expected ${dtype} [n]`);
  }
  const d2t = f.read('d2t').data as BigInt64Array;
  const t2d = f.read('t2d').data as Uint8Array;
  const coverage = Number(f.metadata.coverage);
  const maskedTokens = Number(f.metadata.masked_tokens);
  if (f.metadata.coverage === undefined || !Number.isFinite(coverage))
    fail(`metadata coverage ${JSON.stringify(f.metadata.coverage)} is not a number`);
  if (f.metadata.masked_tokens === undefined || !Number.isFinite(maskedTokens))
    fail(`metadata masked_tokens ${JSON.stringify(f.metadata.masked_tokens)} is not a number`);
  const used = new Int32Array(d2t.length);
  for (let i = 0; i < d2t.length; i++) {
    const t = i + Number(d2t[i]);
    if (!Number.isInteger(t) || t < 0 || t >= t2d.length)
      fail(`d2t[${i}] = ${d2t[i]} maps draft id ${i} to target id ${t}, outside [0, ${t2d.length})`);
    used[i] = t;
  }
  const v: DraftVocab = { used, d2t, t2d, coverage, maskedTokens, vocabSize: t2d.length };
  const bad = inconsistency(v);
  if (bad) fail(bad);
  return v;
}

function canonicalKey(keyParts: Record<string, string | number>): string {
  const entries = Object.keys(keyParts)
    .sort()
    .map((k) => {
      const v = keyParts[k];
      if (typeof v === 'number' ? !Number.isFinite(v) : typeof v !== 'string') {
        throw new DraftVocabError(`draft vocab cache key part '${k}' must be a string or a finite number, got ${String(v)}`);
      }
      return [k, v] as const;
    });
  return JSON.stringify(Object.fromEntries(entries));
}

/**
 * Returns the draft vocab cached under `cacheDir` for these key parts, or computes, writes (atomically)
 * and returns it. A cache file that exists but is invalid is an error naming the file, not a recompute.
 */
export async function cachedDraftVocab(
  cacheDir: string,
  keyParts: Record<string, string | number>,
  compute: () => Promise<DraftVocab>,
): Promise<{ vocab: DraftVocab; cached: boolean; file: string }> {
  const keyJson = canonicalKey(keyParts);
  const key = createHash('sha256').update(keyJson).digest('hex');
  const file = path.join(cacheDir, `draft-vocab-${key.slice(0, 16)}.safetensors`);
  if (fs.existsSync(file)) {
    const vocab = loadDraftVocab(file);
    const stored = new SafetensorsFile(file).metadata.key_parts;
    if (stored !== keyJson) {
      throw new DraftVocabError(`${file}: cached draft vocab was built for key parts ${stored ?? '(none recorded)'}, not ${keyJson}`);
    }
    return { vocab, cached: true, file };
  }
  const vocab = await compute();
  saveDraftVocab(file, vocab, { key_parts: keyJson, key_sha256: key });
  return { vocab, cached: false, file };
}
