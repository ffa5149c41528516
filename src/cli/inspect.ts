// `specforge inspect`: reads a model folder's config and tensor headers and prints what specforge sees.
import type { CommandModule } from 'yargs';
import { defaultAuxLayers, loadModelConfig, parameterCount } from '../io/hf-config.ts';
import { SafetensorsFolder } from '../io/safetensors.ts';

/** Checks that a Hugging Face folder is a target this project can run, and prints what it found. */
export const inspectCommand: CommandModule<object, { model: string }> = {
  command: 'inspect <model>',
  describe: 'Check a Hugging Face model folder and print its shape, size and default auxiliary layers',
  builder: (y) => y.positional('model', { type: 'string', demandOption: true, describe: 'folder with config.json and safetensors' }),
  handler: (args) => {
    const c = loadModelConfig(args.model);
    const ckpt = new SafetensorsFolder(args.model);
    const dtypes = new Map<string, number>();
    for (const n of ckpt.names()) {
      const { dtype } = ckpt.info(n);
      dtypes.set(dtype, (dtypes.get(dtype) ?? 0) + 1);
    }
    const rows: [string, string][] = [
      ['architecture', c.architecture],
      ['layers / hidden / intermediate', `${c.numLayers} / ${c.hiddenSize} / ${c.intermediateSize}`],
      ['heads / kv heads / head_dim', `${c.numHeads} / ${c.numKvHeads} / ${c.headDim}`],
      ['vocabulary', String(c.vocabSize)],
      ['parameters', `${(parameterCount(c) / 1e6).toFixed(2)}M`],
      ['tied embeddings', String(c.tieWordEmbeddings)],
      ['rope', `theta ${c.ropeTheta}${c.ropeScaling ? `, ${c.ropeScaling.type} x${c.ropeScaling.factor}` : ''}`],
      ['EAGLE-3 aux layers (default)', JSON.stringify(defaultAuxLayers(c.numLayers))],
      ['tensors', [...dtypes].map(([d, n]) => `${n} ${d}`).join(', ')],
    ];
    for (const [k, v] of rows) console.log(`${k.padEnd(32)} ${v}`);
  },
};
