// Speculative decoding (src/decode/speculative.ts) on a small random-weight target:
//   - lossless greedy: chain (k = 1, 3, 5) and dynamic-tree outputs equal plain greedy `generate`, with a
//     random EAGLE-3 draft (mostly rejected) and with a scripted drafter that is often right;
//   - tau and per-position bookkeeping on a scripted drafter whose acceptances are planned;
//   - the EAGLE-3 drafter's incremental context and tree expansion equal a fresh computation;
//   - speculative sampling (chain and tree) reproduces the target's distribution (chi-square, below);
//   - no tensor leaks: the live tensor count is flat across verify passes and back to its start after.
import assert from 'node:assert/strict';
import { before, describe, test } from 'node:test';
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../src/backend/backend.ts';
import type { DraftLogits, Drafter } from '../src/decode/drafter.ts';
import { type SpecOptions, speculativeDecode } from '../src/decode/speculative.ts';
import { Eagle3Drafter } from '../src/decode/tfjs-drafter.ts';
import { parseTreeShape } from '../src/decode/tree.ts';
import { draftConfigFor } from '../src/draft/config.ts';
import { Eagle3Draft } from '../src/draft/eagle3.ts';
import { type ModelConfig, parseModelConfig } from '../src/io/hf-config.ts';
import { generate } from '../src/target/generate.ts';
import type { KVCache, TargetInput, TargetModel, TargetOutput } from '../src/target/runtime.ts';
import { TfjsTarget } from '../src/target/tfjs-target.ts';
import { Rng } from '../src/util/random.ts';
import { pickToken, tokenDistribution } from '../src/util/sampling.ts';
import { mapSource, maxAbsDiff, randomWeights } from './helpers.ts';

const V = 40;
const config = parseModelConfig({
  architectures: ['Qwen3ForCausalLM'],
  hidden_size: 32,
  intermediate_size: 48,
  num_hidden_layers: 3,
  num_attention_heads: 4,
  num_key_value_heads: 2,
  head_dim: 8,
  vocab_size: V,
});
const AUX = [0, 1, 2];
// Draft vocabulary: 30 of the 40 ids (the draft can never propose the others).
const USED = Int32Array.from({ length: V }, (_, i) => i).filter((i) => i % 4 !== 0);
const PROMPTS = [
  [1, 2, 3, 4, 5, 6, 7],
  [8, 9],
  [10, 11, 12, 13, 14],
  [30, 2, 30, 2],
];
let target: TfjsTarget;
let draft: Eagle3Draft;

before(async () => {
  await initBackend('wasm');
  target = TfjsTarget.fromWeights(config, mapSource(randomWeights(config, 21)));
  draft = Eagle3Draft.init(draftConfigFor(config, AUX, USED.length), 5);
});

const greedy = (prompt: number[], maxNewTokens: number, stopIds: number[] = []) => generate(target, [prompt], { maxNewTokens, stopIds })[0];

/**
 * A drafter that knows the target's greedy continuation (`oracle` = prompt + continuation) and, in verify
 * pass j, proposes exactly plan[j] right tokens before a wrong one. With `rank2`, the right token is only
 * the second most likely child (a decoy is first), so a tree's accepted path is not its first branch.
 */
class ScriptedDrafter implements Drafter {
  readonly featureLayers: number[] = [];
  private committed = 0;
  private pass = -1;
  constructor(
    private readonly oracle: number[],
    private readonly plan: number[],
    private readonly rank2 = false,
  ) {}
  reset() {
    this.committed = 0;
    this.pass = -1;
  }
  extend(nextIds: number[]) {
    const start = this.committed === 0 ? 1 : this.committed; // the prompt's first token is not among nextIds
    nextIds.forEach((t, i) => assert.equal(t, this.oracle[start + i], 'committed tokens follow the greedy continuation'));
    this.committed = start + nextIds.length;
    this.pass++;
  }
  expand(paths: number[][]): DraftLogits[] {
    return paths.map((path) => {
      const logits = new Float32Array(V);
      const onOracle = path.every((t, i) => t === this.oracle[this.committed + i]);
      const right = this.oracle[this.committed + path.length];
      if (!onOracle) logits[(path[path.length - 1] + 3) % V] = 1;
      else if (path.length < (this.plan[this.pass] ?? Infinity)) {
        logits[right] = this.rank2 ? 2 : 3;
        logits[(right + 1) % V] = 2.5;
      } else {
        logits[right] = -10;
        logits[(right + 1) % V] = 2.5;
        logits[(right + 2) % V] = 2;
      }
      return { vocab: Int32Array.from({ length: V }, (_, i) => i), logits };
    });
  }
  dispose() {}
}

