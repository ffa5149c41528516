// Where a training run lives, <output_dir>/<run_id> (its step-N checkpoints, metrics and summary), and the
// key of the recipe fields a resumed run must share with the run it continues (kept in every checkpoint,
// with the fields themselves, so that a refusal can name those that differ).
import crypto from 'node:crypto';
import path from 'node:path';
import type { Recipe } from '../recipe/recipe.ts';

/** The keyed recipe fields by dotted name ("training.learning_rate"), as plain JSON values. */
export type RecipeFields = Record<string, unknown>;

/** The run's folder: training.run_id, or the recipe file's name, under training.output_dir. */
export function runDirOf(r: Recipe): string {
  return path.join(r.training.output_dir, r.training.run_id ?? path.basename(r.file).replace(/\.ya?ml$/, ''));
}

/** What the key covers: the recipe fields that change what a run trains. */
function keyed(r: Recipe) {
  // Where and how often a run logs, evaluates and saves, and when it gives up, do not change what it trains.
  const {
    output_dir: _o,
    save_interval: _s,
    keep_last: _k,
    log_interval: _l,
    eval_interval: _e,
    eval_samples: _n,
    tensorboard: _t,
    divergence_factor: _d,
    ...training
  } = r.training;
  return { model: r.model, data: { ...r.data, store: null, cache_dir: null }, training, seed: r.runtime.seed };
}

/** The recipe fields a resumed run must share with the run it continues. */
export function recipeKey(r: Recipe): string {
  return crypto
    .createHash('sha256')
    .update(JSON.stringify(keyed(r)))
    .digest('hex')
    .slice(0, 16);
}

/** The keyed fields by dotted name (runtime.seed for the seed). */
export function recipeFields(r: Recipe): RecipeFields {
  const { seed, ...sections } = keyed(r);
  const out: RecipeFields = {};
  for (const [section, fields] of Object.entries(sections))
    for (const [k, v] of Object.entries(fields))
      if (!(section === 'data' && (k === 'store' || k === 'cache_dir'))) out[`${section}.${k}`] = v;
  out['runtime.seed'] = seed;
  return out;
}

/** The fields in which a checkpoint's record `saved` and the recipe's `now` differ, in words. */
export function recipeDifferences(saved: RecipeFields, now: RecipeFields): string {
  const show = (v: unknown) => (v === undefined ? '(absent)' : JSON.stringify(v));
  const names = [...new Set([...Object.keys(saved), ...Object.keys(now)])];
  const differ = names.filter((n) => JSON.stringify(saved[n]) !== JSON.stringify(now[n]));
  if (!differ.length) return 'the fields it records agree: the key was computed otherwise, by another specforge';
  return differ.map((n) => `${n} is ${show(saved[n])} in the checkpoint, ${show(now[n])} in the recipe`).join('; ');
}
