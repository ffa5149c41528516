// The house style of the project's hand-written SVG charts (eval's acceptance.svg, training's curves.svg):
// white page, sans-serif 12, a bold title and a grey subtitle top left, light grey grid lines, and the
// helpers both charts draw with. No library: a chart is a list of SVG elements joined by newlines.

export const STYLE = {
  background: '#ffffff',
  axis: '#333333',
  grid: '#dddddd',
  subtitle: '#555555',
  /** Series colours (seaborn's "muted" palette, whose first blue the acceptance bars use). */
  palette: ['#4878d0', '#ee854a', '#6acc64', '#d65f5f', '#956cb4', '#8c613c', '#dc7ec0', '#797979', '#d5bb67', '#82c6e2'],
} as const;

export const escapeXml = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');

/** The opening elements of a chart: the <svg> root, the white page, the title and the subtitle. */
export function svgOpen(width: number, height: number, title: string, subtitle: string): string[] {
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="12">`,
    `<rect x="0" y="0" width="${width}" height="${height}" fill="${STYLE.background}"/>`,
    `<text x="12" y="20" font-size="14" font-weight="bold">${escapeXml(title)}</text>`,
    `<text x="12" y="37" fill="${STYLE.subtitle}">${escapeXml(subtitle)}</text>`,
  ];
}

/**
 * About `count` round tick values (1, 2 or 5 times a power of ten apart) covering [lo, hi]; the range they
 * span is [ticks[0], ticks[last]], which contains [lo, hi].
 */
export function niceTicks(lo: number, hi: number, count = 5): number[] {
  if (!Number.isFinite(lo) || !Number.isFinite(hi)) throw new Error(`niceTicks: the range [${lo}, ${hi}] is not finite`);
  if (hi < lo) [lo, hi] = [hi, lo];
  // A flat series still gets an axis around its value.
  if (hi === lo) {
    const pad = lo === 0 ? 1 : Math.abs(lo) / 2;
    [lo, hi] = [lo - pad, hi + pad];
  }
  const raw = (hi - lo) / Math.max(1, count);
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw)!;
  const first = Math.floor(lo / step + 1e-9) * step;
  const ticks: number[] = [];
  for (let v = first; v < hi + step * (1 - 1e-9); v += step) ticks.push(Number(v.toPrecision(12)));
  if (ticks[ticks.length - 1] < hi) ticks.push(Number((ticks[ticks.length - 1] + step).toPrecision(12)));
  return ticks;
}

/** A tick label: short, with no float noise (0.30000000000000004 reads 0.3; 0.00025 reads 2.5e-4). */
export function tickLabel(v: number): string {
  if (v === 0) return '0';
  const a = Math.abs(v);
  if (a >= 1e5 || a < 1e-3) return v.toExponential(1).replace(/\.0e/, 'e').replace('e+', 'e');
  return String(Number(v.toPrecision(4)));
}
