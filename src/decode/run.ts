// The eval job of a recipe (`specforge eval`): load the target and a draft checkpoint (or an exported ONNX
// draft, run by ONNX Runtime), decode each prompt speculatively and with plain greedy `generate`
// (evaluate.ts), optionally compare SpecExit (specexit-compare.ts), and write report.json and
// acceptance.svg.
import fs from 'node:fs';
import path from 'node:path';
import { activeBackend } from '../backend/backend.ts';
import type { AnswerExtractor } from '../data/answers.ts';
import { endOfTurnIds, type TemplateName } from '../data/templates.ts';
import { loadDraftCheckpoint } from '../draft/load.ts';
import { loadTokenizer } from '../io/tokenizer.ts';
import type { Recipe } from '../recipe/recipe.ts';
import type { TargetModel } from '../target/runtime.ts';
import { loadRecipeTarget } from '../target/load.ts';
import { chooseCheckpoint } from '../train/checkpoint.ts';
import { runDirOf } from '../train/run-dir.ts';
import { type DecodeSettings, evaluatePrompts } from './evaluate.ts';
import { OnnxDrafter } from './onnx-drafter.ts';
import { type EvalPrompt, readPromptFile, readRecipePrompts, tokenizePrompts } from './prompts.ts';
import { acceptanceSvg, buildReport, type EvalReport, reportTable } from './report.ts';
import { type SpecExitSummary, specExitComparison } from './specexit-compare.ts';
import { Eagle3Drafter } from './tfjs-drafter.ts';
import { parseTreeShape, type TreeShape } from './tree.ts';

export interface EvalJobOptions {
  /** A draft checkpoint folder (default: the recipe run's step-best, else its newest step-*). */
  checkpoint?: string;
  /** An exported ONNX draft folder (export-onnx --format onnx) run by ONNX Runtime instead of the checkpoint. */
  draftOnnx?: string;
  /** MT-bench / GSM8K / conversation JSONL instead of the recipe's data.eval. */
  input?: string;
  /** Output folder (default <run dir>/eval). */
  out?: string;
  log?: (msg: string) => void;
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
  const chosen = onnxDir || o.checkpoint ? null : chooseCheckpoint(runDir);
  const checkpoint = onnxDir ?? (o.checkpoint ? path.resolve(o.checkpoint) : chosen?.dir);
  if (chosen) log(`checkpoint: the run's ${chosen.best ? 'best (step-best)' : 'newest (it has no step-best)'}, ${chosen.dir}`);
  if (!checkpoint)
    throw new Error(`no checkpoint under ${runDir}: train first (specforge train --recipe ${path.basename(r.file)}) or pass --checkpoint`);
  const template = r.data.template as TemplateName;

  const tok = loadTokenizer(r.model.target);
  const target = await loadRecipeTarget(r, { log });
  let opened: OpenedDrafter | null = null;
  try {
    opened = openDrafter(checkpoint, onnxDir !== null, target, r.model.target);
    const tc = target.config;

    let prompts: EvalPrompt[];
    if (o.input) prompts = await readPromptFile(path.resolve(o.input), e.limit);
    else {
      if (!r.data.eval) throw new Error(`${r.file}: data.eval is not set; give prompts with --input (MT-bench questions or GSM8K JSONL)`);
      prompts = await readRecipePrompts(r.data.eval, { format: r.data.format, skipInvalid: r.data.skip_invalid, limit: e.limit });
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

    const active = opened.drafter;
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
          hasHeads: opened.specExit,
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
      targetEngine: r.runtime.target_engine,
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
    opened?.dispose();
    target.dispose();
  }
}

interface OpenedDrafter {
  drafter: Eagle3Drafter | OnnxDrafter;
  /** Whether the draft has SpecExit signal heads. */
  specExit: boolean;
  /** Disposes the drafter and the draft weights behind it (not the target). */
  dispose(): void;
}

/**
 * The draft at `checkpoint` (an exported ONNX folder when `onnx`, run by ONNX Runtime; else a checkpoint,
 * run by tfjs), checked against the target it drafts for (`targetName` names it in errors).
 */
function openDrafter(checkpoint: string, onnx: boolean, target: TargetModel, targetName: string): OpenedDrafter {
  let drafter: Eagle3Drafter | OnnxDrafter | null = null;
  let loaded: ReturnType<typeof loadDraftCheckpoint> | null = null;
  const dispose = () => {
    drafter?.dispose();
    loaded?.draft.dispose();
  };
  try {
    const tc = target.config;
    let dc: { vocabSize: number; targetHiddenSize: number; hiddenSize: number; auxLayerIds: number[]; specExit: boolean };
    if (onnx) {
      drafter = new OnnxDrafter(checkpoint, target.embeddings());
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
        `${checkpoint}: a draft for a target with vocabulary ${dc.vocabSize} and hidden size ${dc.targetHiddenSize}; ${targetName} has ${tc.vocabSize} and ${tc.hiddenSize}`,
      );
    }
    const badLayer = dc.auxLayerIds.find((l) => !(Number.isInteger(l) && l >= 0 && l < tc.numLayers));
    if (badLayer !== undefined) throw new Error(`${checkpoint}: aux layer ${badLayer} outside the target's ${tc.numLayers} layers`);
    if (dc.hiddenSize !== tc.hiddenSize)
      throw new Error(`${checkpoint}: draft hidden size ${dc.hiddenSize} differs from the target embedding width ${tc.hiddenSize}`);
    if (loaded) drafter = new Eagle3Drafter(loaded.draft, target.embeddings(), loaded.used);
    return { drafter: drafter!, specExit: dc.specExit, dispose };
  } catch (err) {
    dispose();
    throw err;
  }
}
