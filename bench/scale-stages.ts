// The scale bench's stages (capture, train, eval, export) as CLI invocations, and what each one's figures are
// read from: the CLI's own summary lines first, then the files the stage leaves (store manifest, metrics.jsonl,
// report.json, the exported files). Everything is read defensively: the CLI is being rewired (ONNX Runtime
// target), so a missing line or field becomes "n/a" with a note, never a crash of the bench.
import fs from 'node:fs';
import path from 'node:path';
import type { StageRun } from './scale-run.ts';

// Export comes before eval: eval runs the exported draft on ONNX Runtime beside the ORT target when there is one.
export const STAGES = ['capture', 'train', 'export', 'eval'] as const;
export type StageName = (typeof STAGES)[number];

/** The folders of one bench run; every stage writes only below `root`. */
export interface RunLayout {
  root: string;
  recipe: string;
  modelDir: string;
  store: string;
  cacheDir: string;
  checkpoints: string;
  /** <checkpoints>/<run_id>: where train writes step-N/ and metrics.jsonl. */
  trainRun: string;
  evalOut: string;
  exportOut: string;
  logs: string;
}

export function runLayout(root: string, modelDir: string): RunLayout {
  return {
    root,
    recipe: path.join(root, 'recipe.yaml'),
    modelDir,
    store: path.join(root, 'store'),
    cacheDir: path.join(root, 'cache'),
    checkpoints: path.join(root, 'checkpoints'),
    trainRun: path.join(root, 'checkpoints', 'scale'),
    evalOut: path.join(root, 'eval'),
    exportOut: path.join(root, 'export'),
    logs: path.join(root, 'logs'),
  };
}

/** The newest step-N folder of the training run (null when there is none). */
export function latestCheckpoint(l: RunLayout): string | null {
  if (!fs.existsSync(l.trainRun)) return null;
  const steps = fs
    .readdirSync(l.trainRun)
    .map((d) => /^step-(\d+)$/.exec(d))
    .filter((m): m is RegExpExecArray => m !== null)
    .sort((a, b) => Number(a[1]) - Number(b[1]));
  return steps.length ? path.join(l.trainRun, steps[steps.length - 1][0]) : null;
}

/** CLI arguments of a stage (after `src/cli/main.ts`), and what it must not find from an earlier run. */
export function stageCommand(stage: StageName, l: RunLayout, backend: string | undefined): { args: string[]; clean: string[] } {
  const be = backend ? ['--backend', backend] : [];
  switch (stage) {
    case 'capture':
      // A complete store would be reused ("nothing to capture"): measure a fresh one, with a fresh draft vocabulary.
      return { args: ['capture', '--recipe', l.recipe, ...be], clean: [l.store, l.cacheDir] };
    case 'train':
      return { args: ['train', '--recipe', l.recipe, ...be], clean: [l.trainRun] };
    case 'eval': {
      const onnx = path.join(l.exportOut, 'onnx');
      const draft = fs.existsSync(path.join(onnx, 'model.onnx')) ? ['--draft-onnx', onnx] : [];
      return { args: ['eval', '--recipe', l.recipe, '--out', l.evalOut, ...draft, ...be], clean: [l.evalOut] };
    }
    case 'export': {
      const ckpt = latestCheckpoint(l) ?? path.join(l.trainRun, 'step-missing');
      const args = ['export-onnx', '--checkpoint', ckpt, '--out', l.exportOut, '--format', 'onnx,sglang', '--target', l.modelDir, ...be];
      return { args, clean: [l.exportOut] };
    }
  }
}

/** What the final table and the JSON hold per stage. */
export interface StageResult {
  stage: StageName;
  ok: boolean;
  /** "ok", "failed (exit N)", "skipped: ..." */
  status: string;
  wallSeconds: number | null;
  tokensPerSecond: number | null;
  peakRssMiB: number | null;
  rssSource: string | null;
  polledRssMiB: number | null;
  notes: string[];
  /** Stage-specific figures (eval: tau, speedup, latencies ...). */
  details: Record<string, unknown>;
}

