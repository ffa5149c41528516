// The run's best checkpoint: <run>/step-best, a relative symbolic link to the step-<N>/ whose held-out
// simulated acceptance length is the highest so far (as SpecForge keeps a best checkpoint by its eval).
// A link rather than a copy: no second set of weights, and any tool that takes a checkpoint folder
// (SGLang, vLLM, export-onnx, eval) takes step-best as it is. Only a step with both a checkpoint and a
// held-out evaluation can be the best, so set training.save_interval to a multiple of eval_interval.
// keep_last never deletes the checkpoint the link points to; which checkpoint becomes the best, and the
// choice eval and export make, are in checkpoint.ts.
import fs from 'node:fs';
import path from 'node:path';
import { threadId } from 'node:worker_threads';
import { markFailedFile } from '../io/atomic.ts';

export const BEST_LINK = 'step-best';

/** The checkpoint folder step-best points to (absolute), or null when the run has no (valid) link. */
export function bestTarget(runDir: string): string | null {
  const link = path.join(runDir, BEST_LINK);
  let target: string;
  try {
    target = fs.readlinkSync(link);
  } catch {
    return null; // no link (or not a link: nothing this project wrote)
  }
  const dir = path.resolve(runDir, target);
  return fs.existsSync(path.join(dir, 'config.json')) ? dir : null;
}

/** Points step-best at `checkpoint` (a step-<N> folder of the run), replacing the link in one rename. */
export function pointBest(runDir: string, checkpoint: string): void {
  const link = path.join(runDir, BEST_LINK);
  const tmp = `${link}.${process.pid}.${threadId}.tmp`;
  fs.rmSync(tmp, { force: true });
  try {
    fs.symlinkSync(path.relative(runDir, checkpoint), tmp, 'dir');
    fs.renameSync(tmp, link);
  } catch (e) {
    fs.rmSync(tmp, { force: true });
    throw markFailedFile(e, link);
  }
}

/** Removes step-best (a fresh run, or one resumed before the step it named). */
export function clearBest(runDir: string): void {
  const link = path.join(runDir, BEST_LINK);
  if (fs.lstatSync(link, { throwIfNoEntry: false })?.isSymbolicLink()) fs.rmSync(link);
}
