// <run>/curves.svg: a run's metrics.jsonl drawn against the optimizer step, in the style of eval's
// acceptance.svg (src/util/svg.ts): four panels (loss of TTT step 0, accuracy per TTT step, simulated
// acceptance length, learning rate), training rows as solid lines, held-out rows dashed with dots, and
// the best held-out acceptance length marked (the step the run's step-best checkpoint comes from).
import { escapeXml, niceTicks, STYLE, svgOpen, tickLabel } from '../util/svg.ts';
import type { MetricRow } from './tensorboard.ts';

interface Series {
  label: string;
  /** Whether the series has its own legend entry (held-out accuracy shares its colour's). */
  legend: boolean;
  color: string;
  heldOut: boolean;
  points: [number, number][];
}

interface Panel {
  title: string;
  yLabel: string;
  series: Series[];
  /** Values the y axis always covers (accuracy: 0 to 1). */
  yFixed?: [number, number];
}

const WIDTH = 1000;
const PANEL_W = 480;
const PANEL_H = 300;
const GAP = 16;
const TOP = 52;
const [PLOT_LEFT, PLOT_RIGHT, PLOT_BOTTOM] = [60, 14, 40];
const BEST_COLOR = '#d65f5f';

const num = (v: unknown): number | null => (typeof v === 'number' && Number.isFinite(v) ? v : null);
const listAt = (v: unknown, k: number): number | null => (Array.isArray(v) ? num(v[k]) : null);

function points(rows: MetricRow[], value: (r: MetricRow) => number | null): [number, number][] {
  const out: [number, number][] = [];
  for (const r of rows) {
    const v = value(r);
    if (v !== null) out.push([r.step, v]);
  }
  return out;
}

/** The best held-out simulated acceptance length and its step (the earliest of equal ones), or null. */
export function bestEval(rows: MetricRow[]): { step: number; tau: number } | null {
  let best: { step: number; tau: number } | null = null;
  for (const r of rows) {
    const tau = r.split === 'eval' ? num(r.tau) : null;
    if (tau !== null && (best === null || tau > best.tau)) best = { step: r.step, tau };
  }
  return best;
}

/** The chart of `rows` (metrics.jsonl, oldest first) as an SVG document. */
export function curvesSvg(rows: MetricRow[], o: { title: string; totalSteps?: number }): string {
  const train = rows.filter((r) => r.split === 'train');
  const held = rows.filter((r) => r.split === 'eval');
  const depth = Math.max(0, ...rows.map((r) => (Array.isArray(r.acc) ? r.acc.length : 0)));
  const color = (i: number) => STYLE.palette[i % STYLE.palette.length];
  // One colour per TTT step, its training and held-out lines told apart by the dash (said in the subtitle).
  const accuracy = (k: number): Series[] => [
    { label: `acc_${k}`, legend: true, color: color(k), heldOut: false, points: points(train, (r) => listAt(r.acc, k)) },
    { label: `acc_${k} held-out`, legend: false, color: color(k), heldOut: true, points: points(held, (r) => listAt(r.acc, k)) },
  ];
  const panels: Panel[] = [
    {
      title: 'loss of TTT step 0',
      yLabel: 'loss_0',
      series: [
        { label: 'train', legend: true, color: color(0), heldOut: false, points: points(train, (r) => listAt(r.loss, 0)) },
        { label: 'held-out', legend: true, color: color(1), heldOut: true, points: points(held, (r) => listAt(r.loss, 0)) },
      ],
    },
    {
      title: 'accuracy per TTT step',
      yLabel: 'accuracy',
      yFixed: [0, 1],
      series: Array.from({ length: depth }, (_, k) => accuracy(k)).flat(),
    },
    {
      title: 'simulated acceptance length',
      yLabel: 'tau',
      series: [
        { label: 'train', legend: true, color: color(0), heldOut: false, points: points(train, (r) => num(r.tau)) },
        { label: 'held-out', legend: true, color: color(1), heldOut: true, points: points(held, (r) => num(r.tau)) },
      ],
    },
    {
      title: 'learning rate',
      yLabel: 'lr',
      series: [{ label: 'learning rate', legend: true, color: color(2), heldOut: false, points: points(train, (r) => num(r.lr)) }],
    },
  ];

  const best = bestEval(rows);
  const lastStep = Math.max(0, ...rows.map((r) => r.step));
  const xTicks = niceTicks(0, Math.max(1, o.totalSteps ?? 0, lastStep), 6);
  const height = TOP + 2 * PANEL_H + GAP;
  const subtitle =
    `step ${lastStep}${o.totalSteps ? ` of ${o.totalSteps}` : ''}; ` +
    (best ? `best held-out acceptance length ${best.tau.toFixed(3)} at step ${best.step}` : 'no held-out evaluation yet') +
    '; solid: training rows, dashed with dots: held-out evaluations';
  const out = svgOpen(WIDTH, height, o.title, subtitle);
  panels.forEach((p, i) => {
    const x0 = 12 + (i % 2) * (PANEL_W + GAP);
    const y0 = TOP + Math.floor(i / 2) * (PANEL_H + GAP);
    out.push(...drawPanel(p, x0, y0, xTicks, best, i === 2));
  });
  out.push('</svg>');
  return out.join('\n') + '\n';
}

