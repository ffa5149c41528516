import path from 'node:path';
import type { CommandModule } from 'yargs';
import { type ServingFormat, writeServingFolder } from '../export/serving.ts';
import { notBuilt, type CommonArgs, withBackend } from './common.ts';

type Args = CommonArgs & { checkpoint: string; out: string; format: string[]; dtype: 'bf16' | 'f32' };

export const exportOnnxCommand: CommandModule<object, Args> = {
  command: 'export-onnx',
  describe: 'Export a draft checkpoint to ONNX and the serving layouts',
  builder: (y) =>
    withBackend(
      y
        .option('checkpoint', { type: 'string', demandOption: true, describe: 'draft checkpoint folder (…/step-N)' })
        .option('out', { type: 'string', demandOption: true, describe: 'output folder (one subfolder per format)' })
        .option('format', { type: 'array', string: true, default: ['onnx'], describe: 'onnx | sglang (EAGLE-3 folder for SGLang/vLLM) | specexit (widened fc)' })
        .option('dtype', { choices: ['bf16', 'f32'] as const, default: 'bf16' as const, describe: 'weight type of the safetensors layouts' }),
    ) as never,
  handler: (args) => {
    for (const f of args.format) {
      if (f === 'onnx') notBuilt('export-onnx --format onnx', '[onnx]');
      if (f !== 'sglang' && f !== 'specexit') throw new Error(`--format ${f}: expected onnx, sglang or specexit`);
    }
    for (const f of args.format as ServingFormat[]) {
      const files = writeServingFolder(path.resolve(args.checkpoint), path.join(path.resolve(args.out), f), f, args.dtype === 'bf16' ? 'BF16' : 'F32');
      console.log(`${f}: ${files.join(', ')}`);
    }
  },
};
