// Runs one stage of the scale bench as a child process of the real CLI and measures it: wall time, the exit
// status, the output (echoed live, kept in log files, its tail returned) and the peak resident memory.
//
// Peak RSS: GNU time's "Maximum resident set size" when /usr/bin/time is there. It reports the largest
// single process of the tree (ru_maxrss of the child includes its waited-for descendants: here the tsx
// launcher and the node process it spawns for the CLI), exact at any duration. Independently, the bench polls
// /proc/<pid>/status of every process in the tree (VmHWM, each process's own high-water mark), which needs
// nothing installed but can miss growth in the last poll interval; it is the fallback and a cross-check.
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

export interface StageRun {
  code: number | null;
  signal: string | null;
  wallSeconds: number;
  /** Peak RSS in MiB of the largest process in the tree (null when neither method worked). */
  peakRssMiB: number | null;
  rssSource: 'time -v' | '/proc VmHWM' | null;
  /** The /proc poll's figure, whichever source is reported (for the cross-check). */
  polledRssMiB: number | null;
  /** Killed by the bench after `timeoutSeconds`. */
  timedOut: boolean;
  stdout: string;
  stderr: string;
}

let gnuTime: boolean | undefined;

/** Whether /usr/bin/time is GNU time with -v (busybox's lacks it). */
function haveGnuTime(): boolean {
  if (gnuTime === undefined) {
    const r = spawnSync('/usr/bin/time', ['-v', 'true'], { encoding: 'utf8' });
    gnuTime = r.status === 0 && /Maximum resident set size/.test(r.stderr ?? '');
  }
  return gnuTime;
}

/** Pids of `root` and all its descendants, from the parent pid field of /proc/<pid>/stat. */
function processTree(root: number): number[] {
  const children = new Map<number, number[]>();
  for (const e of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    const ppid = parentOf(Number(e)); // -1 when the process ended while we looked
    const list = children.get(ppid) ?? [];
    list.push(Number(e));
    children.set(ppid, list);
  }
  const out: number[] = [];
  const stack = [root];
  while (stack.length) {
    const p = stack.pop()!;
    out.push(p);
    stack.push(...(children.get(p) ?? []));
  }
  return out;
}

/** The processes of the tree that have no children of their own. */
function leaves(root: number): number[] {
  const tree = processTree(root);
  return tree.filter((p) => !tree.some((q) => q !== p && parentOf(q) === p));
}

/** Parent pid from /proc/<pid>/stat (-1 when the process is gone). */
function parentOf(pid: number): number {
  try {
    // The command name (field 2) may hold spaces and parentheses: the fields after its last ')' are fixed.
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
  } catch {
    return -1;
  }
}

function kill(pid: number): void {
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    // already gone
  }
}

function vmHwmKiB(pid: number): number {
  try {
    const m = /^VmHWM:\s+(\d+) kB/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) : 0;
  } catch {
    return 0;
  }
}

function echo(child: ChildProcess, prefix: string, logDir: string, name: string): { out: string[]; err: string[] } {
  const out: string[] = [];
  const err: string[] = [];
  const hook = (stream: NodeJS.ReadableStream | null, sink: string[], file: string) => {
    const log = fs.createWriteStream(path.join(logDir, file));
    let partial = '';
    stream?.on('data', (buf: Buffer) => {
      log.write(buf);
      const text = partial + buf.toString('utf8');
      const lines = text.split(/\r?\n|\r/);
      partial = lines.pop() ?? '';
      for (const l of lines) {
        sink.push(l);
        if (l.trim()) console.log(`${prefix}${l}`);
      }
    });
    stream?.on('end', () => {
      if (partial) {
        sink.push(partial);
        console.log(`${prefix}${partial}`);
      }
      log.end();
    });
  };
  hook(child.stdout, out, `${name}.stdout.log`);
  hook(child.stderr, err, `${name}.stderr.log`);
  return { out, err };
}

/** Runs `command args` in `cwd`, echoing its output with a prefix; logs go to `logDir/<name>.{stdout,stderr}.log`. */
export async function runStage(
  name: string,
  command: string,
  args: string[],
  o: { cwd: string; logDir: string; timeoutSeconds?: number },
): Promise<StageRun> {
  fs.mkdirSync(o.logDir, { recursive: true });
  const timeFile = path.join(o.logDir, `${name}.time.txt`);
  fs.rmSync(timeFile, { force: true });
  const useTime = haveGnuTime();
  const [cmd, argv] = useTime ? ['/usr/bin/time', ['-v', '-o', timeFile, command, ...args]] : [command, args];
  const t0 = performance.now();
  const child = spawn(cmd, argv, { cwd: o.cwd, stdio: ['ignore', 'pipe', 'pipe'], env: process.env });
  const { out, err } = echo(child, `  [${name}] `, o.logDir, name);
  const hwm = new Map<number, number>();
  const poll = () => {
    if (child.pid === undefined) return;
    for (const p of processTree(child.pid)) hwm.set(p, Math.max(hwm.get(p) ?? 0, vmHwmKiB(p)));
  };
  const timer = setInterval(poll, 200);
  let timedOut = false;
  let killer: NodeJS.Timeout | null = null;
  const deadline =
    o.timeoutSeconds && o.timeoutSeconds > 0
      ? setTimeout(() => {
          timedOut = true;
          if (child.pid === undefined) return;
          // SIGKILL (the CLI may not stop on SIGTERM inside a long WebAssembly kernel) to the leaves of the tree
          // first: their parents (tsx, GNU time) then exit on their own after reaping them, so that GNU time still
          // sees the whole tree's peak. Whatever is left after 5 s is killed too.
          const root = child.pid;
          for (const p of leaves(root)) kill(p);
          killer = setTimeout(() => {
            for (const p of processTree(root).reverse()) kill(p);
          }, 5000);
        }, o.timeoutSeconds * 1000)
      : null;
  const [code, signal] = await new Promise<[number | null, string | null]>((resolve) => {
    child.on('error', (e) => {
      err.push(String(e));
      resolve([null, null]);
    });
    child.on('close', (c, s) => resolve([c, s]));
  });
  clearInterval(timer);
  if (deadline) clearTimeout(deadline);
  if (killer) clearTimeout(killer);
  const wallSeconds = (performance.now() - t0) / 1000;
  const polled = hwm.size ? Math.max(...hwm.values()) / 1024 : 0;
  let timed: number | null = null;
  if (useTime && fs.existsSync(timeFile)) {
    const m = /Maximum resident set size \(kbytes\): (\d+)/.exec(fs.readFileSync(timeFile, 'utf8'));
    if (m) timed = Number(m[1]) / 1024;
  }
  // GNU time adds a "Command exited with non-zero status" line to its file, not to the output: nothing to strip.
  return {
    code,
    signal,
    wallSeconds,
    // The larger of the two: GNU time misses a descendant its parent never reaped (a killed tree), the poll
    // misses growth in its last interval.
    peakRssMiB: Math.max(timed ?? 0, polled) || null,
    rssSource: timed !== null && timed >= polled ? 'time -v' : polled ? '/proc VmHWM' : null,
    polledRssMiB: polled || null,
    timedOut,
    stdout: out.join('\n'),
    stderr: err.join('\n'),
  };
}
