import type { CommandModule } from 'yargs';
import { notBuilt, withBackend } from './common.ts';

export const trainCommand: CommandModule = {
  command: 'train',
  describe: 'Train an EAGLE-3 draft (with SpecExit heads) from a recipe',
  builder: (y) => withBackend(y.option('recipe', { type: 'string', describe: 'recipe YAML (see recipes/)' })),
  handler: () => notBuilt('train', '[train]'),
};