/**
 * Wraps a drafter and records, after each extend, the committed tokens, the root logits and the live tensor
 * count. With a `proposer`, the draft tokens come from it instead (the inner drafter still gets the context).
 */
class Recorder implements Drafter {
  readonly records: { committed: number[]; root: Float32Array; tensors: number }[] = [];
  private seq: number[] = [];
  constructor(
    private readonly inner: Drafter,
    private readonly prompt: number[],
    private readonly proposer?: Drafter,
  ) {}
  get featureLayers() {
    return this.inner.featureLayers;
  }
  reset() {
    this.inner.reset();
    this.proposer?.reset();
    this.seq = [this.prompt[0]];
  }
  extend(nextIds: number[], features: tf.Tensor3D | null) {
    this.inner.extend(nextIds, features);
    this.proposer?.extend(nextIds, null);
    this.seq.push(...nextIds);
    this.records.push({
      committed: [...this.seq],
      root: Float32Array.from(this.inner.expand([[]])[0].logits),
      tensors: tf.memory().numTensors,
    });
  }
  expand(paths: number[][]) {
    return (this.proposer ?? this.inner).expand(paths);
  }
  dispose() {
    this.inner.dispose();
  }
}

describe('lossless greedy speculative decoding', () => {
  test('chain k = 1, 3, 5 and dynamic trees with a random EAGLE-3 draft equal plain greedy generation', () => {
    const drafter = new Eagle3Drafter(draft, target.embeddings(), USED);
    // A stop token that occurs mid-way in the first prompt's output, so one run ends on it.
    const free = greedy(PROMPTS[0], 14);
    const stopIds = [free[5]];
    let passes = 0;
    for (const prompt of PROMPTS) {
      const expected = greedy(prompt, 14, stopIds);
      for (const opts of [
        { draftSteps: 1 },
        { draftSteps: 3 },
        { draftSteps: 5 },
        { tree: parseTreeShape('3,3,8') },
        { tree: parseTreeShape('2,4,6') },
      ]) {
        const r = speculativeDecode(target, drafter, prompt, { maxNewTokens: 14, stopIds, ...opts });
        assert.deepEqual(r.tokens, expected, `prompt [${prompt}] with ${JSON.stringify(opts)}`);
        assert.equal(r.finish, expected.length < 14 ? 'stop' : 'length');
        assert.equal(r.verifyTokens, r.tokens.length - 1);
        assert.equal(r.acceptLengths.length, r.verifyPasses);
        passes += r.verifyPasses;
      }
    }
    assert.ok(passes > 0);
    drafter.dispose();
  });

  test('a scripted drafter that is often right: chain and tree outputs still equal greedy, acceptances as planned', () => {
    const plan = [2, 0, 3, 1, 3, 3, 0, 2, 1, 3, 3, 3, 3];
    for (const prompt of PROMPTS.slice(0, 2)) {
      const oracle = [...prompt, ...greedy(prompt, 40)];
      const expected = greedy(prompt, 20);
      const chain = speculativeDecode(target, new ScriptedDrafter(oracle, plan), prompt, { maxNewTokens: 20, stopIds: [], draftSteps: 3 });
      assert.deepEqual(chain.tokens, expected);
      assert.deepEqual(chain.acceptLengths, plan.slice(0, chain.verifyPasses));
      // Tree: top-2 children, 3 levels, all 10 candidates kept; the right child is the second of two.
      const tree = speculativeDecode(target, new ScriptedDrafter(oracle, plan, true), prompt, {
        maxNewTokens: 20,
        stopIds: [],
        tree: { topk: 2, depth: 3, tokens: 10 },
      });
      assert.deepEqual(tree.tokens, expected);
      assert.deepEqual(tree.acceptLengths, plan.slice(0, tree.verifyPasses));
      // A tree too small to hold the right path at depth 3 (4 nodes: the 2 roots' children and 2 more).
      const small = speculativeDecode(target, new ScriptedDrafter(oracle, plan, true), prompt, {
        maxNewTokens: 20,
        stopIds: [],
        tree: { topk: 2, depth: 3, tokens: 4 },
      });
      assert.deepEqual(small.tokens, expected);
    }
  });
});

