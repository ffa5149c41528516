// Real-size pipeline benchmark: a random-weight Qwen3-0.6B (real shape, real tokenizer), long multi-turn
// reasoning conversations, and the four stages of the real CLI run as child processes (capture, train, eval,
// export-onnx), each measured for wall time, tokens/s and peak RSS; a final table, also saved as JSON.
//
// Usage: npm run bench:scale [-- options]
//   --stage capture,train,export,eval   stages to run (default all; a later stage reuses an earlier run's output;
//                                       eval runs the exported ONNX draft when export has run)
//   --layers N --hidden N --intermediate N --heads N --kv-heads N --head-dim N
//                                       scale the model down for quick checks (default: Qwen3-0.6B; the
//                                       vocabulary stays Qwen3's 151936)
//   --samples N        training conversations captured (default 32)    --eval-prompts N  (default 3)
//   --steps N          training steps (default 20)                     --seed N          (default 0)
//   --max-length N     data.max_length (default 2048; conversations get >= 1800/2048 of it)
//   --workers N        parallel.workers of every stage (default 1)
//   --engine ort|tfjs  sets runtime.target_engine in the recipe (only when given: older branches lack the field)
//   --backend B        tfjs backend passed to every stage (auto, wasm, node, ...)
//   --stage-timeout M  kill a stage (its whole process tree) after M minutes and mark it timed out (default: none)
//   --model-only       write (or find) the model folder and stop
//   --cache DIR        bench cache (default .cache/bench-scale, git-ignored)
//
// Models are cached in <cache>/<name>/ and reused; each run works in <cache>/runs/<name>-n<samples>[-len<L>][-<engine>]/
// (recipe, data, store, checkpoints, eval report, export, logs/) and writes results.json there; every run also
// appends its results as one line to <cache>/history.jsonl.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import YAML from 'yaml';
import { writeConversations } from './scale-data.ts';
import { ensureModel, type ModelShape, modelName, QWEN3_06B } from './scale-model.ts';
import { runStage } from './scale-run.ts';
import {
  collectFigures,
  formatTable,
  latestCheckpoint,
  type RunLayout,
  runLayout,
  STAGES,
  type StageName,
  type StageResult,
  stageCommand,
} from './scale-stages.ts';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

const { values: opt } = parseArgs({
  options: {
    stage: { type: 'string', default: STAGES.join(',') },
    layers: { type: 'string' },
    hidden: { type: 'string' },
    intermediate: { type: 'string' },
    heads: { type: 'string' },
    'kv-heads': { type: 'string' },
    'head-dim': { type: 'string' },
    samples: { type: 'string', default: '32' },
    'eval-prompts': { type: 'string', default: '3' },
    steps: { type: 'string', default: '20' },
    'max-length': { type: 'string', default: '2048' },
    workers: { type: 'string', default: '1' },
    seed: { type: 'string', default: '0' },
    engine: { type: 'string' },
    backend: { type: 'string' },
    'model-only': { type: 'boolean', default: false },
    'stage-timeout': { type: 'string' },
    cache: { type: 'string', default: path.join(REPO, '.cache', 'bench-scale') },
  },
  strict: true,
});

function int(name: string, v: string | undefined, dflt: number): number {
  if (v === undefined) return dflt;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1) throw new Error(`--${name} ${v}: expected a positive integer`);
  return n;
}

const shape: ModelShape = {
  layers: int('layers', opt.layers, QWEN3_06B.layers),
  hidden: int('hidden', opt.hidden, QWEN3_06B.hidden),
  intermediate: int('intermediate', opt.intermediate, QWEN3_06B.intermediate),
  heads: int('heads', opt.heads, QWEN3_06B.heads),
  kvHeads: int('kv-heads', opt['kv-heads'], QWEN3_06B.kvHeads),
  headDim: int('head-dim', opt['head-dim'], QWEN3_06B.headDim),
};
if (shape.heads % shape.kvHeads) throw new Error(`--heads ${shape.heads} is not a multiple of --kv-heads ${shape.kvHeads}`);
if (shape.headDim % 2) throw new Error(`--head-dim ${shape.headDim} must be even (RoPE)`);
const samples = int('samples', opt.samples, 32);
const evalPrompts = int('eval-prompts', opt['eval-prompts'], 3);
const steps = int('steps', opt.steps, 20);
const MAX_LENGTH = int('max-length', opt['max-length'], 2048);
const WORKERS = int('workers', opt.workers, 1);
// Every conversation at least this long (1800 at 2048): samples fill max_length, as real reasoning chat does.
const MIN_TOKENS = Math.floor((MAX_LENGTH * 1800) / 2048);
const seed = Number(opt.seed);
if (!Number.isInteger(seed) || seed < 0) throw new Error(`--seed ${opt.seed}: expected a non-negative integer`);
if (opt.engine !== undefined && !['ort', 'tfjs'].includes(opt.engine)) throw new Error(`--engine ${opt.engine}: expected ort or tfjs`);
const stages = opt.stage.split(',').map((s) => s.trim());
for (const s of stages) if (!(STAGES as readonly string[]).includes(s)) throw new Error(`--stage ${s}: expected ${STAGES.join(', ')}`);
const cache = path.resolve(opt.cache);
const stageTimeout = opt['stage-timeout'] === undefined ? 0 : Number(opt['stage-timeout']) * 60;
if (!(stageTimeout >= 0)) throw new Error(`--stage-timeout ${opt['stage-timeout']}: expected minutes (a number)`);

