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
    try {
      const stat = fs.readFileSync(`/proc/${e}/stat`, 'utf8');
      // The command name (field 2) may hold spaces and parentheses: the fields after its last ')' are fixed.
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      const list = children.get(ppid) ?? [];
      list.push(Number(e));
      children.set(ppid, list);
    } catch {
      // the process ended while we looked
    }
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
export async function runStage(name: string, command: string, args: string[], o: { cwd: string; logDir: string }): Promise<StageRun> {
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
  const [code, signal] = await new Promise<[number | null, string | null]>((resolve) => {
    child.on('error', (e) => {
      err.push(String(e));
      resolve([null, null]);
    });
    child.on('close', (c, s) => resolve([c, s]));
  });
  clearInterval(timer);
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
    peakRssMiB: timed ?? (polled || null),
    rssSource: timed !== null ? 'time -v' : polled ? '/proc VmHWM' : null,
    polledRssMiB: polled || null,
    stdout: out.join('\n'),
    stderr: err.join('\n'),
  };
}
