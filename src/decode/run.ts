// The eval job of a recipe (`specforge eval`): load the target and a draft checkpoint (or an exported ONNX
// draft, run by ONNX Runtime), decode each prompt speculatively and with plain greedy `generate` (same
// backend, same run, alternating per prompt), and write report.json and acceptance.svg.
import fs from 'node:fs';
import path from 'node:path';
import { activeBackend } from '../backend/backend.ts';
import { endOfTurnIds, type TemplateName } from '../data/templates.ts';
import { loadDraftCheckpoint } from '../draft/load.ts';
import { loadTokenizer } from '../io/tokenizer.ts';
import type { Recipe } from '../recipe/recipe.ts';
import { generate } from '../target/generate.ts';
import type { TargetModel } from '../target/runtime.ts';
import { TfjsTarget } from '../target/tfjs-target.ts';
import { listCheckpoints } from '../train/checkpoint.ts';
import { runDirOf } from '../train/run-dir.ts';
import { Rng } from '../util/random.ts';
import { type AnswerExtractor, extractAnswer } from '../data/answers.ts';
import { ExitPolicy, type ExitSignals } from '../specexit/policy.ts';
import type * as tf from '@tensorflow/tfjs';
import type { Tokenizer } from '../io/tokenizer.ts';
import { type EvalPrompt, type TokenizedPrompt, readPromptFile, readRecipePrompts, tokenizePrompts } from './prompts.ts';
import { type EvalReport, type PromptRecord, acceptanceSvg, buildReport, reportTable } from './report.ts';
import { OnnxDrafter } from './onnx-drafter.ts';
import { type Drafter, Eagle3Drafter, type SpecOptions, type TreeShape, parseTreeShape, speculativeDecode } from './speculative.ts';

export interface EvalJobOptions {
  /** A draft checkpoint folder (default: the newest step-* of the recipe's run). */
  checkpoint?: string;
  /** An exported ONNX draft folder (export-onnx --format onnx) run by ONNX Runtime instead of the checkpoint. */
  draftOnnx?: string;
  /** MT-bench / GSM8K / conversation JSONL instead of the recipe's data.eval. */
  input?: string;
  /** Output folder (default <run dir>/eval). */
  out?: string;
  log?: (msg: string) => void;
}

export interface DecodeSettings {
  draftSteps: number;
  tree: TreeShape | null;
  temperature: number;
  topP: number;
  maxNewTokens: number;
  stopIds: number[];
  seed: number;
}

/**
 * Decodes every prompt speculatively and plainly (greedy, KV cache), alternating so that both see the same
 * machine state; one short warm-up of each first (kernels, allocations), not counted.
 */
export function evaluatePrompts(
  target: TargetModel,
  drafter: Drafter,
  prompts: TokenizedPrompt[],
  s: DecodeSettings,
  onPrompt: (i: number, r: PromptRecord) => void = () => {},
): PromptRecord[] {
  const spec = (ids: number[], maxNewTokens: number, seed: number) =>
    speculativeDecode(target, drafter, ids, {
      maxNewTokens,
      stopIds: s.stopIds,
      draftSteps: s.draftSteps,
      tree: s.tree,
      temperature: s.temperature,
      topP: s.topP,
      rng: new Rng(seed),
    } satisfies SpecOptions);
  const plain = (ids: number[], maxNewTokens: number) => {
    const t0 = performance.now();
    const tokens = generate(target, [ids], { maxNewTokens, stopIds: s.stopIds })[0];
    return { tokens, seconds: (performance.now() - t0) / 1000 };
  };
  if (prompts.length) {
    const warm = Math.min(8, s.maxNewTokens);
    spec(prompts[0].ids, warm, s.seed);
    plain(prompts[0].ids, warm);
  }
  return prompts.map((p, i) => {
    const record: PromptRecord = {
      id: p.id,
      category: p.category,
      promptTokens: p.ids.length,
      spec: spec(p.ids, s.maxNewTokens, s.seed + i),
      plain: plain(p.ids, s.maxNewTokens),
    };
    onPrompt(i, record);
    return record;
  });
}

