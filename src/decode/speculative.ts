// EAGLE-3 speculative decoding of one prompt with the target in the loop (batch 1, as serving benchmarks
// report it): the decode loop. Draft trees are tree.ts, the acceptance rules verify.ts, the drafters
// drafter.ts (interface), tfjs-drafter.ts and onnx-drafter.ts, SpecExit's per-pass step
// specexit/decode-step.ts, token sampling util/sampling.ts.
//
// Sequence bookkeeping. Let x[0..N) be the committed tokens (prompt, then output). The target's KV cache
// holds x[0..N-1); the last committed token x[N-1] ("pending") enters the cache with the next verify pass.
// The drafter's context covers positions 0..N-2: position p has the target's features at p and the token
// x[p+1] after it (EAGLE-3's alignment), and its output at N-2 predicts x[N], the first draft token.
//
//   prefill   target forward over the prompt (cache, the drafter's feature layers); x[n] = the target's own
//             token (greedy or sampled); drafter context over positions 0..n-1 with ids x[1..n].
//   draft     a chain of k tokens or an EAGLE-2 dynamic tree (tree.ts).
//   verify    one target forward over [x[N-1], drafts...] with the cache (tree: treeMask = ancestors, and
//             positionIds = N-1 + depth). The accepted path is followed from the root while the target
//             agrees (verify.ts); the target's own token at the first disagreement (or after the last node)
//             is the bonus. The target cache keeps the accepted slots (truncate for a chain, select for a
//             tree); the drafter drops its draft entries and gets context entries for the newly committed
//             positions from the features the verify pass produced at those rows.
//
// Bookkeeping (SpecResult): the first token comes from prefill and counts in no verify pass. Each verify
// pass adds its accepted drafts plus one target token, cut at a stop token or at maxNewTokens.
// tau = verifyTokens / verifyPasses, where verifyTokens = tokens of the output that verify passes added
// (= tokens.length - 1): the mean number of output tokens per target verify forward. acceptLengths[j] is
// the number of draft tokens the target accepted in pass j, before any cut. Per draft position i (depth
// i+1): drafted[i] = passes that proposed a token there, accepted[i] = passes whose accepted path reached it.
import * as tf from '@tensorflow/tfjs';
import { type ExitQueue, type SpecExit, specExitStep } from '../specexit/decode-step.ts';
import type { TargetModel, TargetOutput } from '../target/runtime.ts';
import type { Rng } from '../util/random.ts';
import { argmax, type Sampling, sampleIndex, tokenDistribution } from '../util/sampling.ts';
import type { Drafter } from './drafter.ts';
import { chainTree, dynamicTree, type TreeShape, treeMask } from './tree.ts';
import { verifyDraft } from './verify.ts';

export interface SpecOptions {
  maxNewTokens: number;
  /** Token ids that end the output (end-of-turn, eos); the stop token is kept. */
  stopIds: number[];
  /** Chain length k (default 7); ignored when `tree` is given. */
  draftSteps?: number;
  tree?: TreeShape | null;
  /** 0 (default) is greedy. */
  temperature?: number;
  topP?: number;
  /** Needed when temperature > 0. */
  rng?: Rng;
  /**
   * SpecExit: after each verify pass, the signals of the accepted draft tokens (from the target features
   * at their positions) go to the exit policy; on an exit the accepted tokens are cut at the step split
   * and the thinking's close replaces the bonus token (specexit/decode-step.ts).
   */
  exit?: SpecExit;
}

export interface SpecResult {
  /** New tokens (stop token included when reached). */
  tokens: number[];
  finish: 'stop' | 'length';
  /** Target forwards after prefill (each verifies one chain or tree). */
  verifyPasses: number;
  /** Output tokens those passes added: tokens.length - 1 (the first token comes from prefill). */
  verifyTokens: number;
  /** verifyTokens / verifyPasses; null when no verify pass ran. */
  tau: number | null;
  /** Draft tokens accepted in each pass (before a stop or length cut). */
  acceptLengths: number[];
  /** Per draft position (depth 1, 2, ...): passes that drafted a token there. */
  drafted: number[];
  /** Per draft position: passes whose accepted path reached it. */
  accepted: number[];
  /** Early exits from thinking taken (SpecExit). */
  exits: number;
  /** Wall time of the whole decode, and its parts (target prefill, drafter calls, target verify passes). */
  seconds: number;
  prefillSeconds: number;
  draftSeconds: number;
  verifySeconds: number;
  /** Draft forwards (the drafter's expand calls: one per chain step or tree level) and their time. */
  draftSteps: number;
  draftStepSeconds: number;
}