describe('bookkeeping', () => {
  test('tau, accept lengths and per-position acceptance on planned acceptances', () => {
    const prompt = PROMPTS[0];
    const oracle = [...prompt, ...greedy(prompt, 40)];
    const plan = [2, 0, 3, 1];
    const run = (maxNewTokens: number) =>
      speculativeDecode(target, new ScriptedDrafter(oracle, plan), prompt, { maxNewTokens, stopIds: [], draftSteps: 3 });
    // Output: 1 token from prefill, then passes of 3, 1, 4, 2 tokens (accepted + the target's bonus).
    const full = run(11);
    assert.deepEqual(full.tokens, oracle.slice(prompt.length, prompt.length + 11));
    assert.equal(full.verifyPasses, 4);
    assert.equal(full.verifyTokens, 10);
    assert.equal(full.tau, 10 / 4);
    assert.deepEqual(full.acceptLengths, [2, 0, 3, 1]);
    assert.deepEqual(full.drafted, [4, 4, 4]);
    assert.deepEqual(full.accepted, [3, 2, 1]); // position 1 accepted in passes 1, 3, 4; position 2 in 1, 3; position 3 in 3
    assert.equal(full.finish, 'length');
    // Cut by max_new_tokens inside the third pass: it accepted 3 (+ bonus) but only 2 of its tokens are kept.
    const cut = run(7);
    assert.equal(cut.tokens.length, 7);
    assert.equal(cut.verifyPasses, 3);
    assert.equal(cut.tau, 6 / 3);
    assert.deepEqual(cut.acceptLengths, [2, 0, 3]);
    assert.deepEqual(cut.accepted, [2, 2, 1]);
    // max_new_tokens 1: the prefill's token only, no verify pass, tau undefined.
    const one = run(1);
    assert.equal(one.tokens.length, 1);
    assert.equal(one.verifyPasses, 0);
    assert.equal(one.tau, null);
    // A stop token ends the output where it first occurs (kept), even inside a pass's accepted drafts.
    const cont = oracle.slice(prompt.length);
    const at = cont.findIndex((t, i) => i >= 2 && cont.indexOf(t) === i);
    const stopped = speculativeDecode(target, new ScriptedDrafter(oracle, plan), prompt, {
      maxNewTokens: 30,
      stopIds: [cont[at]],
      draftSteps: 3,
    });
    assert.deepEqual(stopped.tokens, cont.slice(0, at + 1));
    assert.equal(stopped.finish, 'stop');
    // Passes needed: outputs after each pass are 1 + 3, + 1, + 4, + 2 = 4, 5, 9, 11 tokens.
    assert.equal(stopped.verifyPasses, [4, 5, 9, 11].findIndex((n) => n >= at + 1) + 1);
  });

  test('parseTreeShape and tokenDistribution (the distribution pickToken samples from)', () => {
    assert.deepEqual(parseTreeShape('8, 5,48'), { topk: 8, depth: 5, tokens: 48 });
    assert.throws(() => parseTreeShape('8,5'), /topk,depth,tokens/);
    assert.throws(() => parseTreeShape('8,0,4'), /positive integers/);
    const logits = Float32Array.from([Math.log(0.5), Math.log(0.3), Math.log(0.15), Math.log(0.05)]);
    const p = tokenDistribution(logits, 1, 0.7);
    assert.ok(maxAbsDiff(p, [0.5 / 0.8, 0.3 / 0.8, 0, 0]) < 1e-6);
    const rng = new Rng(1);
    for (let i = 0; i < 500; i++) assert.ok(p[pickToken(logits, 1, 0.7, rng)] > 0, 'pickToken samples within the same top-p set');
    const hot = tokenDistribution(logits, 0.5);
    assert.ok(
      maxAbsDiff(
        hot,
        [0.25, 0.09, 0.0225, 0.0025].map((x) => x / 0.365),
      ) < 1e-6,
    );
  });
});

