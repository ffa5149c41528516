import type { CommandModule } from 'yargs';
import { notBuilt, withBackend } from './common.ts';

export const captureCommand: CommandModule = {
  command: 'capture',
  describe: 'Run the target over a dataset and store its hidden states in Arrow shards',
  builder: (y) => withBackend(y.option('recipe', { type: 'string', describe: 'recipe YAML (see recipes/)' })),
  handler: () => notBuilt('capture', '[capture]'),
};