function disposeOutput(o: TargetOutput): void {
  tf.dispose([o.finalNormed, ...(o.logits ? [o.logits] : []), ...o.layers.values()]);
}

/** The drafter's features [1, rows, F] from a target output (all rows when `rows` is null). */
function featuresOf(o: TargetOutput, layers: readonly number[], rows: number[] | null): tf.Tensor3D | null {
  if (!layers.length) return null;
  return tf.tidy(() => {
    const parts = layers.map((l) => o.layers.get(l)!);
    const all = parts.length === 1 ? tf.clone(parts[0]) : tf.concat(parts, -1);
    return (rows ? tf.gather(all, tf.tensor1d(rows, 'int32'), 1) : all) as tf.Tensor3D;
  });
}

/** Checks the options; returns the sampling settings (null: greedy), the tree shape (null: a chain) and chain length. */
function settingsOf(prompt: number[], opts: SpecOptions): { sampling: Sampling | null; tree: TreeShape | null; k: number } {
  const temperature = opts.temperature ?? 0;
  const topP = opts.topP ?? 1;
  const greedy = !(temperature > 0);
  const rng = opts.rng;
  if (!greedy && !rng) throw new Error('speculative sampling needs an rng');
  if (!prompt.length) throw new Error('speculative decoding: empty prompt');
  if (!(Number.isInteger(opts.maxNewTokens) && opts.maxNewTokens >= 1))
    throw new Error(`maxNewTokens is ${opts.maxNewTokens}; expected a positive integer`);
  const tree = opts.tree ?? null;
  const k = opts.draftSteps ?? 7;
  if (!tree && !(Number.isInteger(k) && k >= 1)) throw new Error(`draftSteps is ${k}; expected a positive integer`);
  if (tree)
    for (const [key, v] of Object.entries(tree))
      if (!(Number.isInteger(v) && v >= 1)) throw new Error(`tree ${key} is ${v}; expected a positive integer`);
  return { sampling: greedy ? null : { temperature, topP, rng: rng! }, tree, k };
}

