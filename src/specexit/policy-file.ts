// The stored exit policy: the rule `specforge eval --specexit --calibrate` chose, as JSON. It lives beside
// the checkpoint (<checkpoint>/specexit/policy.json), in the exported SpecExit folder (specexit/policy.json)
// and in the exported ONNX draft's draft.json (field specexit_policy); decoding takes it by default.
import fs from 'node:fs';
import path from 'node:path';
import { writeAtomic } from '../io/atomic.ts';
import { readJsonObject } from '../io/json-file.ts';
import { type ExitRule, REFERENCE_EXIT } from './policy.ts';

export const POLICY_FORMAT = 'specforge-specexit-policy';
/** The policy file of a checkpoint folder, and of an exported SpecExit folder, relative to it. */
export const CHECKPOINT_POLICY_FILE = path.join('specexit', 'policy.json');
export const EXPORT_POLICY_FILE = 'policy.json';

/** The JSON form of an exit rule (a null threshold: that signal is not used). */
export interface ExitPolicyJson {
  format: typeof POLICY_FORMAT;
  alpha: number;
  seeding: ExitRule['seeding'];
  min_confidence: number | null;
  min_progress: number | null;
  max_remaining: number | null;
  close: ExitRule['close'];
  /** How calibration chose it (free-form figures for readers; not read back). */
  calibration?: Record<string, unknown>;
}

export function policyJson(rule: ExitRule, calibration?: Record<string, unknown>): ExitPolicyJson {
  return {
    format: POLICY_FORMAT,
    alpha: rule.alpha,
    seeding: rule.seeding,
    min_confidence: rule.minConfidence,
    min_progress: rule.minProgress,
    max_remaining: rule.maxRemaining,
    close: rule.close,
    ...(calibration ? { calibration } : {}),
  };
}

/** The rule in a policy object; `where` (a file, or file and field) names it in errors. */
export function parsePolicy(v: unknown, where: string): ExitRule {
  if (typeof v !== 'object' || v === null || Array.isArray(v))
    throw new Error(`${where}: expected a SpecExit policy (a JSON object), got ${JSON.stringify(v)?.slice(0, 40)}`);
  const o = v as Record<string, unknown>;
  if (o.format !== POLICY_FORMAT) throw new Error(`${where}: format is ${JSON.stringify(o.format)}; expected "${POLICY_FORMAT}"`);
  const num = (key: string, ok: (x: number) => boolean, want: string, nullable: boolean): number | null => {
    const x = o[key];
    if (x === null && nullable) return null;
    if (typeof x !== 'number' || !Number.isFinite(x) || !ok(x))
      throw new Error(`${where}: field '${key}' is ${JSON.stringify(x)}; expected ${want}${nullable ? ' or null (not used)' : ''}`);
    return x;
  };
  if (o.seeding !== 'first' && o.seeding !== 'debiased')
    throw new Error(`${where}: field 'seeding' is ${JSON.stringify(o.seeding)}; expected "first" or "debiased"`);
  if (o.close !== 'after-split' && o.close !== 'replace-split')
    throw new Error(`${where}: field 'close' is ${JSON.stringify(o.close)}; expected "after-split" or "replace-split"`);
  return {
    alpha: num('alpha', (x) => x > 0 && x <= 1, 'a number in (0, 1]', false)!,
    seeding: o.seeding,
    minConfidence: num('min_confidence', () => true, 'a number', true),
    minProgress: num('min_progress', () => true, 'a number', true),
    maxRemaining: num('max_remaining', () => true, 'a number', true),
    close: o.close,
  };
}

export function readPolicyFile(file: string): ExitRule {
  return parsePolicy(readJsonObject(file, 'a SpecExit policy'), file);
}

export function writePolicyFile(file: string, rule: ExitRule, calibration?: Record<string, unknown>): void {
  writeAtomic(file, [JSON.stringify(policyJson(rule, calibration), null, 2) + '\n']);
}

/** The policy stored beside a checkpoint (null when none was calibrated). */
export function checkpointPolicy(checkpoint: string): ExitRule | null {
  const file = path.join(checkpoint, CHECKPOINT_POLICY_FILE);
  return fs.existsSync(file) ? readPolicyFile(file) : null;
}

/** Names of the policies decoding can be asked for (eval.exit_policy). */
export type PolicyChoice = 'auto' | 'calibrated' | 'reference' | 'recipe';

/**
 * The rule decoding uses: `calibrated` the stored one (an error when there is none), `reference`
 * SpecExit's, `recipe` eval.exit_alpha / eval.exit_thresholds, `auto` the stored one when there is one,
 * else the recipe's.
 */
export function resolvePolicy(
  choice: PolicyChoice,
  stored: { rule: ExitRule | null; where: string },
  recipe: { alpha: number; thresholds: number[] },
): { rule: ExitRule; source: string } {
  const fromRecipe = (): ExitRule => ({
    alpha: recipe.alpha,
    seeding: 'first',
    minConfidence: recipe.thresholds[0],
    minProgress: recipe.thresholds[1],
    maxRemaining: recipe.thresholds[2],
    close: 'after-split',
  });
  switch (choice) {
    case 'reference':
      return { rule: REFERENCE_EXIT, source: 'reference (SpecExit: alpha 0.1, confidence > 0.8, progress > 0.3, remaining < 200)' };
    case 'recipe':
      return { rule: fromRecipe(), source: 'recipe (eval.exit_alpha, eval.exit_thresholds)' };
    case 'calibrated':
      if (!stored.rule)
        throw new Error(
          `${stored.where}: no calibrated SpecExit policy; run specforge eval --specexit --calibrate first, or pick eval.exit_policy reference or recipe`,
        );
      return { rule: stored.rule, source: `calibrated (${stored.where})` };
    case 'auto':
      return stored.rule
        ? { rule: stored.rule, source: `calibrated (${stored.where})` }
        : { rule: fromRecipe(), source: 'recipe (eval.exit_alpha, eval.exit_thresholds; no calibrated policy stored)' };
  }
}

/** A rule in one line, for logs. */
export function describeRule(r: ExitRule): string {
  const parts = [
    r.minConfidence === null ? null : `confidence > ${r.minConfidence}`,
    r.minProgress === null ? null : `progress > ${r.minProgress}`,
    r.maxRemaining === null ? null : `remaining < ${r.maxRemaining}`,
  ].filter(Boolean);
  return `EWMA alpha ${r.alpha} (${r.seeding}-seeded), exit at a step split when ${parts.length ? parts.join(', ') : 'always (no signal used)'}, close ${r.close}`;
}