/** EAGLE-3's default aux layers [1, L/2-1, L-4] need L >= 7; shallower test shapes get distinct layers spread over the depth. */
function auxLayers(L: number): number[] | null {
  const dflt = [1, Math.floor(L / 2) - 1, L - 4];
  if (new Set(dflt).size === 3 && dflt.every((l) => l >= 0 && l < L)) return null;
  return [...new Set([0, Math.floor((L - 1) / 2), L - 1])];
}

function writeRecipe(l: RunLayout, data: { train: string; eval: string }): void {
  const recipe = {
    model: { target: l.modelDir, aux_layer_ids: auxLayers(shape.layers), draft_vocab_size: 16000 },
    data: {
      train: data.train,
      eval: data.eval,
      format: 'sharegpt',
      template: 'qwen3-thinking',
      max_length: MAX_LENGTH,
      answer_extractor: 'none',
      store: l.store,
      cache_dir: l.cacheDir,
    },
    capture: { batch_size: 1, dtype: 'float16', limit: samples },
    training: {
      mode: 'offline',
      // Enough epochs that max_steps decides (batch 1 on one rank: one step per sample).
      num_epochs: Math.ceil(steps / samples) + 1,
      max_steps: steps,
      batch_size: 1,
      learning_rate: 1e-4,
      ttt_length: 7,
      output_dir: l.checkpoints,
      run_id: path.basename(l.trainRun),
      save_interval: steps,
      keep_last: 1,
      log_interval: Math.max(1, Math.min(5, steps)),
      eval_interval: steps,
      eval_samples: evalPrompts,
    },
    parallel: { workers: WORKERS },
    eval: { draft_steps: 7, temperature: 0, max_new_tokens: 64, limit: evalPrompts },
    runtime: { backend: 'auto', seed, ...(opt.engine ? { target_engine: opt.engine } : {}) },
  };
  const header = `# Written by bench/scale.ts (npm run bench:scale); rewritten on every run.\n`;
  fs.writeFileSync(l.recipe, header + YAML.stringify(recipe));
}

// ---------------------------------------------------------------------------------------------------

const log = (m: string) => console.log(m);
fs.mkdirSync(cache, { recursive: true });
const model = ensureModel(cache, shape, seed, log);
log(
  `model ${model.dir}: ${(model.parameters / 1e6).toFixed(1)}M parameters, ${(model.bytes / 1e9).toFixed(3)} GB bf16` +
    (model.reused ? ' (cached)' : `, written in ${model.seconds.toFixed(1)} s`),
);
if (opt['model-only']) process.exit(0);

// Runs with different settings keep their own folders (stores and checkpoints are not comparable across them).
const runName = `${modelName(shape, seed)}-n${samples}${MAX_LENGTH === 2048 ? '' : `-len${MAX_LENGTH}`}${opt.engine ? `-${opt.engine}` : ''}`;
const l = runLayout(path.join(cache, 'runs', runName), model.dir);
fs.mkdirSync(l.root, { recursive: true });
const t0 = performance.now();
const data = writeConversations(path.join(l.root, 'data'), model.dir, {
  seed,
  train: samples,
  eval: evalPrompts,
  minTokens: MIN_TOKENS,
  maxTokens: MAX_LENGTH,
});
const st = (s: typeof data.trainStats) =>
  `${s.count} conversations, ${s.minTokens}-${s.maxTokens} tokens (mean ${s.meanTokens.toFixed(0)}), ${s.meanTurns.toFixed(1)} turns` +
  (s.overMax ? `, ${s.overMax} longer than ${MAX_LENGTH} (cut)` : '');
log(
  `data (qwen3-thinking, Qwen3 tokenizer; ${((performance.now() - t0) / 1000).toFixed(1)} s): train ${st(data.trainStats)}; eval ${st(data.evalStats)}`,
);
writeRecipe(l, data);
log(`recipe ${l.recipe}${opt.engine ? ` (runtime.target_engine: ${opt.engine})` : ''}`);

