// Draft checkpoints: <output_dir>/<run_id>/step-<N>/ with config.json and model.safetensors in the layout
// SGLang and vLLM load as an EAGLE-3 draft (no embedding; d2t int64, t2d bool), and the training state in
// a subfolder they never read (their loaders glob *.safetensors in the top folder only):
// training_state/optimizer.safetensors (AdamW moments) and training_state/trainer_state.json (step,
// epoch, sampler position, learning rate, recipe key). A checkpoint is written into step-<N>.tmp/ and renamed, so a
// crash never leaves a half-written step-<N>/; the newest keep_last are kept, and the best (step-best,
// best.ts) besides, and while the newest is not yet proven good, the one before it (checkpoint-trail.ts). Only finite weights and moments are written (a diverged run never leaves a checkpoint
// that eval, export or a resume would trust). A run starts from its newest checkpoint (or a given one) only
// when it was written with the same recipe key (run-dir.ts); trainer_state.json also records the keyed
// fields themselves, so that a refusal names those that differ.
import fs from 'node:fs';
import path from 'node:path';
import type { DraftConfig } from '../draft/config.ts';
import { draftConfigJson } from '../draft/config.ts';
import { draftTensorShapes, Eagle3Draft, isServingTensor } from '../draft/eagle3.ts';
import { writeAtomic } from '../io/atomic.ts';
import { readJsonObject } from '../io/json-file.ts';
import { SafetensorsFile, type StoredTensor, writeSafetensors } from '../io/safetensors.ts';
import { nonFinite } from '../util/finite.ts';
import { bestTarget, clearBest, pointBest } from './best.ts';
import type { AdamW } from './optimizer.ts';
import { type RecipeFields, recipeDifferences } from './run-dir.ts';

export interface TrainerState {
  step: number;
  epoch: number;
  /** Micro-batches of `epoch` already consumed (the sampler position). */
  batchInEpoch: number;
  totalSteps: number;
  seed: number;
  learningRate: number;
  /** Hash of the recipe fields that must not change across a resume. */
  recipeKey: string;
  /** Those fields themselves (absent in checkpoints of older versions). */
  recipe?: RecipeFields;
}

export interface SavedCheckpoint {
  dir: string;
  weights: Map<string, Float32Array>;
  moments: { m: Map<string, Float32Array>; v: Map<string, Float32Array> };
  state: TrainerState;
}

export class CheckpointError extends Error {}

const STEP_DIR = /^step-(\d+)$/;
export const STATE_DIR = 'training_state';

export function saveCheckpoint(
  runDir: string,
  config: DraftConfig,
  weights: Map<string, { shape: number[]; data: Float32Array }>,
  vocab: { d2t: BigInt64Array; t2d: Uint8Array },
  moments: { m: Map<string, Float32Array>; v: Map<string, Float32Array> },
  state: TrainerState,
  keepLast: number,
  /** This checkpoint is the run's best so far: step-best points to it. */
  best = false,
  /** A checkpoint keep_last must not delete now (the run's last proven one, checkpoint-trail.ts). */
  spare: string | null = null,
): string {
  const final = path.join(runDir, `step-${state.step}`);
  // Checked before anything is written: a checkpoint is what a resume, eval and export trust.
  for (const [n, w] of weights)
    for (const [what, data] of [
      [`weight '${n}'`, w.data],
      [`AdamW moment 'exp_avg.${n}'`, moments.m.get(n)!],
      [`AdamW moment 'exp_avg_sq.${n}'`, moments.v.get(n)!],
    ] as const) {
      const bad = nonFinite(data);
      if (bad) throw new CheckpointError(`not writing ${final}: the ${what} is not finite (${bad})`);
    }
  const tmp = `${final}.tmp`;
  fs.rmSync(tmp, { recursive: true, force: true });
  try {
    writeCheckpointFiles(tmp, config, weights, vocab, moments, state);
  } catch (e) {
    // A full disk: no half-written folder is left beside the kept checkpoints.
    fs.rmSync(tmp, { recursive: true, force: true });
    throw e;
  }
  fs.rmSync(final, { recursive: true, force: true });
  fs.renameSync(tmp, final);
  if (best) pointBest(runDir, final);
  pruneCheckpoints(runDir, keepLast, final, spare);
  return final;
}