describe('EAGLE-3 drafter', () => {
  test('incremental context after verify passes and tree expansions equal a fresh computation', () => {
    // Tree tokens from the scripted drafter (long accepted paths through second-ranked children), so the
    // EAGLE-3 drafter's context grows by several tree rows per pass.
    const prompt = PROMPTS[2];
    const oracle = [...prompt, ...greedy(prompt, 40)];
    const rec = new Recorder(
      new Eagle3Drafter(draft, target.embeddings(), USED),
      prompt,
      new ScriptedDrafter(oracle, [2, 3, 0, 3, 1], true),
    );
    const r = speculativeDecode(target, rec, prompt, { maxNewTokens: 16, stopIds: [], tree: { topk: 2, depth: 3, tokens: 10 } });
    assert.deepEqual(r.acceptLengths.slice(0, 5), [2, 3, 0, 3, 1]);
    assert.ok(rec.records.length >= 5);
    for (const j of [1, 2, 4]) {
      const { committed, root } = rec.records[j];
      // Fresh: the target over all committed tokens but the last, the drafter's context in one call.
      const out = target.forward({ ids: [committed.slice(0, -1)] }, { layers: AUX, logits: false });
      const features = tf.concat(
        AUX.map((l) => out.layers.get(l)!),
        -1,
      ) as tf.Tensor3D;
      const fresh = new Eagle3Drafter(draft, target.embeddings(), USED);
      fresh.extend(committed.slice(1), features);
      const d = maxAbsDiff(fresh.expand([[]])[0].logits, root);
      assert.ok(d < 1e-4, `root logits after extend ${j}: max diff ${d}`);
      // A tree level expanded in one batch (siblings masked from each other) = each path expanded alone.
      const [a, b] = [USED[3], USED[17]];
      fresh.expand([[a], [b]]);
      const tree = fresh
        .expand([
          [a, USED[5]],
          [b, USED[6]],
          [b, USED[7]],
        ])
        .map((x) => Float32Array.from(x.logits));
      const chain = new Eagle3Drafter(draft, target.embeddings(), USED);
      chain.extend(committed.slice(1), features);
      chain.expand([[b]]);
      const alone = chain.expand([[b, USED[7]]])[0].logits;
      assert.ok(maxAbsDiff(tree[2], alone) < 1e-4, 'tree node vs chain');
      assert.ok(maxAbsDiff(tree[1], alone) > 1e-3, 'different tokens give different logits');
      tf.dispose([out.finalNormed, ...out.layers.values(), features]);
      fresh.dispose();
      chain.dispose();
    }
  });

  test('no tensor leaks: the live count is flat across verify passes and restored after decoding', () => {
    for (const opts of [
      { draftSteps: 4 },
      { tree: { topk: 3, depth: 3, tokens: 8 } },
      { draftSteps: 3, temperature: 1, rng: new Rng(2) },
      { tree: { topk: 2, depth: 3, tokens: 5 }, temperature: 0.9, topP: 0.9, rng: new Rng(3) },
    ]) {
      const prompt = PROMPTS[1];
      const rec = new Recorder(new Eagle3Drafter(draft, target.embeddings(), USED), prompt);
      const before = tf.memory().numTensors;
      const r = speculativeDecode(target, rec, prompt, { maxNewTokens: 16, stopIds: [], ...opts } as SpecOptions);
      assert.equal(tf.memory().numTensors, before, `${JSON.stringify(opts)}: tensors after decoding`);
      const counts = rec.records.map((x) => x.tensors);
      assert.ok(counts.length >= 4 && r.verifyPasses >= 3);
      assert.ok(
        counts.every((c) => c === counts[0]),
        `${JSON.stringify(opts)}: live tensors per pass ${counts}`,
      );
    }
  });
});

