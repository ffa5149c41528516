// What `specforge train` and `capture` check of a recipe before any work (a target conversion, a capture,
// a regeneration can take hours), where the schema alone cannot: that the data files are there and hold
// something, and that the samples capture.limit lets in make at least one optimizer step.
import fs from 'node:fs';
import type { Recipe } from '../recipe/recipe.ts';

/** Refuses data.train and data.eval files that are missing, not files, or empty, naming the field and the file. */
export function checkDataFiles(r: Recipe): void {
  for (const [field, files] of [
    ['data.train', r.data.train],
    ['data.eval', r.data.eval ?? []],
  ] as const) {
    for (const file of files) {
      const st = fs.statSync(file, { throwIfNoEntry: false });
      if (!st) throw new Error(`${r.file}: ${field}: ${file} does not exist`);
      if (!st.isFile()) throw new Error(`${r.file}: ${field}: ${file} is not a file (a JSONL file of conversations expected)`);
      if (blank(file))
        throw new Error(
          `${r.file}: ${field}: ${file} is empty; expected JSONL conversations${field === 'data.eval' ? ' (or remove data.eval)' : ''}`,
        );
    }
  }
}

/** Refuses a capture.limit below what one optimizer step takes (the run would have nothing to train on). */
export function checkStepFits(r: Recipe): void {
  const t = r.training;
  const need = t.batch_size * t.accumulation_steps * r.parallel.workers;
  const limit = r.capture.limit;
  if (limit !== null && limit < need)
    throw new Error(
      `${r.file}: capture.limit ${limit} lets in fewer samples than one optimizer step takes (training.batch_size ${t.batch_size} x accumulation_steps ${t.accumulation_steps} x ${r.parallel.workers} worker(s) = ${need})`,
    );
}

/** Whether a file holds nothing but whitespace (read until its first other byte). */
function blank(file: string): boolean {
  const fd = fs.openSync(file, 'r');
  try {
    const buf = Buffer.alloc(1 << 16);
    for (;;) {
      const n = fs.readSync(fd, buf, 0, buf.length, null);
      if (n === 0) return true;
      for (let i = 0; i < n; i++) if (![0x20, 0x09, 0x0a, 0x0d].includes(buf[i])) return false;
    }
  } finally {
    fs.closeSync(fd);
  }
}
