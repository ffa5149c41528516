// Writing a file so that a reader never sees half of it: write a temporary name beside it, fsync, rename.
// A crash leaves the old file (or none), never a torn one; every writer of the project goes through here.
// A failed write (a full disk) keeps the system's message, whose write() names no file, and carries the
// file it was writing (failedFile), so that a caller can say which file and what it kept.
import fs from 'node:fs';
import path from 'node:path';
import { threadId } from 'node:worker_threads';

const FILE = Symbol('specforge.failedFile');

/** Marks `e` as a failure to write `file` (the first mark stays: the innermost writer knows best); returns it. */
export function markFailedFile(e: unknown, file: string): unknown {
  if (e instanceof Error && !(FILE in e)) Object.defineProperty(e, FILE, { value: file });
  return e;
}

/** The file a failed write was writing (see markFailedFile), or null when `e` is not such a failure. */
export function failedFile(e: unknown): string | null {
  return e instanceof Error && FILE in e ? ((e as unknown as Record<symbol, string>)[FILE] ?? null) : null;
}

/** Writes `parts` to `file` atomically (temporary name, fsync, rename); creates the folder. */
export function writeAtomic(file: string, parts: (Buffer | string)[]): void {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  // pid and thread: ranks are worker threads of one process and may write the same file at once.
  const tmp = `${file}.${process.pid}.${threadId}.tmp`;
  try {
    const fd = fs.openSync(tmp, 'w');
    try {
      for (const p of parts) fs.writeSync(fd, typeof p === 'string' ? Buffer.from(p) : p);
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
    fs.renameSync(tmp, file);
  } catch (e) {
    fs.rmSync(tmp, { force: true });
    throw markFailedFile(e, file);
  }
}