// ------------------------------------------------------------------------------------------------------
// Sampling. The statistics need thousands of decodes, so the target here is a bigram model behind the
// TargetModel interface (logits of the next token = a row per current token): its joint distribution of
// the first generated tokens is exact and cheap. The drafter proposes from another bigram table.

const SV = 5;
const bigram = (seed: number, scale: number) => new Rng(seed).normalArray(SV * SV, scale);

class BigramTarget implements TargetModel {
  readonly config = { vocabSize: SV } as ModelConfig;
  forwards = 0;
  constructor(readonly table: Float32Array) {}
  forward(input: TargetInput, opts: { cache?: KVCache } = {}): TargetOutput {
    const ids = input.ids[0];
    const data = new Float32Array(ids.length * SV);
    ids.forEach((t, i) => data.set(this.table.subarray(t * SV, (t + 1) * SV), i * SV));
    (opts.cache as BigramCache | undefined)?.add(ids.length);
    this.forwards++;
    return { logits: tf.tensor3d(data, [1, ids.length, SV]), finalNormed: tf.zeros([1, ids.length, 1]), layers: new Map() };
  }
  newCache(): KVCache {
    return new BigramCache();
  }
  lmHead(): tf.Tensor {
    throw new Error('unused');
  }
  embeddings(): tf.Tensor2D {
    throw new Error('unused');
  }
  dispose() {}
}

class BigramCache implements KVCache {
  readonly batch = 1;
  length = 0;
  add(n: number) {
    this.length += n;
  }
  select(slots: number[]) {
    this.length = slots.length;
  }
  truncate(n: number) {
    this.length = Math.min(n, this.length);
  }
  dispose() {}
}

class BigramDrafter implements Drafter {
  readonly featureLayers: number[] = [];
  private last = -1;
  constructor(private readonly table: Float32Array) {}
  reset() {}
  extend(nextIds: number[]) {
    this.last = nextIds[nextIds.length - 1];
  }
  expand(paths: number[][]): DraftLogits[] {
    return paths.map((p) => {
      const t = p.length ? p[p.length - 1] : this.last;
      return { vocab: [0, 1, 2, 3, 4], logits: this.table.slice(t * SV, (t + 1) * SV) };
    });
  }
  dispose() {}
}

/** Chi-square critical value at p = 0.001 (Wilson-Hilferty; within 1% of the table for df >= 10). */
const chi2Critical = (df: number) => df * (1 - 2 / (9 * df) + 3.09 * Math.sqrt(2 / (9 * df))) ** 3;

/** Pearson's statistic over cells with expected count >= 5 (the rest pooled into one cell). */
function chiSquare(counts: number[], probs: number[], n: number): { stat: number; df: number } {
  let stat = 0;
  let cells = 0;
  let poolE = 0;
  let poolO = 0;
  probs.forEach((p, i) => {
    const e = p * n;
    if (e >= 5) {
      stat += (counts[i] - e) ** 2 / e;
      cells++;
    } else {
      poolE += e;
      poolO += counts[i];
    }
  });
  if (poolE > 0) {
    stat += (poolO - poolE) ** 2 / poolE;
    cells++;
  }
  return { stat, df: cells - 1 };
}

