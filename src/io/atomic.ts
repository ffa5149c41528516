// Writing a file so that a reader never sees half of it: write a temporary name beside it, fsync, rename.
// A crash leaves the old file (or none), never a torn one; every writer of the project goes through here.
import fs from 'node:fs';
import path from 'node:path';
import { threadId } from 'node:worker_threads';

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
    throw e;
  }
}
