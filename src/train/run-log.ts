// The record of a run that rank 0 keeps beside its checkpoints: metrics.jsonl (one row per log interval
// and per held-out evaluation), the same rows as TensorBoard scalars (tensorboard/, tensorboard.ts) and
// drawn in curves.svg (curves.ts). A run starts by cutting all three back to the step it starts from, so
// that a resumed run continues its curves without a step twice and a fresh run starts them anew.
import fs from 'node:fs';
import path from 'node:path';
import { markFailedFile, writeAtomic } from '../io/atomic.ts';
import { curvesSvg } from './curves.ts';
import type { EvalMetrics } from './evaluate.ts';
import { EventFileWriter, eventFiles, type MetricRow } from './tensorboard.ts';

export const METRICS_FILE = 'metrics.jsonl';
export const CURVES_FILE = 'curves.svg';
export const TENSORBOARD_DIR = 'tensorboard';

/**
 * The rows of a metrics.jsonl. A crash can leave its last line cut short: that line is dropped; a bad
 * line before it is an error naming the file and line.
 */
export function readMetrics(file: string): MetricRow[] {
  if (!fs.existsSync(file)) return [];
  const lines = fs.readFileSync(file, 'utf8').split('\n');
  const rows: MetricRow[] = [];
  lines.forEach((line, i) => {
    if (!line.trim()) return;
    let row: MetricRow;
    try {
      row = JSON.parse(line);
    } catch (e) {
      if (lines.slice(i + 1).every((l) => !l.trim())) return; // the torn last line
      throw new Error(`${file}:${i + 1}: not a JSON row (${(e as Error).message})`);
    }
    if (typeof row !== 'object' || row === null || typeof row.split !== 'string' || !Number.isInteger(row.step))
      throw new Error(`${file}:${i + 1}: a metrics row needs "split" (a string) and "step" (an integer)`);
    rows.push(row);
  });
  return rows;
}

export class RunLog {
  private readonly rows: MetricRow[];
  private readonly events: EventFileWriter | null;

  /**
   * Opens the record of the run in `runDir` that starts at `fromStep` (0: a fresh run): rows past it (those
   * of an interrupted or abandoned run) are dropped from metrics.jsonl, the event files are rewritten
   * from what is kept, and the picture is redrawn.
   */
  constructor(
    private readonly runDir: string,
    fromStep: number,
    private readonly o: { tensorboard: boolean; title: string; totalSteps: number },
  ) {
    const file = path.join(runDir, METRICS_FILE);
    this.rows = readMetrics(file).filter((r) => r.step <= fromStep);
    writeAtomic(
      file,
      this.rows.map((r) => JSON.stringify(r) + '\n'),
    );
    const tb = path.join(runDir, TENSORBOARD_DIR);
    this.events = o.tensorboard ? EventFileWriter.start(tb, this.rows) : null;
    // Switched off: event files of earlier runs would no longer agree with metrics.jsonl.
    if (!o.tensorboard) for (const f of eventFiles(tb)) fs.rmSync(f);
    if (this.rows.length) this.drawCurves();
  }

  /** Rows so far, oldest first. */
  get all(): readonly MetricRow[] {
    return this.rows;
  }

  /** The held-out simulated acceptance length of each evaluated step. */
  evalTaus(): Map<number, number> {
    const evals = this.rows.filter((r) => r.split === 'eval' && typeof r.tau === 'number');
    return new Map(evals.map((r) => [r.step, r.tau as number]));
  }

  /** The last held-out evaluation kept, as evaluate.ts returned it (with its step), or null. */
  lastEval(): (EvalMetrics & { step: number }) | null {
    const row = [...this.rows].reverse().find((r) => r.split === 'eval');
    if (!row) return null;
    const { split: _s, epoch: _e, time: _t, ...ev } = row;
    return ev as unknown as EvalMetrics & { step: number };
  }

  /** Adds a row (stamped with the time, seconds since 1970) to metrics.jsonl and the event file. */
  append(row: MetricRow): void {
    const stamped = { ...row, time: Date.now() / 1000 };
    this.rows.push(stamped);
    // An append-only log: one write per line, so a crash tears at most the last line (readMetrics drops it).
    const file = path.join(this.runDir, METRICS_FILE);
    try {
      fs.appendFileSync(file, JSON.stringify(stamped) + '\n');
    } catch (e) {
      throw markFailedFile(e, file);
    }
    this.events?.append(stamped);
  }

  /** Rewrites curves.svg from the rows so far. */
  drawCurves(): void {
    writeAtomic(path.join(this.runDir, CURVES_FILE), [curvesSvg(this.rows, { title: this.o.title, totalSteps: this.o.totalSteps })]);
  }
}