/** Runs the eval of a recipe (the backend is initialised by the caller). */
export async function runEval(r: Recipe, o: EvalJobOptions = {}): Promise<{ report: EvalReport; outDir: string }> {
  const log = o.log ?? (() => {});
  const e = r.eval;
  let tree: TreeShape | null = null;
  if (e.tree !== null) {
    try {
      tree = parseTreeShape(e.tree);
    } catch (err) {
      throw new Error(`${r.file}: field 'eval.tree': ${(err as Error).message}`);
    }
  }
  const runDir = runDirOf(r);
  const onnxDir = o.draftOnnx ? path.resolve(o.draftOnnx) : null;
  const checkpoint = onnxDir ?? (o.checkpoint ? path.resolve(o.checkpoint) : listCheckpoints(runDir).pop());
  if (!checkpoint)
    throw new Error(`no checkpoint under ${runDir}: train first (specforge train --recipe ${path.basename(r.file)}) or pass --checkpoint`);
  const template = r.data.template as TemplateName;

  const tok = loadTokenizer(r.model.target);
  const target = TfjsTarget.load(r.model.target);
  // The draft: a checkpoint run by tfjs, or an exported ONNX file run by ONNX Runtime.
  let drafter: Eagle3Drafter | OnnxDrafter | null = null;
  let loaded: ReturnType<typeof loadDraftCheckpoint> | null = null;
  try {
    const tc = target.config;
    let dc: { vocabSize: number; targetHiddenSize: number; hiddenSize: number; auxLayerIds: number[]; specExit: boolean };
    if (onnxDir) {
      drafter = new OnnxDrafter(onnxDir, target.embeddings());
      const i = drafter.info;
      dc = {
        vocabSize: i.vocab_size,
        targetHiddenSize: i.target_hidden_size,
        hiddenSize: i.hidden_size,
        auxLayerIds: i.aux_layer_ids,
        specExit: i.specexit,
      };
    } else {
      loaded = loadDraftCheckpoint(checkpoint);
      dc = { ...loaded.config, specExit: Boolean(loaded.config.specExit) };
    }
    if (dc.vocabSize !== tc.vocabSize || dc.targetHiddenSize !== tc.hiddenSize) {
      throw new Error(
        `${checkpoint}: a draft for a target with vocabulary ${dc.vocabSize} and hidden size ${dc.targetHiddenSize}; ${r.model.target} has ${tc.vocabSize} and ${tc.hiddenSize}`,
      );
    }
    const badLayer = dc.auxLayerIds.find((l) => !(Number.isInteger(l) && l >= 0 && l < tc.numLayers));
    if (badLayer !== undefined) throw new Error(`${checkpoint}: aux layer ${badLayer} outside the target's ${tc.numLayers} layers`);
    if (dc.hiddenSize !== tc.hiddenSize)
      throw new Error(`${checkpoint}: draft hidden size ${dc.hiddenSize} differs from the target embedding width ${tc.hiddenSize}`);
    if (loaded) drafter = new Eagle3Drafter(loaded.draft, target.embeddings(), loaded.used);

    let prompts: EvalPrompt[];
    if (o.input) prompts = await readPromptFile(path.resolve(o.input), e.limit);
    else {
      if (!r.data.eval) throw new Error(`${r.file}: data.eval is not set; give prompts with --input (MT-bench questions or GSM8K JSONL)`);
      prompts = await readRecipePrompts(r.data.eval, { format: r.data.format as never, skipInvalid: r.data.skip_invalid, limit: e.limit });
    }
    if (!prompts.length) throw new Error(`no prompts in ${o.input ?? r.data.eval!.join(', ')}`);
    const tokenized = tokenizePrompts(prompts, tok, template);
    const stopIds = [...new Set([...endOfTurnIds(tok, template), ...tc.eosTokenIds])];
    const settings: DecodeSettings = {
      draftSteps: e.draft_steps,
      tree,
      temperature: e.temperature,
      topP: e.top_p,
      maxNewTokens: e.max_new_tokens,
      stopIds,
      seed: r.runtime.seed,
    };
    const mode = tree ? `tree topk ${tree.topk}, depth ${tree.depth}, ${tree.tokens} tokens` : `chain of ${e.draft_steps}`;
    log(
      `eval: ${tokenized.length} prompts, ${mode}, temperature ${e.temperature}${e.temperature > 0 && e.top_p < 1 ? `, top-p ${e.top_p}` : ''}, up to ${e.max_new_tokens} new tokens; draft ${checkpoint}`,
    );

    const active = drafter!;
    const records = evaluatePrompts(target, active, tokenized, settings, (i, rec) => {
      rec.text = tok.decode(rec.spec.tokens);
      const s = rec.spec;
      log(
        `[${i + 1}/${tokenized.length}] ${rec.id}: ${s.tokens.length} tokens, ${s.verifyPasses} passes, tau ${s.tau === null ? '-' : s.tau.toFixed(2)}; ${(s.tokens.length / s.seconds).toFixed(1)} tok/s speculative, ${(rec.plain.tokens.length / rec.plain.seconds).toFixed(1)} tok/s plain`,
      );
    });
    const specexit = e.specexit
      ? specExitComparison(target, active, tokenized, records, settings, {
          tok,
          extractor: r.data.answer_extractor as AnswerExtractor,
          alpha: e.exit_alpha,
          thresholds: e.exit_thresholds,
          checkpoint,
          hasHeads: dc.specExit,
          log,
        })
      : null;
    const report: EvalReport & { specexit?: SpecExitSummary } = buildReport(records, {
      mode: tree ? 'tree' : 'chain',
      draftSteps: tree ? null : e.draft_steps,
      tree,
      temperature: e.temperature,
      topP: e.top_p,
      maxNewTokens: e.max_new_tokens,
      seed: r.runtime.seed,
      backend: activeBackend() ?? null,
      target: r.model.target,
      checkpoint,
      drafter: onnxDir ? 'onnx' : 'tfjs',
      prompts: o.input ? path.resolve(o.input) : r.data.eval,
      template,
      stopIds,
    });
    if (specexit) report.specexit = specexit;
    const outDir = path.resolve(o.out ?? path.join(runDir, 'eval'));
    fs.mkdirSync(outDir, { recursive: true });
    fs.writeFileSync(path.join(outDir, 'report.json'), JSON.stringify(report, null, 2) + '\n');
    fs.writeFileSync(path.join(outDir, 'acceptance.svg'), acceptanceSvg(report, `Acceptance per draft position (${mode})`));
    log(reportTable(report));
    if (specexit) {
      log(
        `SpecExit on ${specexit.prompts} prompts: ${specexit.exits} early exits; reasoning tokens per answer ${specexit.reasoningTokens.full.toFixed(1)} -> ${specexit.reasoningTokens.exit.toFixed(1)} (${(100 * specexit.reasoningSaved).toFixed(1)}% saved)`,
      );
      if (specexit.accuracy)
        log(
          `answer accuracy ${(100 * specexit.accuracy.full).toFixed(1)}% without exit, ${(100 * specexit.accuracy.exit).toFixed(1)}% with exit (${specexit.accuracy.of} prompts with a reference answer)`,
        );
    }
    log(`wrote ${path.join(outDir, 'report.json')} and acceptance.svg`);
    return { report, outDir };
  } finally {
    drafter?.dispose();
    loaded?.draft.dispose();
    target.dispose();
  }
}

