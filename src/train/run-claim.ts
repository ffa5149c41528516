// What a `specforge train` may do with its run folder, decided before any work: it takes the folder's lock
// (run-lock.ts), and never mixes its checkpoints with another run's. A fresh run into a folder that holds
// checkpoints is refused unless --overwrite, which first removes the earlier run (its checkpoints, step-best,
// metrics, curves, TensorBoard files, summary and eval report). A resume is checked against the recipe here
// (its trainer state, the recipe fields that must agree), and one from a checkpoint that is not the run's
// newest is refused unless --overwrite, which removes the later ones: they belong to a continuation the
// resumed run replaces, and would otherwise be taken for its own by keep_last, eval and export.
import fs from 'node:fs';
import path from 'node:path';
import { readJsonObject } from '../io/json-file.ts';
import { BEST_LINK } from './best.ts';
import { checkResumable, listCheckpoints, readTrainerState, stepOf } from './checkpoint.ts';
import type { RecipeFields } from './run-dir.ts';
import { RunLock } from './run-lock.ts';
import { CURVES_FILE, METRICS_FILE, TENSORBOARD_DIR } from './run-log.ts';
import { SUMMARY_FILE } from './summary.ts';

export class RunClaimError extends Error {}

export interface RunClaim {
  lock: RunLock;
  /** What the ranks resume: a checkpoint folder, 'latest' (the run has none yet: the run starts fresh), or null. */
  resume: string | null;
}

/** Everything of a run in its folder that a fresh run replaces (eval/: `specforge eval`'s default report). */
const RUN_FILES = [BEST_LINK, METRICS_FILE, CURVES_FILE, TENSORBOARD_DIR, SUMMARY_FILE, 'eval'];

export function claimRunDir(o: {
  runDir: string;
  /** --resume: 'latest', a checkpoint folder, or null for a fresh run. */
  resume: string | null;
  overwrite: boolean;
  recipeKey: string;
  recipe: RecipeFields;
  log: (m: string) => void;
}): RunClaim {
  const lock = RunLock.acquire(o.runDir, o.log);
  try {
    return { lock, resume: decide(o) };
  } catch (e) {
    lock.release();
    throw e;
  }
}

function decide(o: Parameters<typeof claimRunDir>[0]): string | null {
  const { runDir } = o;
  const checkpoints = listCheckpoints(runDir);
  const names = (dirs: string[]) => dirs.map((d) => path.basename(d)).join(', ');
  if (o.resume === null) {
    if (!checkpoints.length) return null;
    if (!o.overwrite)
      throw new RunClaimError(
        `${runDir} holds the checkpoints of an earlier run (${names(checkpoints)}): --resume latest continues it, --overwrite deletes it and starts afresh, or set another training.run_id`,
      );
    o.log(`--overwrite: removing the earlier run in ${runDir} (${names(checkpoints)})`);
    clearRun(runDir);
    return null;
  }
  const given = o.resume === 'latest' ? (checkpoints.at(-1) ?? null) : path.resolve(o.resume);
  if (!given) return 'latest'; // the ranks say the run starts fresh
  if (!fs.existsSync(given)) throw new RunClaimError(`--resume ${o.resume}: ${given} does not exist`);
  // step-best: the step-N it points to, which is what the run continues (and what a divergence names).
  const from = fs.lstatSync(given).isSymbolicLink() ? path.resolve(path.dirname(given), fs.readlinkSync(given)) : given;
  const state = readTrainerState(from);
  checkResumable(from, state, o.recipeKey, o.recipe);
  readJsonObject(path.join(from, 'config.json'), 'a draft config'); // compared with the recipe's draft once the vocabulary is known
  const later = checkpoints.filter((d) => (stepOf(d) ?? 0) > state.step);
  if (later.length) {
    if (!o.overwrite)
      throw new RunClaimError(
        `--resume ${o.resume}: ${runDir} holds later checkpoints (${names(later)}) that the resumed run would leave beside its own; --overwrite deletes them, or resume the newest (--resume latest)`,
      );
    o.log(`--overwrite: removing the checkpoints after step ${state.step} (${names(later)})`);
    for (const d of later) fs.rmSync(d, { recursive: true, force: true });
  }
  return from;
}

/** Removes a run from its folder, leaving the folder, the lock and anything this project did not write. */
function clearRun(runDir: string): void {
  for (const name of fs.readdirSync(runDir)) {
    // step-N, step-N.tmp (a write cut short), step-N.diverged (checkpoint-trail.ts)
    const ours = /^step-\d+(\.tmp|\.diverged)?$/.test(name) || RUN_FILES.includes(name);
    if (ours) fs.rmSync(path.join(runDir, name), { recursive: true, force: true });
  }
}
