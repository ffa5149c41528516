// The run summary: what a finished `specforge train` says at the end and leaves in <run>/summary.json:
// the best held-out simulated acceptance length and its step, speed, wall time, peak memory, and the
// checkpoint to use (step-best when the run has one, else the newest).
import path from 'node:path';
import { gib, WASM_HEAP_LIMIT } from '../backend/memory.ts';
import { writeAtomic } from '../io/atomic.ts';
import { BEST_LINK } from './best.ts';
import type { EvalMetrics } from './evaluate.ts';

export const SUMMARY_FILE = 'summary.json';

export interface RunSummary {
  run_dir: string;
  steps: number;
  total_steps: number;
  /** The checkpoint this invocation continued, or null for a fresh run. */
  resumed_from: string | null;
  /** The checkpoint to use: step-best when the run has one, else the newest checkpoint. */
  checkpoint: string | null;
  /** The highest held-out simulated acceptance length of a checkpointed step, and that checkpoint (step-<N>). */
  best: { tau: number; step: number; checkpoint: string } | null;
  last_checkpoint: string | null;
  /** The last held-out evaluation. */
  last_eval: (EvalMetrics & { step: number }) | null;
  /** Tokens trained on, their rate and the wall time of this invocation (a resumed run counts from its resume). */
  tokens: number;
  tokens_per_s: number;
  wall_seconds: number;
  /** The process's peak resident memory, and rank 0's wasm heap (null on other backends), in bytes. */
  peak_rss_bytes: number;
  wasm_heap_bytes: number | null;
  /** What else the run wrote (null: switched off). */
  files: { metrics: string; curves: string; tensorboard: string | null };
}

export function writeSummary(s: RunSummary): string {
  const file = path.join(s.run_dir, SUMMARY_FILE);
  writeAtomic(file, [JSON.stringify(s, null, 2) + '\n']);
  return file;
}

/** The lines printed at the end of a run. */
export function summaryLines(s: RunSummary): string[] {
  const lines = [
    `trained to step ${s.steps} in ${(s.wall_seconds / 60).toFixed(1)} min (${s.tokens_per_s.toFixed(0)} tok/s); checkpoint ${s.last_checkpoint}`,
    `peak memory: ${gib(s.peak_rss_bytes)} resident${s.wasm_heap_bytes !== null ? `, wasm heap ${gib(s.wasm_heap_bytes)} of ${gib(WASM_HEAP_LIMIT)}` : ''}`,
  ];
  const e = s.last_eval;
  if (e)
    lines.push(
      `held-out @ step ${e.step}: acc ${e.acc.map((a) => a.toFixed(3)).join(' ')}; simulated acceptance length ${e.tau.toFixed(3)} (${e.samples} samples)`,
    );
  if (s.best)
    lines.push(
      `best held-out simulated acceptance length ${s.best.tau.toFixed(3)} at step ${s.best.step}: ${path.join(s.run_dir, BEST_LINK)} -> ${path.basename(s.best.checkpoint)}`,
    );
  lines.push(`checkpoint to use: ${s.checkpoint ?? 'none (no checkpoint was written)'}`);
  const tb = s.files.tensorboard ? `, ${s.files.tensorboard}/ (tensorboard --logdir ${s.files.tensorboard})` : '';
  lines.push(`wrote ${path.join(s.run_dir, SUMMARY_FILE)}, ${s.files.curves}${tb}`);
  return lines;
}
