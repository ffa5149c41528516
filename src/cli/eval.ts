// `specforge eval`: wires the arguments to the recipe's eval job (decode/run.ts).
import type { CommandModule } from 'yargs';
import { initBackend } from '../backend/backend.ts';
import { runEval } from '../decode/run.ts';
import { runCalibration } from '../decode/run-calibrate.ts';
import { loadRecipe } from '../recipe/recipe.ts';
import { type CommonArgs, commonOverrides, withBackend, withTargetEngine } from './common.ts';

type Args = CommonArgs & {
  recipe: string;
  checkpoint?: string;
  'draft-onnx'?: string;
  'draft-steps'?: number;
  tree?: string;
  temperature?: number;
  'top-p'?: number;
  'max-new-tokens'?: number;
  limit?: number;
  input?: string;
  out?: string;
  specexit?: boolean;
  calibrate?: boolean;
  'exit-policy'?: string;
};

export const evalCommand: CommandModule<object, Args> = {
  command: 'eval',
  describe: 'Speculative decoding against the target: acceptance length (tau), acceptance per draft position, speedup over plain decoding',
  builder: (y) =>
    withTargetEngine(
      withBackend(
        y
          .option('recipe', { type: 'string', demandOption: true, describe: 'recipe YAML (see recipes/)' })
          .option('checkpoint', {
            type: 'string',
            describe: "draft checkpoint folder (default: the recipe run's step-best, else its newest step-*)",
          })
          .option('draft-onnx', {
            type: 'string',
            describe: 'an exported ONNX draft folder (export-onnx --format onnx), run by ONNX Runtime instead of a checkpoint',
          })
          .option('draft-steps', {
            type: 'number',
            describe:
              'chain drafting: draft tokens per verify pass (overrides eval.draft_steps; a chain even where the recipe sets a tree)',
          })
          .option('tree', { type: 'string', describe: "dynamic tree 'topk,depth,tokens' (overrides eval.tree; 'none' for a chain)" })
          .option('temperature', { type: 'number', describe: '0 = greedy; > 0 = speculative sampling (overrides eval.temperature)' })
          .option('top-p', { type: 'number', describe: 'nucleus sampling cut (overrides eval.top_p)' })
          .option('max-new-tokens', { type: 'number', describe: 'tokens per prompt (overrides eval.max_new_tokens)' })
          .option('limit', { type: 'number', describe: 'at most this many prompts (overrides eval.limit)' })
          .option('input', {
            type: 'string',
            describe: 'prompts: MT-bench question JSONL (first turn) or GSM8K JSONL (question) instead of data.eval',
          })
          .option('out', { type: 'string', describe: 'output folder for report.json and acceptance.svg (default <run dir>/eval)' })
          .option('specexit', {
            type: 'boolean',
            describe: 'also decode with the SpecExit exit policy and compare reasoning tokens and accuracy (overrides eval.specexit)',
          })
          .option('exit-policy', {
            choices: ['auto', 'calibrated', 'reference', 'recipe'],
            describe:
              'SpecExit exit rule: calibrated (stored by --calibrate), reference (SpecExit), recipe (eval.exit_alpha/exit_thresholds), auto (calibrated if stored; overrides eval.exit_policy)',
          })
          .option('calibrate', {
            type: 'boolean',
            describe:
              'with --specexit: choose the exit rule on half of the prompts (eval.calibration_prompts, alternately calibration and test) within eval.exit_accuracy_budget, store it with the draft, report it on the other half',
          }),
      ),
    ) as never,
  handler: async (args) => {
    // --tree none (or --draft-steps without --tree) asks for a chain even where the recipe sets a tree.
    const tree =
      args.tree === undefined
        ? args['draft-steps'] !== undefined
          ? null
          : undefined
        : /^(none|off|chain)$/i.test(args.tree)
          ? null
          : args.tree;
    const r = loadRecipe(args.recipe, {
      ...commonOverrides(args),
      'eval.draft_steps': args['draft-steps'],
      'eval.tree': tree,
      'eval.temperature': args.temperature,
      'eval.top_p': args['top-p'],
      'eval.max_new_tokens': args['max-new-tokens'],
      'eval.limit': args.calibrate ? undefined : args.limit,
      'eval.calibration_prompts': args.calibrate ? args.limit : undefined,
      'eval.specexit': args.specexit,
      'eval.exit_policy': args['exit-policy'],
    });
    if (args.calibrate && !r.eval.specexit)
      throw new Error('--calibrate calibrates the SpecExit exit rule: give --specexit too (or eval.specexit: true)');
    await initBackend(r.runtime.backend, console.log);
    const job = { checkpoint: args.checkpoint, draftOnnx: args['draft-onnx'], input: args.input, out: args.out, log: console.log };
    if (args.calibrate) {
      await runCalibration(r, job);
      return;
    }
    await runEval(r, job);
  },
};