/**
 * Deletes the run's checkpoints beyond the newest `keepLast`, never `keep` (the one just written, counted as
 * the newest), `spare`, nor the one step-best points to.
 */
export function pruneCheckpoints(runDir: string, keepLast: number, keep: string | null = null, spare: string | null = null): void {
  const spared = new Set([bestTarget(runDir), spare && path.resolve(spare)]);
  const k = keep && path.resolve(keep);
  // The one just written counts as the newest, whatever older runs left with higher step numbers.
  const order = listCheckpoints(runDir).filter((d) => path.resolve(d) !== k);
  if (k) order.push(k);
  for (const old of order.slice(0, Math.max(0, order.length - keepLast)))
    if (!spared.has(path.resolve(old))) fs.rmSync(old, { recursive: true, force: true });
}

/** The files of a checkpoint, into the temporary folder `tmp`. */
function writeCheckpointFiles(
  tmp: string,
  config: DraftConfig,
  weights: Map<string, { shape: number[]; data: Float32Array }>,
  vocab: { d2t: BigInt64Array; t2d: Uint8Array },
  moments: { m: Map<string, Float32Array>; v: Map<string, Float32Array> },
  state: TrainerState,
): void {
  fs.mkdirSync(tmp, { recursive: true });
  const model = new Map<string, StoredTensor>();
  const signals = new Map<string, StoredTensor>();
  for (const [n, w] of weights) (isServingTensor(n) ? model : signals).set(n, { dtype: 'F32', shape: w.shape, data: w.data });
  // SpecExit rows live in their own file, in a subfolder serving loaders do not read.
  if (signals.size) writeSafetensors(path.join(tmp, 'specexit', 'signals.safetensors'), signals);
  model.set('d2t', { dtype: 'I64', shape: [vocab.d2t.length], data: vocab.d2t });
  model.set('t2d', { dtype: 'BOOL', shape: [vocab.t2d.length], data: vocab.t2d });
  writeSafetensors(path.join(tmp, 'model.safetensors'), model, { format: 'pt' });
  writeAtomic(path.join(tmp, 'config.json'), [JSON.stringify(draftConfigJson(config), null, 2) + '\n']);
  const opt = new Map<string, StoredTensor>();
  for (const [n, w] of weights) {
    opt.set(`exp_avg.${n}`, { dtype: 'F32', shape: w.shape, data: moments.m.get(n)! });
    opt.set(`exp_avg_sq.${n}`, { dtype: 'F32', shape: w.shape, data: moments.v.get(n)! });
  }
  writeSafetensors(path.join(tmp, STATE_DIR, 'optimizer.safetensors'), opt);
  writeAtomic(path.join(tmp, STATE_DIR, 'trainer_state.json'), [JSON.stringify(state, null, 2) + '\n']);
}

/** The step of a checkpoint folder's name (step-<N>), or null. */
export function stepOf(dir: string): number | null {
  const m = STEP_DIR.exec(path.basename(dir));
  return m ? Number(m[1]) : null;
}

/**
 * The checkpoint eval and export take when none is named: the run's best (step-best, resolved to its
 * step-<N>), else its newest; null when the run has none.
 */
export function chooseCheckpoint(runDir: string): { dir: string; best: boolean } | null {
  const best = bestTarget(runDir);
  if (best) return { dir: best, best: true };
  const newest = listCheckpoints(runDir).pop();
  return newest ? { dir: newest, best: false } : null;
}

/**
 * The best checkpoint of a run that starts at `fromStep`, from the held-out acceptance lengths of the
 * steps it keeps (`taus`: step -> tau): among the checkpoints at or before that step that had an evaluation,
 * the highest (the earliest of equal ones). step-best is pointed at it, or removed when there is none (a
 * fresh run, or a resume before the step it named, whose checkpoint the run will write anew).
 */
export function restoreBest(runDir: string, fromStep: number, taus: Map<number, number>): { step: number; tau: number } | null {
  let best: { step: number; tau: number; dir: string } | null = null;
  for (const dir of listCheckpoints(runDir)) {
    const step = stepOf(dir)!;
    const tau = taus.get(step);
    if (step <= fromStep && tau !== undefined && (best === null || tau > best.tau)) best = { step, tau, dir };
  }
  if (best) pointBest(runDir, best.dir);
  else clearBest(runDir);
  return best && { step: best.step, tau: best.tau };
}

