import type { CommandModule } from 'yargs';
import { notBuilt, withBackend } from './common.ts';

export const exportOnnxCommand: CommandModule = {
  command: 'export-onnx',
  describe: 'Export a draft checkpoint to ONNX and the serving layouts',
  builder: (y) => withBackend(y.option('recipe', { type: 'string', describe: 'recipe YAML (see recipes/)' })),
  handler: () => notBuilt('export-onnx', '[onnx]'),
};