const readJson = (file: string): Record<string, unknown> | null => {
  try {
    return JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch {
    return null;
  }
};

const num = (v: unknown): number | null => (typeof v === 'number' && Number.isFinite(v) ? v : null);

function dirBytes(dir: string): number {
  if (!fs.existsSync(dir)) return 0;
  let total = 0;
  for (const e of fs.readdirSync(dir, { withFileTypes: true, recursive: true }))
    if (e.isFile()) total += fs.statSync(path.join(e.parentPath, e.name)).size;
  return total;
}

const mib = (bytes: number) => `${(bytes / 2 ** 20).toFixed(1)} MiB`;

/** Reads a finished stage's figures into `res` (tokens/s, notes, details). */
export function collectFigures(stage: StageName, l: RunLayout, run: StageRun, res: StageResult): void {
  const out = `${run.stdout}\n${run.stderr}`;
  if (stage === 'capture') captureFigures(l, out, run, res);
  else if (stage === 'train') trainFigures(l, out, res);
  else if (stage === 'eval') evalFigures(l, res);
  else exportFigures(l, res);
}

function captureFigures(l: RunLayout, out: string, run: StageRun, res: StageResult): void {
  // "train: 32 samples in <dir>; captured 32 samples, 63010 tokens in 57.1 s (1103 tok/s); ..." per split.
  const split = (name: string) => {
    const m = new RegExp(`^${name}: \\d+ samples in .*?captured (\\d+) samples, (\\d+) tokens in ([\\d.]+) s`, 'm').exec(out);
    return m ? { samples: Number(m[1]), tokens: Number(m[2]), seconds: Number(m[3]) } : null;
  };
  const train = split('train');
  const evalSplit = split('eval');
  const manifest = readJson(path.join(l.store, 'train', 'manifest.json'));
  if (train) {
    res.tokensPerSecond = train.tokens / train.seconds;
    res.notes.push(`train split ${train.samples} samples, ${train.tokens} tok in ${train.seconds.toFixed(1)} s (CLI)`);
  } else if (manifest && num(manifest.total_tokens)) {
    // No summary line: the manifest's tokens over the whole child's wall time (start-up and the eval split included).
    res.tokensPerSecond = num(manifest.total_tokens)! / run.wallSeconds;
    res.notes.push(`${manifest.total_samples} samples, ${manifest.total_tokens} tok (manifest / wall time)`);
  } else res.notes.push('no capture summary line and no store manifest');
  if (evalSplit) res.notes.push(`+ eval split ${evalSplit.samples} samples in ${evalSplit.seconds.toFixed(1)} s`);
  const vocab = /^draft vocabulary: (\d+) of (\d+) tokens cover ([\d.]+)%/m.exec(out);
  if (vocab) res.notes.push(`draft vocab ${vocab[1]} covers ${vocab[3]}%`);
  res.notes.push(`store ${mib(dirBytes(l.store))}`);
  res.details = {
    train,
    eval: evalSplit,
    manifest: manifest ? { total_samples: manifest.total_samples, total_tokens: manifest.total_tokens } : null,
  };
}

function trainFigures(l: RunLayout, out: string, res: StageResult): void {
  // "trained to step 20 in 1.2 min (812 tok/s); checkpoint <dir>"
  const summary = /trained to step (\d+) in ([\d.]+) min \(([\d.]+) tok\/s\)/.exec(out);
  const rows = fs.existsSync(path.join(l.trainRun, 'metrics.jsonl'))
    ? fs
        .readFileSync(path.join(l.trainRun, 'metrics.jsonl'), 'utf8')
        .split('\n')
        .filter(Boolean)
        .map((s) => JSON.parse(s) as Record<string, unknown>)
    : [];
  const trainRows = rows.filter((r) => r.split === 'train');
  const evalRows = rows.filter((r) => r.split === 'eval');
  if (summary) {
    res.tokensPerSecond = Number(summary[3]);
    res.notes.push(`${summary[1]} steps in ${(Number(summary[2]) * 60).toFixed(1)} s (CLI)`);
  } else if (trainRows.length) {
    const rates = trainRows.map((r) => num(r.tokens_per_s)).filter((x): x is number => x !== null);
    res.tokensPerSecond = rates.length ? rates.reduce((a, b) => a + b, 0) / rates.length : null;
    res.notes.push(`tok/s: mean of ${rates.length} metrics.jsonl rows`);
  } else res.notes.push('no train summary line and no metrics.jsonl');
  const last = trainRows[trainRows.length - 1];
  const loss0 = Array.isArray(last?.loss) ? num(last.loss[0]) : null;
  if (loss0 !== null) res.notes.push(`loss0 ${loss0.toFixed(3)}`);
  const heldOut = evalRows[evalRows.length - 1];
  if (num(heldOut?.tau) !== null) res.notes.push(`held-out sim. tau ${num(heldOut.tau)!.toFixed(2)}`);
  res.details = { steps: summary ? Number(summary[1]) : null, lastTrainRow: last ?? null, lastEvalRow: heldOut ?? null };
}

function evalFigures(l: RunLayout, res: StageResult): void {
  const report = readJson(path.join(l.evalOut, 'report.json'));
  if (!report) {
    res.notes.push(`no ${path.join(l.evalOut, 'report.json')}`);
    return;
  }
  const spec = (report.speculative ?? {}) as Record<string, unknown>;
  const plain = (report.plain ?? {}) as Record<string, unknown>;
  const settings = (report.settings ?? {}) as Record<string, unknown>;
  const passes = num(report.verifyPasses);
  const tau = num(report.tau);
  const speedup = num(report.speedup);
  const specRate = num(spec.tokensPerSecond);
  const plainRate = num(plain.tokensPerSecond);
  const verifySeconds = num(spec.verifySeconds);
  const draftSeconds = num(spec.draftSeconds);
  // Mean verify pass: verifySeconds covers exactly the verify passes (target forward over last token + drafts,
  // acceptance, cache truncation), so the mean is exact.
  const verifyMs = verifySeconds !== null && passes ? (1000 * verifySeconds) / passes : null;
  // Draft-step latency needs the number of draft forwards, which today's report does not record (draftSeconds
  // also holds the context extends after each pass). Read it if the report grows such a count.
  const forwards = num(spec.draftForwards) ?? num(spec.draftSteps) ?? num((report.latency as Record<string, unknown>)?.draftForwards);
  const draftStepMs = draftSeconds !== null && forwards ? (1000 * draftSeconds) / forwards : null;
  const draftPerPassMs = draftSeconds !== null && passes ? (1000 * draftSeconds) / passes : null;
  res.tokensPerSecond = specRate;
  const f = (x: number | null, d: number, unit = '') => (x === null ? 'n/a' : `${x.toFixed(d)}${unit}`);
  res.notes.push(
    `tau ${f(tau, 2)}`,
    `speedup ${f(speedup, 2, 'x')}`,
    `plain ${f(plainRate, 1)} tok/s`,
    `verify ${f(verifyMs, 1, ' ms/pass')}`,
    `draft step ${draftStepMs === null ? 'n/a' : `${draftStepMs.toFixed(1)} ms`}`,
  );
  res.details = {
    prompts: report.prompts,
    generatedTokens: report.generatedTokens,
    verifyPasses: passes,
    tau,
    speedup,
    speculativeTokensPerSecond: specRate,
    plainTokensPerSecond: plainRate,
    prefillSeconds: num(spec.prefillSeconds),
    verifyMsPerPass: verifyMs,
    draftMsPerStep: draftStepMs,
    draftMsPerPass: draftPerPassMs,
    draftStepsPerPass: num(settings.draftSteps),
    identicalToPlain: report.identicalToPlain ?? null,
    backend: settings.backend ?? null,
    targetEngine: settings.targetEngine ?? settings.target_engine ?? null,
  };
}

function exportFigures(l: RunLayout, res: StageResult): void {
  const onnx = path.join(l.exportOut, 'onnx');
  const files = fs.existsSync(onnx) ? fs.readdirSync(onnx) : [];
  res.notes.push(
    `onnx/ ${mib(dirBytes(onnx))} (${files.join(', ') || 'empty'})`,
    `sglang/ ${mib(dirBytes(path.join(l.exportOut, 'sglang')))}`,
  );
  res.details = { onnxFiles: files, onnxBytes: dirBytes(onnx), sglangBytes: dirBytes(path.join(l.exportOut, 'sglang')) };
}

/** The final table: one row per stage, notes joined. */
export function formatTable(results: StageResult[]): string {
  const rows = results.map((r) => [
    r.stage,
    r.wallSeconds === null ? '-' : r.wallSeconds.toFixed(1),
    r.tokensPerSecond === null ? 'n/a' : r.tokensPerSecond.toFixed(1),
    r.peakRssMiB === null ? 'n/a' : r.peakRssMiB.toFixed(0),
    [r.ok ? '' : r.status, ...r.notes].filter(Boolean).join('; '),
  ]);
  const head = ['stage', 'wall s', 'tokens/s', 'peak RSS MiB', 'notes'];
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i].length)));
  widths[4] = head[4].length; // notes run free at the end
  const line = (cells: string[]) =>
    cells
      .map((c, i) => (i === 4 ? c : i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i])))
      .join('  ')
      .trimEnd();
  return [line(head), line(widths.map((w) => '-'.repeat(w))), ...rows.map(line)].join('\n');
}