export interface SpecExitSummary {
  prompts: number;
  exits: number;
  /** Mean tokens up to and including </think> (the whole output when thinking never closes). */
  reasoningTokens: { full: number; exit: number };
  reasoningSaved: number;
  /** Answer accuracy against the reference reply's answer, without and with exits. */
  accuracy: { full: number; exit: number; of: number } | null;
  tauWithExit: number | null;
  thresholds: { confidence: number; progress: number; remaining: number; alpha: number };
}

/**
 * Decodes every prompt again with the SpecExit exit policy and compares it with the plain speculative run:
 * reasoning tokens, answer accuracy, exits taken.
 */
function specExitComparison(
  target: TargetModel,
  drafter: Drafter & { signals(features: tf.Tensor3D): ExitSignals[] },
  prompts: TokenizedPrompt[],
  records: PromptRecord[],
  s: DecodeSettings,
  o: {
    tok: Tokenizer;
    extractor: AnswerExtractor;
    alpha: number;
    thresholds: number[];
    checkpoint: string;
    hasHeads: boolean;
    log: (m: string) => void;
  },
): SpecExitSummary {
  if (!o.hasHeads) throw new Error(`${o.checkpoint}: this draft has no SpecExit signal heads; train it with training.specexit: true`);
  const think = o.tok.requireId('<think>');
  const endThink = o.tok.requireId('</think>');
  const split = o.tok.encode('\n\n');
  if (split.length !== 1)
    throw new Error(`the tokenizer encodes a paragraph break as ${split.length} tokens; SpecExit needs a single step-split token`);
  const [confidence, progress, remaining] = o.thresholds;
  const reasoning = (tokens: number[]) => (tokens.includes(endThink) ? tokens.indexOf(endThink) + 1 : tokens.length);
  const answerOf = (tokens: number[]) => extractAnswer(o.tok.decode(tokens), o.extractor);
  let exits = 0;
  let full = 0;
  let exited = 0;
  let right = 0;
  let rightExit = 0;
  let judged = 0;
  let passes = 0;
  let verifyTokens = 0;
  prompts.forEach((p, i) => {
    const policy = new ExitPolicy({
      alpha: o.alpha,
      minConfidence: confidence,
      minProgress: progress,
      maxRemaining: remaining,
      splitIds: split,
      thinkId: think,
      endThinkId: endThink,
    });
    const r = speculativeDecode(target, drafter, p.ids, {
      maxNewTokens: s.maxNewTokens,
      stopIds: s.stopIds,
      draftSteps: s.draftSteps,
      tree: s.tree,
      temperature: s.temperature,
      topP: s.topP,
      rng: new Rng(s.seed + i),
      exit: { policy, signals: (f) => drafter.signals(f) },
    });
    exits += r.exits;
    passes += r.verifyPasses;
    verifyTokens += r.verifyTokens;
    full += reasoning(records[i].spec.tokens);
    exited += reasoning(r.tokens);
    const reference = p.reference === undefined ? null : extractAnswer(p.reference, o.extractor);
    if (reference !== null) {
      judged++;
      if (answerOf(records[i].spec.tokens) === reference) right++;
      if (answerOf(r.tokens) === reference) rightExit++;
    }
    o.log(
      `[specexit ${i + 1}/${prompts.length}] ${p.id}: ${r.exits ? 'exit' : 'no exit'}, reasoning ${reasoning(records[i].spec.tokens)} -> ${reasoning(r.tokens)} tokens`,
    );
  });
  const n = Math.max(1, prompts.length);
  return {
    prompts: prompts.length,
    exits,
    reasoningTokens: { full: full / n, exit: exited / n },
    reasoningSaved: full ? 1 - exited / full : 0,
    accuracy: judged ? { full: right / judged, exit: rightExit / judged, of: judged } : null,
    tauWithExit: passes ? verifyTokens / passes : null,
    thresholds: { confidence, progress, remaining, alpha: o.alpha },
  };
}