/** Finished checkpoints of a run, oldest first. */
export function listCheckpoints(runDir: string): string[] {
  if (!fs.existsSync(runDir)) return [];
  return fs
    .readdirSync(runDir)
    .filter((d) => STEP_DIR.test(d) && fs.existsSync(path.join(runDir, d, STATE_DIR, 'trainer_state.json')))
    .sort((a, b) => Number(STEP_DIR.exec(a)![1]) - Number(STEP_DIR.exec(b)![1]))
    .map((d) => path.join(runDir, d));
}

/** A checkpoint's trainer_state.json, checked field by field; errors name the file. */
export function readTrainerState(dir: string): TrainerState {
  const file = path.join(dir, STATE_DIR, 'trainer_state.json');
  if (!fs.existsSync(file)) throw new CheckpointError(`${dir}: not a training checkpoint (no ${STATE_DIR}/trainer_state.json)`);
  const raw = readJsonObject(file, 'the trainer state of a checkpoint');
  for (const k of ['step', 'epoch', 'batchInEpoch', 'totalSteps', 'seed'] as const)
    if (!Number.isInteger(raw[k])) throw new CheckpointError(`${file}: field "${k}" is ${JSON.stringify(raw[k])}; expected an integer`);
  if (typeof raw.learningRate !== 'number')
    throw new CheckpointError(`${file}: field "learningRate" is ${JSON.stringify(raw.learningRate)}; expected a number`);
  if (typeof raw.recipeKey !== 'string')
    throw new CheckpointError(`${file}: field "recipeKey" is ${JSON.stringify(raw.recipeKey)}; expected a string`);
  if (raw.recipe !== undefined && (typeof raw.recipe !== 'object' || raw.recipe === null || Array.isArray(raw.recipe)))
    throw new CheckpointError(`${file}: field "recipe" is ${JSON.stringify(raw.recipe)}; expected an object of recipe fields`);
  return raw as unknown as TrainerState;
}

/**
 * Refuses to continue the checkpoint `dir` (whose trainer state is `state`) with a recipe of another key,
 * naming the fields that differ (those the checkpoint records; older checkpoints record only the key).
 */
export function checkResumable(dir: string, state: TrainerState, key: string, fields: RecipeFields): void {
  if (state.recipeKey === key) return;
  const what = state.recipe
    ? recipeDifferences(state.recipe, fields)
    : 'which fields, this checkpoint does not record (written by an older specforge)';
  throw new CheckpointError(
    `${dir}: written by a run with other model, data or training settings (${what}); resume it with its own recipe, or start a fresh run (--overwrite, or another training.run_id)`,
  );
}

/**
 * Refuses a checkpoint whose config.json is not the draft `config` (the recipe's key matched, so the
 * file was damaged or edited), naming the file and the fields that differ.
 */
export function checkCheckpointConfig(dir: string, config: DraftConfig): void {
  const file = path.join(dir, 'config.json');
  const saved = readJsonObject(file, 'a draft config');
  const want = draftConfigJson(config);
  const keys = [...new Set([...Object.keys(want), ...Object.keys(saved)])];
  const differ = keys.filter((k) => JSON.stringify(saved[k]) !== JSON.stringify(want[k]));
  if (differ.length)
    throw new CheckpointError(
      `${file}: not the draft this recipe trains: ${differ.map((k) => `${k} is ${JSON.stringify(saved[k]) ?? '(absent)'}, expected ${JSON.stringify(want[k]) ?? '(absent)'}`).join('; ')}`,
    );
}

