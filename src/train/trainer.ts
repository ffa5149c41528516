// `specforge train`: one data-parallel rank of EAGLE-3 draft training (see src/cli/train.ts). Each rank
// reads its share of every epoch's seeded batch order from a FeatureSource (the Arrow store offline, the
// target itself online), runs the TTT loss, all-reduces the gradients and applies the same AdamW update,
// so replicas stay identical; rank 0 logs, evaluates and checkpoints.
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { type BackendName, initBackend } from '../backend/backend.ts';
import { type DatasetFormat, readConversations } from '../data/datasets.ts';
import { trainFiles } from '../data/train-files.ts';
import { storeVocabFile, trainingDraftVocab } from '../data/training-vocab.ts';
import { type DraftVocab, loadDraftVocab, saveDraftVocab, TokenCounter } from '../data/draft-vocab.ts';
import { tokenizeConversation, type TemplateName } from '../data/templates.ts';
import { draftConfigFor } from '../draft/config.ts';
import { Eagle3Draft } from '../draft/eagle3.ts';
import { loadModelConfig } from '../io/hf-config.ts';
import { loadTokenizer } from '../io/tokenizer.ts';
import type { RankContext } from '../parallel/launch.ts';
import { loadRecipe, type Recipe } from '../recipe/recipe.ts';
import type { FeatureSample, FeatureSource } from '../store/feature-source.ts';
import { ArrowStore } from '../store/reader.ts';
import { TfjsTarget } from '../target/tfjs-target.ts';
import { resolveAuxLayers, storeIdentity, storeMeta } from '../store/identity.ts';
import { listCheckpoints, loadCheckpoint, saveCheckpoint, type TrainerState } from './checkpoint.ts';
import { OnlineFeatures, type OnlineStoreOptions } from './online-source.ts';
import { AdamW, clipByGlobalNorm, learningRate } from './optimizer.ts';
import { TeacherHead } from './teacher-head.ts';
import { prepareTeacher, simulatedAcceptanceLength, stepAccuracies, tttForward } from './ttt.ts';
import { SignalMetrics, signalBatch, signalLosses, signalMaskCounts } from '../specexit/loss.ts';
import { planChunks } from './chunks.ts';

/**
 * SPECFORGE_INJECT_FAULT=<rank>:<step> makes that rank throw when it reaches that optimizer step: how the tests
 * check that one failing rank stops the whole run and leaves the last checkpoint usable.
 */
function injectedFault(): { rank: number; step: number } | null {
  const spec = process.env.SPECFORGE_INJECT_FAULT;
  if (!spec) return null;
  const m = /^(\d+):(\d+)$/.exec(spec);
  if (!m) throw new Error(`SPECFORGE_INJECT_FAULT: expected <rank>:<step>, got "${spec}"`);
  return { rank: Number(m[1]), step: Number(m[2]) };
}

export interface TrainJob {
  recipe: string;
  overrides: Record<string, unknown>;
  /** 'latest', a checkpoint folder, or null for a fresh run. */
  resume: string | null;
}

export interface TrainResult {
  runDir: string;
  steps: number;
  lastCheckpoint: string | null;
  eval: EvalMetrics | null;
  seconds: number;
  tokensPerSecond: number;
}

export interface EvalMetrics {
  loss: number[];
  acc: number[];
  tau: number;
  samples: number;
  /** With training.specexit: each signal's loss and the signal quality on held-out data. */
  specexit?: {
    loss: number[];
    confidence_auc: number | null;
    confidence_accuracy: number | null;
    progress_mae: number | null;
    remaining_mae_tokens: number | null;
  };
}

export function runDirOf(r: Recipe): string {
  return path.join(r.training.output_dir, r.training.run_id ?? path.basename(r.file).replace(/\.ya?ml$/, ''));
}

/** The recipe fields a resumed run must share with the run it continues. */
function recipeKey(r: Recipe): string {
  const {
    output_dir: _o,
    save_interval: _s,
    keep_last: _k,
    log_interval: _l,
    eval_interval: _e,
    eval_samples: _n,
    ...training
  } = r.training;
  return crypto
    .createHash('sha256')
    .update(JSON.stringify({ model: r.model, data: { ...r.data, store: null, cache_dir: null }, training, seed: r.runtime.seed }))
    .digest('hex')
    .slice(0, 16);
}