/** Why a stage failed, in words: GNU time exits 128 + N when the command died of signal N. */
function failure(run: { code: number | null; signal: string | null; timedOut: boolean; wallSeconds: number }): string {
  if (run.timedOut) return `timed out after ${(run.wallSeconds / 60).toFixed(1)} min (killed)`;
  if (run.signal) return `killed by ${run.signal}`;
  if (run.code !== null && run.code > 128)
    return `exit ${run.code} (signal ${run.code - 128}${run.code === 137 ? ', SIGKILL: out of memory?' : ''})`;
  return `exit ${run.code}`;
}

// The CLI as `npx tsx src/cli/main.ts` runs it, without npx's extra npm process in the measured tree.
const tsx = path.join(REPO, 'node_modules', '.bin', 'tsx');
const cli = path.join(REPO, 'src', 'cli', 'main.ts');
const results: StageResult[] = [];
const failed = new Set<StageName>();
// A stage skipped when one it reads from failed in this run (rather than, say, train capturing by itself).
const needs: Record<StageName, StageName[]> = { capture: [], train: ['capture'], eval: ['train'], export: ['train'] };

for (const stage of STAGES.filter((s) => stages.includes(s))) {
  const blank: StageResult = {
    stage,
    ok: false,
    status: '',
    wallSeconds: null,
    tokensPerSecond: null,
    peakRssMiB: null,
    rssSource: null,
    polledRssMiB: null,
    notes: [],
    details: {},
  };
  const blocker = needs[stage].find((s) => failed.has(s));
  if (blocker || ((stage === 'eval' || stage === 'export') && !latestCheckpoint(l))) {
    failed.add(stage);
    results.push({ ...blank, status: blocker ? `skipped: ${blocker} failed` : 'skipped: no trained checkpoint (run train)' });
    log(`\n== ${stage}: ${results[results.length - 1].status}`);
    continue;
  }
  const { args, clean } = stageCommand(stage, l, opt.backend);
  for (const d of clean) fs.rmSync(d, { recursive: true, force: true });
  log(`\n== ${stage}: tsx src/cli/main.ts ${args.join(' ')}`);
  const run = await runStage(stage, tsx, [cli, ...args], { cwd: REPO, logDir: l.logs, timeoutSeconds: stageTimeout });
  const ok = run.code === 0;
  const res: StageResult = {
    ...blank,
    ok,
    status: ok ? 'ok' : failure(run),
    wallSeconds: run.wallSeconds,
    peakRssMiB: run.peakRssMiB,
    rssSource: run.rssSource,
    polledRssMiB: run.polledRssMiB,
  };
  try {
    collectFigures(stage, l, run, res);
  } catch (e) {
    res.notes.push(`figures unreadable: ${(e as Error).message}`);
  }
  if (!ok) {
    failed.add(stage);
    // tfjs-backend-wasm aborts this way when its heap (at most 4 GiB) cannot grow.
    if (/Aborted\(\)/.test(run.stderr)) res.notes.unshift('WebAssembly abort (heap limit 4 GiB?)');
    const tail = run.stderr.split('\n').filter(Boolean).slice(-25);
    log(`== ${stage} FAILED (${res.status}); stderr tail:\n${tail.map((s) => `   | ${s}`).join('\n') || '   | (no stderr output)'}`);
  }
  log(
    `== ${stage}: ${res.status}, ${run.wallSeconds.toFixed(1)} s, peak RSS ${res.peakRssMiB?.toFixed(0) ?? 'n/a'} MiB (${res.rssSource ?? 'unmeasured'}; /proc poll ${res.polledRssMiB?.toFixed(0) ?? 'n/a'})`,
  );
  results.push(res);
}

log(`\n${formatTable(results)}`);
const ev = results.find((r) => r.stage === 'eval' && r.ok);
if (ev && ev.details.draftMsPerStep == null)
  log(
    `eval: draft-step latency n/a: report.json has draftSeconds but no count of draft forwards (draftSeconds also holds the context extends); ` +
      `per verify pass: ${typeof ev.details.draftMsPerPass === 'number' ? `${ev.details.draftMsPerPass.toFixed(1)} ms of drafting` : 'n/a'}`,
  );

const out = path.join(l.root, 'results.json');
const summary = {
  finishedAt: new Date().toISOString(),
  shape,
  model: { dir: model.dir, parameters: model.parameters, bytes: model.bytes, writeSeconds: model.reused ? null : model.seconds },
  engine: opt.engine ?? null,
  backend: opt.backend ?? null,
  samples,
  evalPrompts,
  maxLength: MAX_LENGTH,
  steps,
  seed,
  data: { train: data.trainStats, eval: data.evalStats },
  recipe: l.recipe,
  stages: results,
};
fs.writeFileSync(out, JSON.stringify(summary, null, 2) + '\n');
// One line per run across all settings, so that runs before and after a change (tfjs -> ort) sit side by side.
fs.appendFileSync(path.join(cache, 'history.jsonl'), JSON.stringify({ run: runName, ...summary }) + '\n');
log(`results: ${out} (and a line in ${path.join(cache, 'history.jsonl')})`);
process.exit(failed.size ? 1 : 0);
