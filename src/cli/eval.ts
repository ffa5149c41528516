import type { CommandModule } from 'yargs';
import { notBuilt, withBackend } from './common.ts';

export const evalCommand: CommandModule = {
  command: 'eval',
  describe: 'Speculative decoding against the target: acceptance length, speedup, SpecExit savings',
  builder: (y) => withBackend(y.option('recipe', { type: 'string', describe: 'recipe YAML (see recipes/)' })),
  handler: () => notBuilt('eval', '[eval]'),
};
