// Which of a run's checkpoints is known good. The checkpoint written at step N holds the weights that step
// N+1 computes its loss and gradient from, so it is proven only when step N+1 is healthy (divergence.ts).
// Until then it is pending: keep_last spares the checkpoint before it, and when step N+1 diverges it is set
// aside as step-N.diverged (whole, for a look, but no longer a checkpoint that a resume, eval, export or
// keep_last would take), and the run names the newest checkpoint before it, which a healthy step did run
// from. A checkpoint a run resumes from is pending too, but is not set aside: the user named it.
import fs from 'node:fs';
import path from 'node:path';
import { listCheckpoints, pruneCheckpoints, stepOf } from './checkpoint.ts';

export const DIVERGED_SUFFIX = '.diverged';

export class CheckpointTrail {
  /** The newest checkpoint no step has run from yet, and whether this run wrote it. */
  private pending: { dir: string; ours: boolean } | null;

  /**
   * `files`: whether this rank moves and deletes checkpoints (rank 0); every rank keeps the same account,
   * so that all name the same checkpoint when they stop.
   */
  constructor(
    private readonly runDir: string,
    resumedFrom: string | null,
    private readonly keepLast: number,
    private readonly files: boolean,
  ) {
    this.pending = resumedFrom ? { dir: resumedFrom, ours: false } : null;
  }

  /** A checkpoint was written (by rank 0) from the weights of the step just taken. */
  written(dir: string): void {
    this.pending = { dir, ours: true };
  }

  /** A healthy step ran from the pending checkpoint's weights: it is good, and keep_last applies as set. */
  proven(): void {
    if (!this.pending) return;
    const { dir, ours } = this.pending;
    this.pending = null;
    if (ours && this.files) pruneCheckpoints(this.runDir, this.keepLast, dir);
  }

  /** The checkpoint keep_last must spare while a new one is pending: the newest proven one (all older than the pending are). */
  spare(): string | null {
    return listCheckpoints(this.runDir).at(-1) ?? null;
  }

  /**
   * The step run from the pending checkpoint's weights (or from weights not written yet) diverged: sets the
   * pending checkpoint aside (when this run wrote it) and says which checkpoint is good, in words.
   */
  diverged(): string {
    const bad = this.pending;
    this.pending = null;
    const badStep = bad ? stepOf(bad.dir) : null;
    // Every checkpoint older than the condemned one was run from by a healthy step (else the run would have stopped there).
    const good = listCheckpoints(this.runDir)
      .filter((d) => badStep === null || (stepOf(d) ?? 0) < badStep)
      .pop();
    const parts: string[] = [];
    if (bad?.ours) {
      const aside = `${bad.dir}${DIVERGED_SUFFIX}`;
      if (this.files) {
        fs.rmSync(aside, { recursive: true, force: true });
        fs.renameSync(bad.dir, aside);
      }
      parts.push(`${path.basename(bad.dir)}, written from the weights that diverged, is set aside as ${aside}`);
    } else if (bad) parts.push(`the checkpoint this run resumed from, ${bad.dir}, holds the weights that diverged`);
    parts.push(good ? `the last good checkpoint is ${good}` : 'no checkpoint of this run is good');
    return parts.join('; ');
  }
}
