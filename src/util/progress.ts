// Progress for long work: a cli-progress bar with rate and ETA on a terminal, plain periodic lines
// otherwise (CI logs, pipes), so that both humans and log files see where a run is.
import cliProgress from 'cli-progress';

export interface Progress {
  /** Advance to `done` units; `fields` are shown after the bar (loss, lr, ...). */
  update(done: number, fields?: Record<string, string | number>): void;
  stop(): void;
}

function format(fields: Record<string, string | number>): string {
  return Object.entries(fields)
    .map(([k, v]) => `${k} ${typeof v === 'number' ? (Number.isInteger(v) ? v : v.toPrecision(4)) : v}`)
    .join('  ');
}

function duration(s: number): string {
  if (!Number.isFinite(s)) return '?';
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = Math.floor(s % 60);
  return h ? `${h}h${String(m).padStart(2, '0')}m` : m ? `${m}m${String(sec).padStart(2, '0')}s` : `${sec}s`;
}

/**
 * @param total units of work (steps, samples, tokens)
 * @param unit  name of a unit, for the rate ("step/s")
 * @param start units already done (a resumed run), excluded from the rate
 */
export function progress(
  label: string,
  total: number,
  unit: string,
  opts: { start?: number; everySeconds?: number; stream?: NodeJS.WriteStream } = {},
): Progress {
  const stream = opts.stream ?? process.stderr;
  const start = opts.start ?? 0;
  const t0 = Date.now();
  // No rate (and so no ETA) until a second has passed: the first units may include start-up.
  const rate = (done: number) => (Date.now() - t0 < 1000 ? NaN : (done - start) / ((Date.now() - t0) / 1000));
  if (stream.isTTY) {
    const bar = new cliProgress.SingleBar(
      { format: `${label} [{bar}] {value}/{total} | {rate} ${unit}/s | ETA {eta_h} | {fields}`, stream, hideCursor: true, etaBuffer: 50 },
      cliProgress.Presets.shades_classic,
    );
    bar.start(total, start, { rate: '0', eta_h: '?', fields: '' });
    return {
      update(done, fields = {}) {
        const r = rate(done);
        bar.update(done, { rate: Number.isNaN(r) ? '?' : r.toPrecision(3), eta_h: duration((total - done) / r), fields: format(fields) });
      },
      stop: () => bar.stop(),
    };
  }
  const every = (opts.everySeconds ?? 30) * 1000;
  let last = 0;
  let lastDone = start;
  const line = (done: number, fields: Record<string, string | number>) => {
    const r = rate(done);
    stream.write(
      `${label} ${done}/${total} (${((100 * done) / total).toFixed(1)}%)  ${Number.isNaN(r) ? '?' : r.toPrecision(3)} ${unit}/s  ETA ${duration((total - done) / r)}  ${format(fields)}\n`,
    );
  };
  let lastFields: Record<string, string | number> = {};
  return {
    update(done, fields = {}) {
      lastDone = done;
      lastFields = fields;
      if (Date.now() - last >= every || done >= total) {
        last = Date.now();
        line(done, fields);
      }
    },
    stop() {
      if (Date.now() - last > 0 && lastDone < total) line(lastDone, lastFields);
    },
  };
}
