// The calibration job of a recipe (`specforge eval --specexit --calibrate`): load the target and the draft,
// choose the exit rule on a calibration split and measure it on a disjoint test split
// (specexit-calibrate.ts), store the rule with the draft (<checkpoint>/specexit/policy.json, or the ONNX
// draft's draft.json), and write calibration.json and tradeoff.svg beside the eval report.
import fs from 'node:fs';
import path from 'node:path';
import type { AnswerExtractor } from '../data/answers.ts';
import { writeAtomic } from '../io/atomic.ts';
import { readJsonObject } from '../io/json-file.ts';
import { loadTokenizer } from '../io/tokenizer.ts';
import type { Recipe } from '../recipe/recipe.ts';
import { CHECKPOINT_POLICY_FILE, describeRule, policyJson, writePolicyFile } from '../specexit/policy-file.ts';
import type { ExitRule } from '../specexit/policy.ts';
import { loadRecipeTarget } from '../target/load.ts';
import { runDirOf } from '../train/run-dir.ts';
import { decodeSettings, type EvalJobOptions, evalDraftFolder, loadEvalPrompts, type OpenedDrafter, openDrafter, treeOf } from './run.ts';
import { type CalibrationReport, calibrateSpecExit, type SplitFigures } from './specexit-calibrate.ts';
import { tradeoffSvg } from './tradeoff-svg.ts';

/** Runs the SpecExit calibration of a recipe (the backend is initialised by the caller). */
export async function runCalibration(
  r: Recipe,
  o: EvalJobOptions = {},
): Promise<{ report: CalibrationReport; outDir: string; policyFile: string }> {
  const log = o.log ?? (() => {});
  const e = r.eval;
  const tree = treeOf(r);
  const { dir, onnx } = evalDraftFolder(r, o, log);
  const tok = loadTokenizer(r.model.target);
  const target = await loadRecipeTarget(r, { log });
  let opened: OpenedDrafter | null = null;
  try {
    opened = openDrafter(dir, onnx, target, r.model.target);
    if (!opened.specExit) throw new Error(`${dir}: this draft has no SpecExit signal heads; train it with training.specexit: true`);
    const prompts = await loadEvalPrompts(r, tok, o.input, e.calibration_prompts);
    const settings = decodeSettings(r, tree, tok, target.config.eosTokenIds);
    log(
      `SpecExit calibration: ${prompts.length} prompts (alternately calibration and test), accuracy budget ${e.exit_accuracy_budget} points; draft ${dir}`,
    );
    const report = calibrateSpecExit(target, opened.drafter, prompts, settings, {
      tok,
      extractor: r.data.answer_extractor as AnswerExtractor,
      budgetPoints: e.exit_accuracy_budget,
      log,
    });
    const summary = {
      prompts: { calibration: report.split.calibration, test: report.split.test },
      accuracy_budget_points: report.accuracyBudgetPoints,
      rules_tried: report.rulesTried,
      calibration: report.chosen.calibration,
      test: report.chosen.testDecoded,
      data: o.input ? path.resolve(o.input) : r.data.eval,
    };
    const policyFile = onnx ? storeInDraftJson(dir, report.chosen.rule, summary) : path.join(dir, CHECKPOINT_POLICY_FILE);
    if (!onnx) writePolicyFile(policyFile, report.chosen.rule, summary);

    const outDir = path.resolve(o.out ?? path.join(runDirOf(r), 'eval'));
    fs.mkdirSync(outDir, { recursive: true });
    writeAtomic(path.join(outDir, 'calibration.json'), [JSON.stringify({ draft: dir, policyFile, ...report }, null, 2) + '\n']);
    writeAtomic(path.join(outDir, 'tradeoff.svg'), [tradeoffSvg(report)]);
    log(calibrationTable(report));
    log(`stored the policy in ${policyFile}; wrote ${path.join(outDir, 'calibration.json')} and tradeoff.svg`);
    return { report, outDir, policyFile };
  } finally {
    opened?.dispose();
    target.dispose();
  }
}

/** Sets draft.json's specexit_policy (rewritten whole, atomically); returns the file. */
function storeInDraftJson(dir: string, rule: ExitRule, calibration: Record<string, unknown>): string {
  const file = path.join(dir, 'draft.json');
  const info = readJsonObject(file, 'an ONNX draft description');
  info.specexit_policy = policyJson(rule, calibration);
  writeAtomic(file, [JSON.stringify(info, null, 2) + '\n']);
  return file;
}

const pct = (x: number) => `${(100 * x).toFixed(1)}%`;

function line(name: string, f: SplitFigures | null): string {
  if (!f) return `${name.padEnd(56)} no rule within the budget`;
  const acc = f.accuracy ? `accuracy ${pct(f.accuracy.full)} -> ${pct(f.accuracy.exit)}` : 'accuracy -';
  return `${name.padEnd(56)} reasoning ${f.reasoningTokens.full.toFixed(1)} -> ${f.reasoningTokens.exit.toFixed(1)} tokens (${pct(f.reasoningSaved)} saved), ${acc}, ${f.exits} exits`;
}

/** The calibration's result for the terminal. */
export function calibrationTable(r: CalibrationReport): string {
  const c = r.chosen;
  return [
    `chosen (${r.rulesTried} rules tried on ${r.split.calibration} calibration prompts): ${describeRule(c.rule)}`,
    line('calibration split, chosen rule', c.calibration),
    line(`test split (${r.split.test} prompts), chosen rule, decoded`, c.testDecoded),
    line('test split, chosen rule, simulated', c.testSimulated),
    ...r.compared.map((x) => line(`test split, ${x.name}`, x.test)),
    line('test split, bound: best exit per prompt, after-split', r.oracle.afterSplit),
    line('test split, bound: best exit per prompt, replace-split', r.oracle.replaceSplit),
    `the model thinks on after ${r.thinksOn.afterSplit.exits} of ${r.thinksOn.afterSplit.of} after-split exit points, ${r.thinksOn.replaceSplit.exits} of ${r.thinksOn.replaceSplit.of} replace-split ones (test split)`,
    `time per answer on the test split: ${r.secondsPerAnswer.full.toFixed(3)} s full thinking, ${r.secondsPerAnswer.exit.toFixed(3)} s with exits (${pct(r.secondsPerAnswer.saved)} less)`,
    `simulation = decoding on ${r.simulationExact.identical} of ${r.simulationExact.of} test prompts`,
  ].join('\n');
}
