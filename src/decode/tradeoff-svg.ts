// The SpecExit calibration's picture: reasoning tokens saved against answer accuracy, one point per
// distinct outcome of the rules tried on the calibration split (coloured by how the exit closes the
// thinking), the chosen rule and its test-split result marked, and the accuracy budget's floor on the
// calibration split as a dashed line. House style: util/svg.ts.
import { escapeXml, niceTicks, STYLE, svgOpen, tickLabel } from '../util/svg.ts';
import type { CalibrationReport } from './specexit-calibrate.ts';

export function tradeoffSvg(r: CalibrationReport): string {
  const [left, right, top, bottom] = [64, 190, 52, 48];
  const [plotW, plotH] = [480, 300];
  const width = left + plotW + right;
  const height = top + plotH + bottom;
  const c = r.chosen;
  const full = c.calibration.accuracy?.full ?? 0;
  const floor = full - r.accuracyBudgetPoints / 100;
  const marks = [
    { saved: c.calibration.reasoningSaved, accuracy: c.calibration.accuracy?.exit ?? 0 },
    { saved: c.testDecoded.reasoningSaved, accuracy: c.testDecoded.accuracy?.exit ?? 0 },
  ];
  const xs = niceTicks(0, Math.max(0.05, ...r.points.map((p) => p.saved), ...marks.map((m) => m.saved)) * 100);
  const accs = [...r.points.map((p) => p.accuracy), ...marks.map((m) => m.accuracy), floor, full].map((a) => a * 100);
  const ys = niceTicks(Math.min(...accs), Math.max(...accs));
  const x = (saved: number) => left + (plotW * (100 * saved - xs[0])) / (xs[xs.length - 1] - xs[0]);
  const y = (acc: number) => top + plotH * (1 - (100 * acc - ys[0]) / (ys[ys.length - 1] - ys[0]));
  const subtitle = `${r.rulesTried} rules on ${r.split.calibration} calibration prompts; chosen: most saved within ${r.accuracyBudgetPoints} point(s) of full thinking; test: ${r.split.test} other prompts`;
  const out = svgOpen(width, height, 'SpecExit exit rules: reasoning saved vs answer accuracy', subtitle);
  for (const v of xs) {
    const px = x(v / 100).toFixed(1);
    out.push(`<line x1="${px}" y1="${top}" x2="${px}" y2="${top + plotH}" stroke="${v === xs[0] ? STYLE.axis : STYLE.grid}"/>`);
    out.push(`<text x="${px}" y="${top + plotH + 16}" text-anchor="middle">${tickLabel(v)}</text>`);
  }
  for (const v of ys) {
    const py = y(v / 100).toFixed(1);
    out.push(`<line x1="${left}" y1="${py}" x2="${left + plotW}" y2="${py}" stroke="${v === ys[0] ? STYLE.axis : STYLE.grid}"/>`);
    out.push(`<text x="${left - 6}" y="${(y(v / 100) + 4).toFixed(1)}" text-anchor="end">${tickLabel(v)}</text>`);
  }
  out.push(
    `<line x1="${left}" y1="${y(floor).toFixed(1)}" x2="${left + plotW}" y2="${y(floor).toFixed(1)}" stroke="${STYLE.palette[3]}" stroke-dasharray="5 4"/>`,
  );
  const colour = (close: string) => (close === 'replace-split' ? STYLE.palette[0] : STYLE.palette[2]);
  for (const p of r.points)
    out.push(
      `<circle class="rule" cx="${x(p.saved).toFixed(1)}" cy="${y(p.accuracy).toFixed(1)}" r="3" fill="${colour(p.close)}" fill-opacity="0.45"><title>${escapeXml(`${p.rules} rule(s), ${p.close}: ${(100 * p.saved).toFixed(1)}% saved, accuracy ${(100 * p.accuracy).toFixed(1)}%`)}</title></circle>`,
    );
  const [cal, test] = marks;
  out.push(
    `<circle class="chosen" cx="${x(cal.saved).toFixed(1)}" cy="${y(cal.accuracy).toFixed(1)}" r="7" fill="none" stroke="${STYLE.palette[3]}" stroke-width="2.5"/>`,
  );
  out.push(
    `<rect class="test" x="${(x(test.saved) - 5).toFixed(1)}" y="${(y(test.accuracy) - 5).toFixed(1)}" width="10" height="10" fill="${STYLE.palette[1]}"/>`,
  );
  const lx = left + plotW + 16;
  const legend: [string, string][] = [
    [`<circle cx="${lx + 6}" cy="${top + 6}" r="3" fill="${colour('replace-split')}" fill-opacity="0.45"/>`, 'a rule, replace-split'],
    [`<circle cx="${lx + 6}" cy="${top + 26}" r="3" fill="${colour('after-split')}" fill-opacity="0.45"/>`, 'a rule, after-split'],
    [`<circle cx="${lx + 6}" cy="${top + 46}" r="7" fill="none" stroke="${STYLE.palette[3]}" stroke-width="2.5"/>`, 'chosen (calibration)'],
    [`<rect x="${lx + 1}" y="${top + 61}" width="10" height="10" fill="${STYLE.palette[1]}"/>`, 'chosen, decoded (test)'],
    [
      `<line x1="${lx}" y1="${top + 86}" x2="${lx + 12}" y2="${top + 86}" stroke="${STYLE.palette[3]}" stroke-dasharray="5 4"/>`,
      'budget floor (calibration)',
    ],
  ];
  legend.forEach(([mark, label], i) => {
    out.push(mark);
    out.push(`<text x="${lx + 20}" y="${top + 10 + 20 * i}">${escapeXml(label)}</text>`);
  });
  out.push(`<text x="${left + plotW / 2}" y="${height - 10}" text-anchor="middle">reasoning tokens saved (%)</text>`);
  out.push(`<text transform="translate(16 ${top + plotH / 2}) rotate(-90)" text-anchor="middle">answer accuracy (%)</text>`);
  out.push('</svg>');
  return out.join('\n') + '\n';
}