export function loadCheckpoint(dir: string, config: DraftConfig): SavedCheckpoint {
  const state = readTrainerState(dir);
  const model = new SafetensorsFile(path.join(dir, 'model.safetensors'));
  const signalsFile = path.join(dir, 'specexit', 'signals.safetensors');
  const signals = config.specExit ? new SafetensorsFile(signalsFile) : null;
  const opt = new SafetensorsFile(path.join(dir, STATE_DIR, 'optimizer.safetensors'));
  const weights = new Map<string, Float32Array>();
  const moments = { m: new Map<string, Float32Array>(), v: new Map<string, Float32Array>() };
  for (const [name, shape] of draftTensorShapes(config)) {
    const home = isServingTensor(name) ? model : signals!;
    const read: Float32Array[] = [];
    for (const [f, what] of [
      [home, name],
      [opt, `exp_avg.${name}`],
      [opt, `exp_avg_sq.${name}`],
    ] as const) {
      if (!f.has(what)) throw new CheckpointError(`${f.path}: missing '${what}'`);
      const info = f.info(what);
      if (info.shape.join() !== shape.join())
        throw new CheckpointError(`${f.path}: '${what}' has shape [${info.shape}], the recipe's draft needs [${shape}]`);
      const data = f.read(what).data as Float32Array;
      // Written by an older specforge, or damaged: a run from it would only spread the NaN.
      const bad = nonFinite(data);
      if (bad) throw new CheckpointError(`${f.path}: '${what}' is not finite (${bad}); resume from an earlier checkpoint`);
      read.push(data);
    }
    weights.set(name, read[0]);
    moments.m.set(name, read[1]);
    moments.v.set(name, read[2]);
  }
  return { dir, weights, moments, state };
}

export interface RunStart {
  draft: Eagle3Draft;
  state: TrainerState;
  /** The checkpoint the run continues, or null for a fresh run. */
  resumedFrom: string | null;
}

/**
 * The draft a run trains and its trainer state: restored with the AdamW moments (into `opt`) from `resume`
 * ('latest': the run's newest checkpoint, when it has one; or a checkpoint folder), else freshly seeded.
 */
export function startOrResume(o: {
  runDir: string;
  resume: string | null;
  config: DraftConfig;
  opt: AdamW;
  recipeKey: string;
  recipe: RecipeFields;
  seed: number;
  totalSteps: number;
  log: (m: string) => void;
}): RunStart {
  const resumedFrom = o.resume === 'latest' ? (listCheckpoints(o.runDir).pop() ?? null) : o.resume;
  if (o.resume === 'latest' && !resumedFrom) o.log(`no checkpoint in ${o.runDir} yet: starting fresh`);
  if (!resumedFrom) {
    const state: TrainerState = {
      step: 0,
      epoch: 0,
      batchInEpoch: 0,
      totalSteps: o.totalSteps,
      seed: o.seed,
      learningRate: 0,
      recipeKey: o.recipeKey,
      recipe: o.recipe,
    };
    return { draft: Eagle3Draft.init(o.config, o.seed), state, resumedFrom };
  }
  checkResumable(resumedFrom, readTrainerState(resumedFrom), o.recipeKey, o.recipe);
  checkCheckpointConfig(resumedFrom, o.config);
  const saved = loadCheckpoint(resumedFrom, o.config);
  const draft = new Eagle3Draft(o.config, saved.weights);
  // The optimizer keys its moments by variable name, checkpoints by parameter name.
  const byVar = (m: Map<string, Float32Array>) => new Map([...draft.params].map(([n, v]) => [v.name, m.get(n)!]));
  o.opt.load({ step: saved.state.step, m: byVar(saved.moments.m), v: byVar(saved.moments.v) }, draft.variables());
  o.log(`resumed from ${resumedFrom} at step ${saved.state.step}`);
  // Checkpoints written from here on record the fields (those of older versions may not).
  return { draft, state: { ...saved.state, recipe: o.recipe }, resumedFrom };
}

/** Saves step-<state.step> of the run: the draft, its vocabulary, the AdamW moments and the trainer state (`best`: and points step-best at it). */
export function saveTraining(
  runDir: string,
  config: DraftConfig,
  draft: Eagle3Draft,
  vocab: { d2t: BigInt64Array; t2d: Uint8Array },
  opt: AdamW,
  state: TrainerState,
  keepLast: number,
  best = false,
  spare: string | null = null,
): string {
  const { m, v } = opt.state();
  const moments = { m: new Map<string, Float32Array>(), v: new Map<string, Float32Array>() };
  for (const [n, p] of draft.params) {
    // Before the first update the moments do not exist yet: zeros, as AdamW starts.
    moments.m.set(n, m.get(p.name) ?? new Float32Array(p.size));
    moments.v.set(n, v.get(p.name) ?? new Float32Array(p.size));
  }
  return saveCheckpoint(runDir, config, draft.exportWeights(), vocab, moments, state, keepLast, best, spare);
}
