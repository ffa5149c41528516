// `specforge export-onnx`: wires the arguments to the exporters (export/onnx.ts, export/serving.ts).
import path from 'node:path';
import type { CommandModule } from 'yargs';
import { exportDraftOnnx } from '../export/onnx.ts';
import type { ExternalData } from '../io/onnx-write.ts';
import { type ServingFormat, writeServingFolder } from '../export/serving.ts';
import { type CommonArgs, withBackend } from './common.ts';

type Args = CommonArgs & {
  checkpoint: string;
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
        .option('checkpoint', { type: 'string', demandOption: true, describe: 'draft checkpoint folder (…/step-N)' })
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
    const checkpoint = path.resolve(args.checkpoint);
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