function drawPanel(
  p: Panel,
  x0: number,
  y0: number,
  xTicks: number[],
  best: { step: number; tau: number } | null,
  markBest: boolean,
): string[] {
  const out: string[] = [];
  out.push(`<text x="${x0}" y="${y0 + 14}" font-weight="bold">${escapeXml(p.title)}</text>`);
  const legend = legendRows(p.series, x0, y0 + 22, PANEL_W);
  out.push(...legend.elements);
  const left = x0 + PLOT_LEFT;
  const top = y0 + 22 + legend.height + 8;
  const plotW = PANEL_W - PLOT_LEFT - PLOT_RIGHT;
  const plotH = y0 + PANEL_H - PLOT_BOTTOM - top;
  const values = p.series.flatMap((s) => s.points.map(([, v]) => v));
  if (p.yFixed) values.push(...p.yFixed);
  if (markBest && best) values.push(best.tau);
  const yTicks = values.length ? niceTicks(Math.min(...values), Math.max(...values), 5) : [0, 1];
  const [xLo, xHi] = [xTicks[0], xTicks[xTicks.length - 1]];
  const [yLo, yHi] = [yTicks[0], yTicks[yTicks.length - 1]];
  const X = (s: number) => left + ((s - xLo) / (xHi - xLo)) * plotW;
  const Y = (v: number) => top + plotH * (1 - (v - yLo) / (yHi - yLo));
  const f = (n: number) => n.toFixed(1);

  for (const v of yTicks) {
    out.push(
      `<line x1="${left}" y1="${f(Y(v))}" x2="${left + plotW}" y2="${f(Y(v))}" stroke="${v === yLo ? STYLE.axis : STYLE.grid}" stroke-width="1"/>`,
    );
    out.push(`<text x="${left - 6}" y="${f(Y(v) + 4)}" text-anchor="end">${tickLabel(v)}</text>`);
  }
  out.push(`<line x1="${left}" y1="${top}" x2="${left}" y2="${top + plotH}" stroke="${STYLE.axis}" stroke-width="1"/>`);
  for (const s of xTicks) {
    out.push(`<line x1="${f(X(s))}" y1="${top + plotH}" x2="${f(X(s))}" y2="${top + plotH + 4}" stroke="${STYLE.axis}" stroke-width="1"/>`);
    out.push(`<text x="${f(X(s))}" y="${top + plotH + 16}" text-anchor="middle">${tickLabel(s)}</text>`);
  }
  out.push(`<text x="${left + plotW / 2}" y="${y0 + PANEL_H - 6}" text-anchor="middle">optimizer step</text>`);
  out.push(`<text transform="translate(${x0 + 14} ${f(top + plotH / 2)}) rotate(-90)" text-anchor="middle">${escapeXml(p.yLabel)}</text>`);

  if (!values.length || p.series.every((s) => !s.points.length))
    out.push(`<text x="${left + plotW / 2}" y="${f(top + plotH / 2)}" text-anchor="middle" fill="${STYLE.subtitle}">no data yet</text>`);
  for (const s of p.series) {
    if (!s.points.length) continue;
    const dash = s.heldOut ? ' stroke-dasharray="6 4"' : '';
    const line = s.points.map(([x, v]) => `${f(X(x))},${f(Y(v))}`).join(' ');
    out.push(
      `<polyline class="series" fill="none" stroke="${s.color}" stroke-width="${s.heldOut ? 2 : 1.5}"${dash} points="${line}"><title>${escapeXml(s.label)}</title></polyline>`,
    );
    // Held-out points are few: a dot each, with its value on hover. A lone training point gets one too.
    if (s.heldOut || s.points.length === 1)
      for (const [x, v] of s.points)
        out.push(
          `<circle cx="${f(X(x))}" cy="${f(Y(v))}" r="3" fill="${s.color}"><title>${escapeXml(s.label)} at step ${x}: ${tickLabel(v)}</title></circle>`,
        );
  }
  // Where the best held-out checkpoint stands, in every panel; ringed on its acceptance length (drawn last, on top).
  if (best) {
    out.push(
      `<line class="best-step" x1="${f(X(best.step))}" y1="${top}" x2="${f(X(best.step))}" y2="${top + plotH}" stroke="${BEST_COLOR}" stroke-width="1" stroke-dasharray="2 3"/>`,
    );
    if (markBest) {
      const [bx, by] = [X(best.step), Y(best.tau)];
      out.push(
        `<circle class="best" cx="${f(bx)}" cy="${f(by)}" r="7" fill="none" stroke="${BEST_COLOR}" stroke-width="2"><title>best held-out tau ${best.tau.toFixed(3)} at step ${best.step}</title></circle>`,
      );
      const anchor = bx > left + plotW * 0.7 ? 'end' : 'start';
      const dx = anchor === 'end' ? -10 : 10;
      out.push(
        `<text x="${f(bx + dx)}" y="${f(by + 18)}" text-anchor="${anchor}" fill="${BEST_COLOR}" stroke="${STYLE.background}" stroke-width="4" paint-order="stroke">best ${best.tau.toFixed(3)} @ ${best.step}</text>`,
      );
    }
  }

  return out;
}

/** The panel's legend in rows that fit its width: a line sample (dashed for held-out) and the label. */
function legendRows(series: Series[], x0: number, y0: number, width: number): { elements: string[]; height: number } {
  const elements: string[] = [];
  const rowH = 16;
  let [x, row] = [x0, 0];
  for (const s of series) {
    if (!s.legend) continue;
    const w = 28 + 7 * s.label.length + 14;
    if (x > x0 && x + w > x0 + width) [x, row] = [x0, row + 1];
    const y = y0 + row * rowH + 8;
    const dash = s.heldOut ? ' stroke-dasharray="6 4"' : '';
    elements.push(
      `<line class="legend" x1="${x}" y1="${y}" x2="${x + 22}" y2="${y}" stroke="${s.color}" stroke-width="2"${dash}/>`,
      `<text x="${x + 28}" y="${y + 4}" font-size="11">${escapeXml(s.label)}</text>`,
    );
    x += w;
  }
  return { elements, height: elements.length ? (row + 1) * rowH : 0 };
}
