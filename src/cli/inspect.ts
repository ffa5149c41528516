// `specforge inspect`: reads a model folder's config, tensor headers and tokenizer, prints what specforge
// sees, and runs the checks loading it for capture runs (every tensor the config implies is there, of a
// float type and the implied shape; the tokenizer builds): a folder capture would refuse exits 1, listing
// each problem with its file.
import path from 'node:path';
import type { CommandModule } from 'yargs';
import { defaultAuxLayers, loadModelConfig, parameterCount } from '../io/hf-config.ts';
import { SafetensorsFolder } from '../io/safetensors.ts';
import { loadTokenizer, type Tokenizer } from '../io/tokenizer.ts';
import { requiredWeights } from '../target/onnx-decoder.ts';

const FLOAT_DTYPES = ['F32', 'F16', 'BF16'];

/** Checks that a Hugging Face folder is a target this project can run, and prints what it found. */
export const inspectCommand: CommandModule<object, { model: string }> = {
  command: 'inspect <model>',
  describe: 'Check a Hugging Face model folder as capture loads it, and print its shape, size and default auxiliary layers',
  builder: (y) => y.positional('model', { type: 'string', demandOption: true, describe: 'folder with config.json and safetensors' }),
  handler: (args) => {
    const c = loadModelConfig(args.model);
    const ckpt = new SafetensorsFolder(args.model);
    const problems: string[] = [];
    const dtypes = new Map<string, number>();
    for (const n of ckpt.names()) {
      const { dtype } = ckpt.info(n);
      dtypes.set(dtype, (dtypes.get(dtype) ?? 0) + 1);
    }
    // The tensors the target engines read, as they check them when loading.
    for (const [name, shape] of requiredWeights(c, ckpt.has('lm_head.weight'))) {
      if (!ckpt.has(name)) {
        problems.push(`${args.model}: missing tensor '${name}' (expected shape [${shape}] from config.json)`);
        continue;
      }
      const info = ckpt.info(name);
      if (!FLOAT_DTYPES.includes(info.dtype))
        problems.push(`${args.model}: tensor '${name}' has dtype ${info.dtype}; expected F32, F16 or BF16`);
      else if (info.shape.join() !== shape.join())
        problems.push(`${args.model}: tensor '${name}' has shape [${info.shape}], expected [${shape}] from config.json`);
    }
    let tok: Tokenizer | null = null;
    try {
      tok = loadTokenizer(args.model);
    } catch (e) {
      problems.push((e as Error).message);
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
      ['tokenizer', tok ? `${tok.vocabSize} tokens; chat template ${tok.chatTemplate ? 'yes' : 'no'}` : 'unusable'],
    ];
    for (const [k, v] of rows) console.log(`${k.padEnd(32)} ${v}`);
    if (problems.length) {
      for (const p of problems) console.error(p);
      throw new Error(`${path.resolve(args.model)}: ${problems.length} problem(s) above; capture and training would refuse this folder`);
    }
  },
};
