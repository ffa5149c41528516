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
import type { Tokenizer } from '../io/tokenizer.ts';
import { CHECKPOINT_POLICY_FILE, checkpointPolicy, describeRule, resolvePolicy } from '../specexit/policy-file.ts';
import type { ExitRule } from '../specexit/policy.ts';
import type { TargetModel } from '../target/runtime.ts';
import { loadRecipeTarget } from '../target/load.ts';
import { exportDraftOnnx } from '../export/onnx.ts';
import { chooseCheckpoint } from '../train/checkpoint.ts';
import { runDirOf } from '../train/run-dir.ts';
import { type DecodeSettings, evaluatePrompts } from './evaluate.ts';
import { OnnxDrafter } from './onnx-drafter.ts';
import { type EvalPrompt, readPromptFile, readRecipePrompts, type TokenizedPrompt, tokenizePrompts } from './prompts.ts';
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
  const tree = treeOf(r);
  const runDir = runDirOf(r);
  const { dir: checkpoint, onnx } = evalDraftFolder(r, o, log);
  const template = r.data.template as TemplateName;

  const tok = loadTokenizer(r.model.target);
  const target = await loadRecipeTarget(r, { log });
  let opened: OpenedDrafter | null = null;
  try {
    opened = openDrafter(checkpoint, onnx, target, r.model.target);
    const tc = target.config;

    const tokenized = await loadEvalPrompts(r, tok, o.input, e.limit);
    const settings = decodeSettings(r, tree, tok, tc.eosTokenIds);
    const stopIds = settings.stopIds;
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
    let specexit: SpecExitSummary | null = null;
    if (e.specexit) {
      const { rule, source } = resolvePolicy(e.exit_policy, opened.storedPolicy, { alpha: e.exit_alpha, thresholds: e.exit_thresholds });
      log(`SpecExit policy: ${source}: ${describeRule(rule)}`);
      specexit = specExitComparison(target, active, tokenized, records, settings, {
        tok,
        extractor: r.data.answer_extractor as AnswerExtractor,
        rule,
        policySource: source,
        checkpoint,
        hasHeads: opened.specExit,
        log,
      });
    }
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
      drafter: onnx ? 'onnx' : 'tfjs',
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
      log(
        `time per answer ${specexit.secondsPerAnswer.full.toFixed(3)} s without exit, ${specexit.secondsPerAnswer.exit.toFixed(3)} s with exit`,
      );
    }
    log(`wrote ${path.join(outDir, 'report.json')} and acceptance.svg`);
    return { report, outDir };
  } finally {
    opened?.dispose();
    target.dispose();
  }
}

/** The recipe's held-out prompts (or an --input file's), at most `limit`, tokenized with the recipe's template. */
export async function loadEvalPrompts(
  r: Recipe,
  tok: Tokenizer,
  input: string | undefined,
  limit: number | null,
): Promise<TokenizedPrompt[]> {
  let prompts: EvalPrompt[];
  if (input) prompts = await readPromptFile(path.resolve(input), limit);
  else {
    if (!r.data.eval) throw new Error(`${r.file}: data.eval is not set; give prompts with --input (MT-bench questions or GSM8K JSONL)`);
    prompts = await readRecipePrompts(r.data.eval, { format: r.data.format, skipInvalid: r.data.skip_invalid, limit });
  }
  if (!prompts.length) throw new Error(`no prompts in ${input ?? r.data.eval!.join(', ')}`);
  return tokenizePrompts(prompts, tok, r.data.template as TemplateName);
}

/** The recipe's decoding settings (eval.*), stopping at the template's end of turn and the target's eos. */
export function decodeSettings(r: Recipe, tree: TreeShape | null, tok: Tokenizer, eosTokenIds: number[]): DecodeSettings {
  const e = r.eval;
  return {
    draftSteps: e.draft_steps,
    tree,
    temperature: e.temperature,
    topP: e.top_p,
    maxNewTokens: e.max_new_tokens,
    stopIds: [...new Set([...endOfTurnIds(tok, r.data.template as TemplateName), ...eosTokenIds])],
    seed: r.runtime.seed,
  };
}

/** eval.tree as a shape (null: a chain); a bad value names the field. */
export function treeOf(r: Recipe): TreeShape | null {
  if (r.eval.tree === null) return null;
  try {
    return parseTreeShape(r.eval.tree);
  } catch (err) {
    throw new Error(`${r.file}: field 'eval.tree': ${(err as Error).message}`);
  }
}

/** The draft folder eval decodes with: --draft-onnx, --checkpoint, or the run's step-best (else newest). */
export function evalDraftFolder(r: Recipe, o: EvalJobOptions, log: (m: string) => void): { dir: string; onnx: boolean } {
  const runDir = runDirOf(r);
  const onnxDir = o.draftOnnx ? path.resolve(o.draftOnnx) : null;
  const chosen = onnxDir || o.checkpoint ? null : chooseCheckpoint(runDir);
  const checkpoint = onnxDir ?? (o.checkpoint ? path.resolve(o.checkpoint) : chosen?.dir);
  if (chosen) log(`checkpoint: the run's ${chosen.best ? 'best (step-best)' : 'newest (it has no step-best)'}, ${chosen.dir}`);
  if (!checkpoint)
    throw new Error(`no checkpoint under ${runDir}: train first (specforge train --recipe ${path.basename(r.file)}) or pass --checkpoint`);
  if (onnxDir === null && r.eval.draft_engine === 'onnx') {
    // Exported once beside the checkpoint; draft.json is written last, so its presence means a whole export.
    const exported = path.join(checkpoint, 'onnx');
    if (!fs.existsSync(path.join(exported, 'draft.json'))) {
      log(`eval.draft_engine onnx: exporting ${checkpoint} to ${exported}`);
      exportDraftOnnx(checkpoint, exported);
    }
    return { dir: exported, onnx: true };
  }
  return { dir: checkpoint, onnx: onnxDir !== null };
}

export interface OpenedDrafter {
  drafter: Eagle3Drafter | OnnxDrafter;
  /** Whether the draft has SpecExit signal heads. */
  specExit: boolean;
  /** The exit policy stored with the draft (by calibration), and where it is (or would be). */
  storedPolicy: { rule: ExitRule | null; where: string };
  /** Disposes the drafter and the draft weights behind it (not the target). */
  dispose(): void;
}

/**
 * The draft at `checkpoint` (an exported ONNX folder when `onnx`, run by ONNX Runtime; else a checkpoint,
 * run by tfjs), checked against the target it drafts for (`targetName` names it in errors).
 */
export function openDrafter(checkpoint: string, onnx: boolean, target: TargetModel, targetName: string): OpenedDrafter {
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
    const storedPolicy = onnx
      ? { rule: (drafter as OnnxDrafter).exitPolicy, where: path.join(checkpoint, 'draft.json') }
      : { rule: checkpointPolicy(checkpoint), where: path.join(checkpoint, CHECKPOINT_POLICY_FILE) };
    return { drafter: drafter!, specExit: dc.specExit, storedPolicy, dispose };
  } catch (err) {
    dispose();
    throw err;
  }
}
