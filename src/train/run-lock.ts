// One `specforge train` at a time in a run folder: <run>/train.lock holds the pid and host of the process
// that trains there. Two runs in one folder would interleave their checkpoints, metrics and step-best (one
// reporting the other's weights as its own). A second run refuses, naming the holder; a lock left by a
// process that no longer runs (killed, or the machine restarted) is taken over with a note. The lock is made
// by linking a complete file into place, so that no run ever reads a half-written one.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { threadId } from 'node:worker_threads';

export const LOCK_FILE = 'train.lock';

interface LockInfo {
  pid: number;
  host: string;
  started: string;
}

export class RunLockError extends Error {}

export class RunLock {
  private constructor(
    readonly file: string,
    private readonly mine: LockInfo,
  ) {}

  /** Takes the lock of `runDir` (creating the folder), or throws naming the run that holds it. */
  static acquire(runDir: string, log: (m: string) => void): RunLock {
    fs.mkdirSync(runDir, { recursive: true });
    const file = path.join(runDir, LOCK_FILE);
    const mine: LockInfo = { pid: process.pid, host: os.hostname(), started: new Date().toISOString() };
    const tmp = `${file}.${process.pid}.${threadId}.tmp`;
    fs.writeFileSync(tmp, JSON.stringify(mine) + '\n');
    try {
      for (let attempt = 0; attempt < 2; attempt++) {
        try {
          fs.linkSync(tmp, file); // fails when the file exists: the check and the claim are one step
          return new RunLock(file, mine);
        } catch (e) {
          if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
        }
        const holder = readLock(file);
        if (holder === 'gone') continue; // released in between
        if (!holder)
          throw new RunLockError(`${file}: not a lock of specforge train (no pid and host in it); remove it if no train runs in ${runDir}`);
        if (isAlive(holder))
          throw new RunLockError(
            `${runDir} is in use by the train of ${describe(holder)}: wait for it to finish, or train into another training.run_id (if pid ${holder.pid} is no specforge train, remove ${file})`,
          );
        takeOver(file, holder);
        log(`note: ${file} was left by ${describe(holder)}, which no longer runs: taking it over`);
      }
      throw new RunLockError(`${file}: could not take the lock; another train keeps taking it`);
    } finally {
      fs.rmSync(tmp, { force: true });
    }
  }

  /** Gives the lock up (only if it is still this process's). */
  release(): void {
    const holder = readLock(this.file);
    if (
      holder &&
      holder !== 'gone' &&
      holder.pid === this.mine.pid &&
      holder.host === this.mine.host &&
      holder.started === this.mine.started
    )
      fs.rmSync(this.file, { force: true });
  }
}

/** The lock's contents; null when unreadable (torn by a crash), 'gone' when there is no file. */
function readLock(file: string): LockInfo | null | 'gone' {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return 'gone';
    throw e;
  }
  try {
    const v = JSON.parse(text);
    return Number.isInteger(v?.pid) && typeof v?.host === 'string' ? (v as LockInfo) : null;
  } catch {
    return null;
  }
}

function describe(l: LockInfo): string {
  return `pid ${l.pid} on ${l.host} (since ${l.started})`;
}

/** Whether the holder still runs. A process on another host cannot be checked here: taken as running. */
function isAlive(l: LockInfo): boolean {
  if (l.host !== os.hostname()) return true;
  try {
    process.kill(l.pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM'; // exists, but another user's
  }
}

/**
 * Removes the stale lock `holder` wrote. It is first moved to a name of this process's own, and checked to
 * still be that lock: if another run took it over in between, its lock is put back and this run refuses.
 */
function takeOver(file: string, holder: LockInfo): void {
  const moved = `${file}.stale.${process.pid}.${threadId}`;
  try {
    fs.renameSync(file, moved);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return; // someone else removed it: try again
    throw e;
  }
  const now = readLock(moved);
  const same = now !== 'gone' && JSON.stringify(now) === JSON.stringify(holder);
  if (!same) {
    try {
      fs.linkSync(moved, file);
    } catch {
      // a third run claimed the folder meanwhile; the lock moved aside is of a run that started after it
    }
    fs.rmSync(moved, { force: true });
    throw new RunLockError(`${file}: another train took over this stale lock at the same time; it runs there now`);
  }
  fs.rmSync(moved, { force: true });
}
