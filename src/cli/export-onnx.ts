// `specforge export-onnx`: wires the arguments to the exporters (export/onnx.ts, export/serving.ts). The
// checkpoint is a step folder, or a run (a run folder, or the run of --recipe): its step-best, else its newest.
import fs from 'node:fs';
import path from 'node:path';
import type { CommandModule } from 'yargs';
import { exportDraftOnnx } from '../export/onnx.ts';
import type { ExternalData } from '../io/onnx-write.ts';
import { type ServingFormat, writeServingFolder } from '../export/serving.ts';
import { loadRecipe } from '../recipe/recipe.ts';
import { chooseCheckpoint } from '../train/checkpoint.ts';
import { runDirOf } from '../train/run-dir.ts';
import { type CommonArgs, withBackend } from './common.ts';

type Args = CommonArgs & {
  checkpoint?: string;
  recipe?: string;
  out: string;
  format: string[];
  dtype: 'bf16' | 'f32';
  quantize: 'none' | 'int8';
  topk: number;
  target?: string;
  'external-data': ExternalData;
};

const FORMATS = ['onnx', 'sglang', 'specexit'] as const;

/** --format onnx sglang, --format onnx,sglang and repeated --format all give the same list. */
export function parseFormats(values: string[]): (typeof FORMATS)[number][] {
  const list = values
    .flatMap((v) => String(v).split(','))
    .map((s) => s.trim())
    .filter(Boolean);
  for (const f of list)
    if (!(FORMATS as readonly string[]).includes(f)) throw new Error(`--format ${f}: expected onnx, sglang or specexit`);
  return [...new Set(list)] as (typeof FORMATS)[number][];
}

export const exportOnnxCommand: CommandModule<object, Args> = {
  command: 'export-onnx',
  describe: 'Export a draft checkpoint to ONNX and the serving layouts',
  builder: (y) =>
    withBackend(
      y
        .option('checkpoint', {
          type: 'string',
          describe: 'draft checkpoint folder (…/step-N), or a run folder (its step-best, else its newest step-N)',
        })
        .option('recipe', { type: 'string', describe: "instead of --checkpoint: the recipe's run (its step-best, else its newest step-N)" })
        .conflicts('checkpoint', 'recipe')
        .option('out', { type: 'string', demandOption: true, describe: 'output folder (one subfolder per format)' })
        .option('format', {
          type: 'array',
          string: true,
          default: ['onnx'],
          describe: 'onnx | sglang (EAGLE-3 folder for SGLang/vLLM) | specexit (widened fc); several: repeat or comma-separate',
        })
        .option('dtype', {
          choices: ['bf16', 'f32'] as const,
          default: 'bf16' as const,
          describe: 'weight type of the safetensors layouts',
        })
        .option('quantize', {
          choices: ['none', 'int8'] as const,
          default: 'none' as const,
          describe: 'ONNX weights: float32, or weight-only per-output-channel int8',
        })
        .option('topk', { type: 'number', default: 0, describe: 'ONNX: also output the k best draft tokens as target ids (d2t applied)' })
        .option('target', {
          type: 'string',
          describe:
            "ONNX: target folder whose embedding table goes into the file (input 'input_ids'); without it the model takes 'inputs_embeds'",
        })
        .option('external-data', {
          choices: ['auto', 'always', 'never'] as const,
          default: 'auto' as const,
          describe: 'ONNX: weights in model.onnx.data (auto: above 1 GiB)',
        }),
    ) as never,
  handler: (args) => {
    const formats = parseFormats(args.format);
    if (!Number.isInteger(args.topk) || args.topk < 0) throw new Error(`--topk ${args.topk}: expected a non-negative integer`);
    const checkpoint = checkpointOf(args);
    const out = path.resolve(args.out);
    // The SpecExit layout refuses drafts without signal heads: written first, so that a refusal leaves nothing behind.
    for (const f of [...formats].sort((a, b) => Number(b === 'specexit') - Number(a === 'specexit'))) {
      const files =
        f === 'onnx'
          ? exportDraftOnnx(checkpoint, path.join(out, 'onnx'), {
              quantize: args.quantize === 'int8' ? 'int8' : null,
              topk: args.topk,
              target: args.target ? path.resolve(args.target) : null,
              externalData: args['external-data'],
            })
          : writeServingFolder(checkpoint, path.join(out, f), f as ServingFormat, args.dtype === 'bf16' ? 'BF16' : 'F32');
      console.log(`${f}: ${files.join(', ')}`);
    }
  },
};

/** The step folder to export: --checkpoint as given, or a run's step-best (else its newest checkpoint). */
function checkpointOf(args: Args): string {
  if (!args.checkpoint && !args.recipe) throw new Error('export-onnx: give --checkpoint (a step-N or run folder) or --recipe');
  const given = args.checkpoint ? path.resolve(args.checkpoint) : null;
  // A step folder (or anything else) goes to the exporters as given; they name what is missing.
  if (given && (fs.existsSync(path.join(given, 'config.json')) || !fs.existsSync(given))) return given;
  const runDir = given ?? runDirOf(loadRecipe(args.recipe!));
  const chosen = chooseCheckpoint(runDir);
  if (!chosen) {
    if (given) return given;
    throw new Error(`no checkpoint under ${runDir}: train first (specforge train --recipe ${args.recipe})`);
  }
  console.log(`checkpoint: the run's ${chosen.best ? 'best (step-best)' : 'newest (it has no step-best)'}, ${chosen.dir}`);
  return chosen.dir;
}