describe('speculative sampling', () => {
  // The first three generated tokens (y1 from prefill, y2 and y3 from verify passes: accepted drafts,
  // residual resamples and bonus tokens all occur) have the joint distribution of target sampling:
  // 125 cells, N = 6000 decodes each, Pearson's chi-square against the exact joint at p = 0.001 (about
  // 159 for the ~110 cells with expected count >= 5). Seeded, so the outcome is fixed; the bound has power:
  // accepting every draft (y2, y3 from the draft's table) would score several times the critical value.
  const P = bigram(11, 1.2);
  const Q = bigram(12, 1.2);
  for (let i = 0; i < SV * SV; i++) Q[i] = 0.5 * Q[i] + 0.8 * P[i]; // related, not equal: acceptance is mixed
  const prompt = [3, 1];
  const N = 6000;

  function exactJoint(first: Float32Array, rest: Float32Array, temperature: number, topP: number): number[] {
    // An independent reference: softmax(row / T), cut to the smallest top set reaching topP, renormalised.
    const dist = (t: number, table = rest) => {
      const row = Array.from(table.subarray(t * SV, (t + 1) * SV), (x) => x / temperature);
      const m = Math.max(...row);
      const e = row.map((x) => Math.exp(x - m));
      const s = e.reduce((a, b) => a + b, 0);
      const order = e.map((_, i) => i).sort((a, b) => e[b] - e[a] || a - b);
      const keep = new Set<number>();
      let acc = 0;
      for (const i of order) {
        keep.add(i);
        acc += e[i] / s;
        if (acc >= topP) break;
      }
      const ks = [...keep].reduce((a, i) => a + e[i], 0);
      return e.map((x, i) => (keep.has(i) ? x / ks : 0));
    };
    const joint: number[] = [];
    const p1 = dist(prompt[prompt.length - 1], first);
    for (let a = 0; a < SV; a++) for (let b = 0; b < SV; b++) for (let c = 0; c < SV; c++) joint.push(p1[a] * dist(a)[b] * dist(b)[c]);
    return joint;
  }

  for (const [name, opts] of [
    ['chain k = 2, temperature 1', { draftSteps: 2, temperature: 1, topP: 1 }],
    ['chain k = 3, temperature 0.8, top-p 0.9', { draftSteps: 3, temperature: 0.8, topP: 0.9 }],
    ['tree 2,2,4, temperature 1', { tree: { topk: 2, depth: 2, tokens: 4 }, temperature: 1, topP: 1 }],
    ['tree 3,2,6, temperature 0.8, top-p 0.9', { tree: { topk: 3, depth: 2, tokens: 6 }, temperature: 0.8, topP: 0.9 }],
  ] as const) {
    test(`${name}: the first three tokens follow the target's joint distribution`, () => {
      const target = new BigramTarget(P);
      const drafter = new BigramDrafter(Q);
      const rng = new Rng(99);
      const counts = new Array(SV ** 3).fill(0);
      let passes = 0;
      let none = 0;
      for (let i = 0; i < N; i++) {
        const r = speculativeDecode(target, drafter, prompt, { maxNewTokens: 3, stopIds: [], ...opts, rng });
        counts[r.tokens[0] * 25 + r.tokens[1] * 5 + r.tokens[2]]++;
        passes += r.verifyPasses;
        none += r.acceptLengths.filter((a) => a === 0).length;
      }
      const expected = exactJoint(P, P, opts.temperature, opts.topP);
      const { stat, df } = chiSquare(counts, expected, N);
      assert.ok(stat < chi2Critical(df), `chi-square ${stat.toFixed(1)} with ${df} df (critical ${chi2Critical(df).toFixed(1)})`);
      // Both paths taken often: passes that accept nothing, and passes that accept drafts.
      assert.ok(none > 0.03 * passes && none < 0.9 * passes, `${none} of ${passes} passes accepted nothing`);
      // Power: accepting every draft (y1 from the target, y2 and y3 from the draft) is far outside the bound.
      const wrong = exactJoint(P, Q, opts.temperature, opts.topP);
      const power = expected.reduce((s, p, i) => (p * N >= 5 ? s + (N * (wrong[i] - p) ** 2) / p : s), 0);
      assert.ok(power > 5 * chi2Critical(df), `the draft's joint would score ${power.toFixed(0)}`);
    });
  }
});