/** Decodes one prompt speculatively; see the file comment for the algorithm and the bookkeeping. */
export function speculativeDecode(target: TargetModel, drafter: Drafter, prompt: number[], opts: SpecOptions): SpecResult {
  const t0 = performance.now();
  const { sampling, tree, k } = settingsOf(prompt, opts);
  const maxDepth = tree ? tree.depth : k;
  const V = target.config.vocabSize;
  const layers = [...drafter.featureLayers];
  const stop = new Set(opts.stopIds);

  const result: SpecResult = {
    tokens: [],
    finish: 'length',
    verifyPasses: 0,
    verifyTokens: 0,
    tau: null,
    acceptLengths: [],
    drafted: new Array(maxDepth).fill(0),
    accepted: new Array(maxDepth).fill(0),
    exits: 0,
    seconds: 0,
    prefillSeconds: 0,
    draftSeconds: 0,
    verifySeconds: 0,
    draftSteps: 0,
    draftStepSeconds: 0,
  };
  // Draft forwards counted and timed apart from the extends, for the draft-step latency eval reports.
  const timedDrafter: Drafter = {
    featureLayers: drafter.featureLayers,
    reset: () => drafter.reset(),
    extend: (ids, features) => drafter.extend(ids, features),
    expand: (paths) => {
      const t = performance.now();
      try {
        return drafter.expand(paths);
      } finally {
        result.draftSteps++;
        result.draftStepSeconds += (performance.now() - t) / 1000;
      }
    },
    dispose: () => drafter.dispose(),
  };
  /** Appends tokens to the output until a stop token or the length limit; true when decoding is over. */
  const emit = (tokens: number[]): boolean => {
    for (const t of tokens) {
      result.tokens.push(t);
      if (stop.has(t)) {
        result.finish = 'stop';
        return true;
      }
      if (result.tokens.length >= opts.maxNewTokens) return true;
    }
    return false;
  };

  const cache = target.newCache(1);
  const exitQueue: ExitQueue = [];
  drafter.reset();
  try {
    // Prefill.
    let t = performance.now();
    const n = prompt.length;
    const pre = target.forward({ ids: [prompt] }, { layers, cache });
    let first: number;
    let features: tf.Tensor3D | null = null;
    let over: boolean;
    try {
      const lastRow = tf.tidy(() => pre.logits!.slice([0, n - 1, 0], [1, 1, V]));
      const row = lastRow.dataSync() as Float32Array;
      lastRow.dispose();
      first = sampling ? sampleIndex(tokenDistribution(row, sampling.temperature, sampling.topP), sampling.rng) : argmax(row);
      over = emit([first]);
      if (!over) features = featuresOf(pre, layers, null);
    } finally {
      disposeOutput(pre);
    }
    result.prefillSeconds = (performance.now() - t) / 1000;
    if (over) return result;

    t = performance.now();
    try {
      opts.exit?.policy.observe([...prompt, first]);
      drafter.extend([...prompt.slice(1), first], features);
    } finally {
      features?.dispose();
    }
    result.draftSeconds += (performance.now() - t) / 1000;
    let pending = first;
    let committed = n + 1;

    for (;;) {
      // Draft.
      t = performance.now();
      const draft = tree ? dynamicTree(timedDrafter, tree) : chainTree(timedDrafter, k, sampling);
      result.draftSeconds += (performance.now() - t) / 1000;

      // Verify.
      t = performance.now();
      const base = committed - 1; // slots in the target cache
      const ids = [pending, ...draft.tokens];
      const positionIds = [base, ...draft.depths.map((d) => base + d)];
      const out = target.forward(
        { ids: [ids], positionIds: [positionIds], ...(draft.chain ? {} : { treeMask: treeMask(draft) }) },
        { layers, cache },
      );
      let newTokens: number[] = [];
      let nextFeatures: tf.Tensor3D | null = null;
      let done: boolean;
      try {
        const verdict = verifyDraft(draft, out.logits!, V, sampling);
        let { path, bonus } = verdict;
        if (opts.exit) {
          const accepted = path.map((i) => draft.tokens[i]);
          const step = specExitStep(opts.exit, exitQueue, accepted, bonus, () =>
            featuresOf(
              out,
              layers,
              verdict.path.map((i) => i + 1),
            ),
          );
          path = path.slice(0, step.keep);
          bonus = step.bonus;
          if (step.exited) result.exits++;
        }
        if (draft.chain) cache.truncate(base + 1 + path.length);
        else cache.select([...Array.from({ length: base + 1 }, (_, i) => i), ...path.map((i) => base + 1 + i)]);

        result.verifyPasses++;
        result.acceptLengths.push(path.length);
        for (const d of new Set(draft.depths)) result.drafted[d - 1]++;
        for (let d = 0; d < path.length; d++) result.accepted[d]++;
        newTokens = [...path.map((i) => draft.tokens[i]), bonus];
        done = emit(newTokens);
        if (!done) {
          nextFeatures = featuresOf(out, layers, [0, ...path.map((i) => i + 1)]);
          pending = bonus;
          committed += newTokens.length;
        }
      } finally {
        disposeOutput(out);
      }
      result.verifySeconds += (performance.now() - t) / 1000;
      if (done) break;

      t = performance.now();
      try {
        drafter.extend(newTokens, nextFeatures);
      } finally {
        nextFeatures?.dispose();
      }
      result.draftSeconds += (performance.now() - t) / 1000;
    }
    return result;
  } finally {
    cache.dispose();
    drafter.reset();
    result.verifyTokens = Math.max(0, result.tokens.length - 1);
    result.tau = result.verifyPasses ? result.verifyTokens / result.verifyPasses : null;
    result.seconds = (performance.now() - t0) / 1000;
  }
}