/** Right-pads samples into TTT inputs (padding: id 0, mask 0, zero features), to `padTo` when it is longer. */
function collateFeatures(samples: FeatureSample[], head: TeacherHead, auxWidth: number, hidden: number, padTo = 0) {
  const B = samples.length;
  const T = Math.max(padTo, ...samples.map((s) => s.inputIds.length));
  const aux = new Float32Array(B * T * auxWidth);
  const fin = new Float32Array(B * T * hidden);
  samples.forEach((s, b) => {
    aux.set(s.aux, b * T * auxWidth);
    fin.set(s.finalHidden, b * T * hidden);
  });
  const inputIds = samples.map((s) => Array.from({ length: T }, (_, t) => (t < s.inputIds.length ? s.inputIds[t] : 0)));
  const lossMask = samples.map((s) => Array.from({ length: T }, (_, t) => (t < s.lossMask.length ? s.lossMask[t] : 0)));
  const finT = tf.tensor3d(fin, [B, T, hidden]);
  const batch = { inputIds, lossMask, aux: tf.tensor3d(aux, [B, T, auxWidth]), targetLogits: head.logits(finT) };
  finT.dispose();
  return batch;
}

export async function runRank(ctx: RankContext): Promise<TrainResult> {
  const job = ctx.payload as TrainJob;
  const { rank, worldSize } = ctx.collective;
  const log = rank === 0 ? ctx.log : () => {};
  const r = loadRecipe(job.recipe, job.overrides);
  const t = r.training;
  await initBackend(r.runtime.backend as BackendName, log);
  const targetConfig = loadModelConfig(r.model.target);
  const aux = resolveAuxLayers(r.model.aux_layer_ids, targetConfig.numLayers);
  const tok = loadTokenizer(r.model.target);
  const head = TeacherHead.load(r.model.target, targetConfig);
  const template = r.data.template as TemplateName;

  // Features and the draft vocabulary: from the store offline, from the target online.
  let train: FeatureSource;
  let evalSource: FeatureSource | null = null;
  let vocab: DraftVocab;
  let target: TfjsTarget | null = null;
  if (t.mode === 'offline') {
    const identity = storeIdentity(r.model.target, template, aux, r.data.max_length);
    train = await ArrowStore.open(path.join(r.data.store, 'train'), identity);
    vocab = loadDraftVocab(storeVocabFile(path.join(r.data.store, 'train')));
    if (r.data.eval && fs.existsSync(path.join(r.data.store, 'eval', 'manifest.json')))
      evalSource = await ArrowStore.open(path.join(r.data.store, 'eval'), identity);
  } else {
    target = TfjsTarget.load(r.model.target);
    const load = async (files: string[], format: DatasetFormat, limit: number | null) => {
      const out: { id: string; ids: number[]; lossMask: number[] }[] = [];
      for (const f of files) {
        for await (const c of readConversations(f, { format, skipInvalid: r.data.skip_invalid }).conversations) {
          if (limit !== null && out.length >= limit) break;
          const x = tokenizeConversation(c.messages, tok, { template, maxLength: r.data.max_length });
          out.push({ id: c.id, ids: x.ids, lossMask: x.lossMask });
        }
      }
      return out;
    };
    const data = trainFiles(r);
    const samples = await load(data.files, data.format, r.capture.limit);
    const counter = new TokenCounter(targetConfig.vocabSize);
    for (const s of samples) counter.add(s.ids, s.lossMask);
    // Rank 0 builds and caches the vocabulary; the other ranks then read the cache (several ranks writing
    // the same cache file at once would race).
    const build = async () => (await trainingDraftVocab(r, data.files, counter, tok, targetConfig.eosTokenIds)).vocab;
    const first = rank === 0 ? await build() : null;
    ctx.collective.barrier();
    vocab = first ?? (await build());
    const storeDir = path.join(r.data.store, 'train');
    const identity = storeIdentity(r.model.target, template, aux, r.data.max_length);
    const store: OnlineStoreOptions | null = t.online_store
      ? {
          dir: storeDir,
          meta: storeMeta(targetConfig, identity, r.capture.dtype as never, r.capture.samples_per_shard),
          identity,
          collective: ctx.collective,
          seed: r.runtime.seed,
          batchSize: r.capture.batch_size,
          // The store then serves a later offline training as a captured one would.
          onComplete: () => saveDraftVocab(storeVocabFile(storeDir), vocab),
          log,
        }
      : null;
    train = new OnlineFeatures(target, tok, samples, aux, r.data.answer_extractor as never, store);
    if (r.data.eval)
      evalSource = new OnlineFeatures(
        target,
        tok,
        await load(r.data.eval, r.data.format as DatasetFormat, t.eval_samples),
        aux,
        r.data.answer_extractor as never,
      );
  }
  const draftConfig = draftConfigFor(targetConfig, aux, vocab.used.length, t.specexit);
  const vocabT = { used: vocab.used, t2d: vocab.t2d };

  // Schedule.
  const microPerEpoch = Math.floor(Math.floor(train.size / worldSize) / t.batch_size);
  const stepsPerEpoch = Math.floor(microPerEpoch / t.accumulation_steps);
  if (stepsPerEpoch < 1)
    throw new Error(
      `${r.file}: ${train.size} training samples make no full optimizer step of ${t.batch_size} x ${t.accumulation_steps} on ${worldSize} rank(s)`,
    );
  const totalSteps = t.max_steps ?? stepsPerEpoch * t.num_epochs;
  const schedule = { lr: t.learning_rate, warmupSteps: Math.round(t.warmup_ratio * totalSteps), totalSteps };

  // Model and optimizer, fresh or resumed.
  const runDir = runDirOf(r);
  const key = recipeKey(r);
  let draft: Eagle3Draft;
  const opt = new AdamW({ beta1: t.beta1, beta2: t.beta2, weightDecay: t.weight_decay });
  let state: TrainerState = { step: 0, epoch: 0, batchInEpoch: 0, totalSteps, seed: r.runtime.seed, learningRate: 0, recipeKey: key };
  const resumeFrom = job.resume === 'latest' ? (listCheckpoints(runDir).pop() ?? null) : job.resume;
  if (job.resume === 'latest' && !resumeFrom) log(`no checkpoint in ${runDir} yet: starting fresh`);
  if (resumeFrom) {
    const saved = loadCheckpoint(resumeFrom, draftConfig);
    if (saved.state.recipeKey !== key)
      throw new Error(
        `${resumeFrom}: written by a run with other model, data or training settings; resume it with its own recipe, or start a fresh run_id`,
      );
    draft = new Eagle3Draft(draftConfig, saved.weights);
    const byVar = (m: Map<string, Float32Array>) => new Map([...draft.params].map(([n, v]) => [v.name, m.get(n)!]));
    opt.load({ step: saved.state.step, m: byVar(saved.moments.m), v: byVar(saved.moments.v) }, draft.variables());
    state = saved.state;
    log(`resumed from ${resumeFrom} at step ${state.step}`);
  } else {
    draft = Eagle3Draft.init(draftConfig, r.runtime.seed);
  }
  const vars = draft.variables();
  const _names = [...draft.params.keys()];

  const save = (): string => {
    const { m, v } = opt.state();
    const moments = { m: new Map<string, Float32Array>(), v: new Map<string, Float32Array>() };
    for (const [n, p] of draft.params) {
      // Before the first update the moments do not exist yet: zeros, as AdamW starts.
      moments.m.set(n, (m.get(p.name)?.dataSync() as Float32Array) ?? new Float32Array(p.size));
      moments.v.set(n, (v.get(p.name)?.dataSync() as Float32Array) ?? new Float32Array(p.size));
    }
    return saveCheckpoint(runDir, draftConfig, draft.exportWeights(), vocab, moments, state, t.keep_last);
  };

  const evaluate = async (): Promise<EvalMetrics | null> => {
    if (!evalSource) return null;
    const limit = Math.min(evalSource.size, t.eval_samples ?? evalSource.size);
    const lossSum = new Array(t.ttt_length).fill(0);
    const correct = new Array(t.ttt_length).fill(0);
    const counted = new Array(t.ttt_length).fill(0);
    let batches = 0;
    const signalSum = [0, 0, 0];
    const signalMetrics = new SignalMetrics();
    for (let i = 0; i < limit; i += t.batch_size) {
      const samples = await Promise.all(Array.from({ length: Math.min(t.batch_size, limit - i) }, (_, k) => evalSource!.get(i + k)));
      const batch = collateFeatures(samples, head, aux.length * targetConfig.hiddenSize, targetConfig.hiddenSize);
      const teacher = prepareTeacher(batch, vocabT);
      const out = tttForward(draft, head.embed, batch.aux, teacher, t.ttt_length);
      const acc = stepAccuracies(teacher, out.draftArgmax);
      out.stepLosses.forEach((l, k) => (lossSum[k] += l.dataSync()[0]));
      acc.correct.forEach((c, k) => {
        correct[k] += c;
        counted[k] += acc.counted[k];
      });
      if (t.specexit) {
        const sig = signalBatch(samples, batch.inputIds[0].length);
        const z = draft.signalLogits(batch.aux);
        const losses = signalLosses(z, sig);
        losses.forEach((l, k) => (signalSum[k] += l.dataSync()[0]));
        signalMetrics.add(z.dataSync() as Float32Array, sig.host);
        tf.dispose([z, ...losses, sig.targets, sig.masks]);
      }
      tf.dispose([out.total, ...out.stepLosses, teacher.probs, batch.aux, batch.targetLogits]);
      batches++;
    }
    const accs = correct.map((c, k) => (counted[k] ? c / counted[k] : 0));
    const result: EvalMetrics = { loss: lossSum.map((x) => x / batches), acc: accs, tau: simulatedAcceptanceLength(accs), samples: limit };
    if (t.specexit) result.specexit = { loss: signalSum.map((x) => x / batches), ...signalMetrics.result() };
    return result;
  };

  const metricsFile = path.join(runDir, 'metrics.jsonl');
  if (rank === 0) fs.mkdirSync(runDir, { recursive: true });
  const writeMetrics = (row: Record<string, unknown>) => rank === 0 && fs.appendFileSync(metricsFile, JSON.stringify(row) + '\n');

  // Interval accumulators for logging.
  let intLoss = new Array(t.ttt_length).fill(0);
  let intSignal = [0, 0, 0];
  let intCorrect = new Array(t.ttt_length).fill(0);
  let intCounted = new Array(t.ttt_length).fill(0);
  let intSteps = 0;
  let intTokens = 0;
  let intStart = Date.now();
  let lastNorm = 0;
  let totalTokens = 0;
  const t0 = Date.now();
  let lastCheckpoint: string | null = resumeFrom;
  let lastEval: EvalMetrics | null = null;
  const flat = new Float32Array(vars.reduce((n, v) => n + v.size, 0));

  // What the whole global batch shares, gathered in one all-reduce: the longest sample over all ranks'
  // shares (each rank reports its own in its slot) and the SpecExit mask counts (summed).
  const shared = new Float32Array(worldSize + 3);
  const globalShape = (samples: FeatureSample[]): { T: number; divisors: [number, number, number] | undefined } => {
    shared.fill(0);
    shared[rank] = Math.max(...samples.map((s) => s.inputIds.length));
    if (t.specexit) shared.set(signalMaskCounts(samples), worldSize);
    if (worldSize > 1) ctx.collective.allReduceSum(shared);
    const T = Math.max(...shared.subarray(0, worldSize));
    // Each rank divides by its share of the global count, so that the mean over ranks is the global masked mean.
    const divisors = t.specexit
      ? (Array.from(shared.subarray(worldSize), (n) => Math.max(n, 1) / worldSize) as [number, number, number])
      : undefined;
    return { T, divisors };
  };

  const L = t.ttt_length;
  /**
   * Loss, metrics and gradients of one chunk of a micro-batch (src/train/chunks.ts), with the micro-batch's
   * normaliser and SpecExit divisors so that the chunks' results add up to the micro-batch's. `stats`
   * gathers [loss_i x L, correct_i x L, counted_i x L, signal losses x 3, tokens].
   */
  const chunkGradients = (
    part: FeatureSample[],
    padTo: number,
    normaliser: number,
    divisors: [number, number, number] | undefined,
    stats: Float32Array,
  ) => {
    const batch = collateFeatures(part, head, aux.length * targetConfig.hiddenSize, targetConfig.hiddenSize, padTo);
    const teacher = prepareTeacher(batch, vocabT);
    const kept: tf.Scalar[] = [];
    const keptSignals: tf.Scalar[] = [];
    let argmax: number[][][] = [];
    const sig = t.specexit ? signalBatch(part, padTo) : null;
    const { value, grads } = tf.variableGrads(() => {
      const out = tttForward(draft, head.embed, batch.aux, teacher, L, { normaliser });
      kept.push(...out.stepLosses);
      argmax = out.draftArgmax;
      let total: tf.Scalar = out.total;
      if (sig) {
        // SpecExit multi-task loss, added to the TTT loss with the recipe's weights.
        const losses = signalLosses(draft.signalLogits(batch.aux), sig, divisors);
        keptSignals.push(...losses.map((l) => tf.keep(l)));
        losses.forEach((l, k) => (total = tf.add(total, tf.mul(l, t.specexit_weights[k]))));
      }
      return tf.div(total, t.accumulation_steps) as tf.Scalar;
    }, vars);
    const acc = stepAccuracies(teacher, argmax);
    kept.forEach((l, k) => (stats[k] += l.dataSync()[0]));
    acc.correct.forEach((c, k) => {
      stats[L + k] += c;
      stats[2 * L + k] += acc.counted[k];
    });
    keptSignals.forEach((l, k) => (stats[3 * L + k] += l.dataSync()[0]));
    const total = value.dataSync()[0] * t.accumulation_steps;
    tf.dispose([value, ...kept, ...keptSignals, ...(sig ? [sig.targets, sig.masks] : []), teacher.probs, batch.aux, batch.targetLogits]);
    return { grads, total };
  };

  let accumulated: Record<string, tf.Tensor> | null = null;
  const accumulate = (grads: Record<string, tf.Tensor>) => {
    if (!accumulated) {
      accumulated = grads;
      return;
    }
    for (const v of vars) {
      const sum = tf.add(accumulated[v.name], grads[v.name]);
      accumulated[v.name].dispose();
      grads[v.name].dispose();
      accumulated[v.name] = sum;
    }
  };
  let micro = 0;
  const fault = injectedFault();
  while (state.step < totalSteps) {
    for await (const samples of train.batches({
      batchSize: t.batch_size,
      shuffle: true,
      seed: r.runtime.seed,
      epoch: state.epoch,
      rank,
      worldSize,
      startBatch: state.batchInEpoch,
      balance: true,
    })) {
      if (fault && fault.rank === rank && fault.step === state.step)
        throw new Error(`injected fault at step ${state.step} (SPECFORGE_INJECT_FAULT)`);
      // Normalisers of the whole global batch: the TTT loss's B*T and the SpecExit losses' mask counts are
      // then those of a single rank holding the whole batch.
      const { T, divisors } = globalShape(samples);
      const stats = new Float32Array(3 * L + 4);
      stats[3 * L + 3] = samples.reduce((n, s) => n + s.inputIds.length, 0);
      let total = 0;
      for (const chunk of planChunks(
        samples.map((s) => s.inputIds.length),
        t.chunk_tokens,
        T,
      )) {
        const part = chunkGradients(
          chunk.indices.map((i) => samples[i]),
          chunk.padTo,
          samples.length * T,
          divisors,
          stats,
        );
        total += part.total;
        accumulate(part.grads);
      }
      if (!Number.isFinite(total)) {
        throw new Error(
          `step ${state.step}: the loss is ${total}; stopping (the last good checkpoint is ${lastCheckpoint ?? 'none'}). Lower training.learning_rate or check the data.`,
        );
      }
      // Metrics over the whole global batch: mean of the ranks' losses, summed accuracy and token counts.
      if (worldSize > 1) ctx.collective.allReduceSum(stats);
      for (let k = 0; k < L; k++) {
        intLoss[k] += stats[k] / worldSize / t.accumulation_steps;
        intCorrect[k] += stats[L + k];
        intCounted[k] += stats[2 * L + k];
      }
      for (let k = 0; k < 3; k++) intSignal[k] += stats[3 * L + k] / worldSize / t.accumulation_steps;
      intTokens += stats[3 * L + 3];
      totalTokens += stats[3 * L + 3];
      state.batchInEpoch++;
      if (++micro < t.accumulation_steps) continue;
      micro = 0;

      // All-reduce (mean over ranks), clip, update.
      let off = 0;
      for (const v of vars) {
        flat.set(accumulated![v.name].dataSync() as Float32Array, off);
        off += v.size;
      }
      tf.dispose(Object.values(accumulated!));
      accumulated = null;
      ctx.collective.allReduceSum(flat);
      const reduced: Record<string, tf.Tensor> = {};
      off = 0;
      for (const v of vars) {
        reduced[v.name] = tf.tidy(() => tf.div(tf.tensor(flat.subarray(off, off + v.size), v.shape), worldSize));
        off += v.size;
      }
      const clipped = clipByGlobalNorm(reduced, t.max_grad_norm);
      lastNorm = clipped.norm;
      state.learningRate = learningRate(state.step, schedule);
      opt.apply(vars, clipped.grads, state.learningRate);
      tf.dispose(Object.values(clipped.grads));
      state.step++;
      intSteps++;

      const accs = intCorrect.map((c, k) => (intCounted[k] ? c / intCounted[k] : 0));
      ctx.progress(state.step, {
        total: totalSteps,
        loss: intLoss[0] / Math.max(intSteps, 1),
        acc0: accs[0],
        'tok/s': Math.round(totalTokens / ((Date.now() - t0) / 1000)),
      });
      if (state.step % t.log_interval === 0 || state.step === totalSteps) {
        const secs = (Date.now() - intStart) / 1000;
        writeMetrics({
          split: 'train',
          step: state.step,
          epoch: state.epoch,
          lr: state.learningRate,
          loss: intLoss.map((x) => x / intSteps),
          acc: accs,
          tau: simulatedAcceptanceLength(accs),
          tokens_per_s: intTokens / secs,
          grad_norm: lastNorm,
          ...(t.specexit ? { specexit_loss: intSignal.map((x) => x / intSteps) } : {}),
        });
        intSignal = [0, 0, 0];
        intLoss = intLoss.map(() => 0);
        intCorrect = intCorrect.map(() => 0);
        intCounted = intCounted.map(() => 0);
        intSteps = 0;
        intTokens = 0;
        intStart = Date.now();
      }
      if (rank === 0 && (state.step % t.eval_interval === 0 || state.step === totalSteps)) {
        lastEval = await evaluate();
        if (lastEval) {
          writeMetrics({ split: 'eval', step: state.step, epoch: state.epoch, ...lastEval });
          log(
            `eval @ step ${state.step}: acc ${lastEval.acc.map((a) => a.toFixed(3)).join(' ')}; simulated acceptance length ${lastEval.tau.toFixed(3)}`,
          );
        }
      }
      if (state.step % t.save_interval === 0 || state.step === totalSteps) {
        if (rank === 0) lastCheckpoint = save();
        ctx.collective.barrier();
      }
      if (state.step >= totalSteps) break;
    }
    if (state.step >= totalSteps) break;
    state.epoch++;
    state.batchInEpoch = 0;
  }
  if (accumulated) tf.dispose(Object.values(accumulated));
  const seconds = (Date.now() - t0) / 1000;
  head.dispose();
  target?.dispose();
  for (const src of [train, evalSource]) await src?.close();
  return { runDir, steps: state.step, lastCheckpoint, eval: lastEval, seconds, tokensPerSecond: totalTokens / seconds };
}