describe('SpecExit early exit', () => {
  /** Always proposes the target's own greedy continuation (recomputed from the committed context). */
  class OracleDrafter implements Drafter {
    readonly featureLayers: number[] = [0];
    private context: number[] = [];
    constructor(private readonly prompt: number[]) {}
    reset() {
      this.context = [];
    }
    extend(nextIds: number[]) {
      if (!this.context.length) this.context = [this.prompt[0]];
      this.context.push(...nextIds);
    }
    expand(paths: number[][]): DraftLogits[] {
      return paths.map((path) => {
        const next = greedy([...this.context, ...path], 1)[0];
        const logits = new Float32Array(V);
        logits[next] = 5;
        return { vocab: Int32Array.from({ length: V }, (_, i) => i), logits };
      });
    }
    dispose() {}
  }

  test('exits at the first accepted step split while thinking: cut after the split, </think> emitted, then the target continues', async () => {
    const { ExitPolicy, REFERENCE_EXIT } = await import('../src/specexit/policy.ts');
    const prompt = PROMPTS[0];
    const plain = greedy(prompt, 24);
    const SPLIT = plain[4]; // a token the target writes early on: our stand-in for "\n\n"
    const END = 39;
    const THINK = prompt[2]; // the prompt "opens thinking"
    const policy = new ExitPolicy({ ...REFERENCE_EXIT, splitIds: [SPLIT], thinkId: THINK, endThinkId: END, replaceIds: [END] });
    const good = { confidence: 0.99, progress: 0.9, remaining: 10 };
    const r = speculativeDecode(target, new OracleDrafter(prompt), prompt, {
      maxNewTokens: 24,
      stopIds: [],
      draftSteps: 6,
      exit: { policy, signals: (f) => Array.from({ length: f.shape[1] }, () => good) },
    });
    assert.equal(r.exits, 1);
    const cut = r.tokens.indexOf(END);
    assert.ok(cut > 0, 'a </think> was emitted');
    assert.equal(r.tokens[cut - 1], SPLIT, 'right after a step split');
    assert.deepEqual(r.tokens.slice(0, cut), plain.slice(0, cut), 'the thinking kept is the target’s own');
    const after = greedy([...prompt, ...r.tokens.slice(0, cut + 1)], r.tokens.length - cut - 1);
    assert.deepEqual(r.tokens.slice(cut + 1), after, 'after the exit the target writes on, losslessly');
    assert.ok(!policy.isThinking);
  });
  test("close 'replace-split': the split gives way to a newline and </think> (its own pass), then the target continues", async () => {
    const { ExitPolicy, REFERENCE_EXIT } = await import('../src/specexit/policy.ts');
    const prompt = PROMPTS[0];
    const plain = greedy(prompt, 24);
    const SPLIT = plain[4];
    const NL = 38;
    const END = 39;
    const THINK = prompt[2];
    const rule = { ...REFERENCE_EXIT, close: 'replace-split' as const };
    const policy = new ExitPolicy({ ...rule, splitIds: [SPLIT], thinkId: THINK, endThinkId: END, replaceIds: [NL, END] });
    const good = { confidence: 0.99, progress: 0.9, remaining: 10 };
    const r = speculativeDecode(target, new OracleDrafter(prompt), prompt, {
      maxNewTokens: 24,
      stopIds: [],
      draftSteps: 6,
      exit: { policy, signals: (f) => Array.from({ length: f.shape[1] }, () => good) },
    });
    assert.equal(r.exits, 1);
    const cut = r.tokens.indexOf(NL);
    assert.ok(cut > 0 && r.tokens[cut + 1] === END, 'a newline, then </think>');
    assert.deepEqual(r.tokens.slice(0, cut), plain.slice(0, cut), 'the thinking kept is the target’s own');
    assert.equal(plain[cut], SPLIT, 'cut right before the step split');
    // The first token comes from prefill; pass j adds its accepted drafts and one token of its own.
    let emitted = 1;
    const pass = r.acceptLengths.findIndex((a) => (emitted += a + 1) > cut + 1);
    assert.equal(emitted, cut + 2, '</think> ends a pass');
    assert.equal(r.acceptLengths[pass], 0, '... that accepted no draft token');
    const after = greedy([...prompt, ...r.tokens.slice(0, cut + 2)], r.tokens.length - cut - 2);
    assert.deepEqual(r.tokens.slice(cut + 2), after, 'after the exit the target writes on, losslessly');
  });
});
