// Where a training run lives, <output_dir>/<run_id> (its step-N checkpoints, metrics and summary), and the
// key of the recipe fields a resumed run must share with the run it continues (kept in every checkpoint).
import crypto from 'node:crypto';
import path from 'node:path';
import type { Recipe } from '../recipe/recipe.ts';

/** The run's folder: training.run_id, or the recipe file's name, under training.output_dir. */
export function runDirOf(r: Recipe): string {
  return path.join(r.training.output_dir, r.training.run_id ?? path.basename(r.file).replace(/\.ya?ml$/, ''));
}

/** The recipe fields a resumed run must share with the run it continues. */
export function recipeKey(r: Recipe): string {
  // Where and how often a run logs, evaluates and saves does not change what it trains.
  const {
    output_dir: _o,
    save_interval: _s,
    keep_last: _k,
    log_interval: _l,
    eval_interval: _e,
    eval_samples: _n,
    tensorboard: _t,
    ...training
  } = r.training;
  return crypto
    .createHash('sha256')
    .update(JSON.stringify({ model: r.model, data: { ...r.data, store: null, cache_dir: null }, training, seed: r.runtime.seed }))
    .digest('hex')
    .slice(0, 16);
}
