// Options every command shares, and the error exit.
import type { Argv } from 'yargs';
import { BACKENDS, type BackendName } from '../backend/backend.ts';

export interface CommonArgs {
  backend?: BackendName;
}

export function withBackend<T>(y: Argv<T>): Argv<T & CommonArgs> {
  return y.option('backend', {
    choices: BACKENDS,
    describe: 'tfjs engine (auto takes the first that loads: node-gpu, node, wasm, cpu); overrides the recipe',
  }) as Argv<T & CommonArgs>;
}

/** A command that exists in the interface but whose issue has not landed yet. */
export function notBuilt(command: string, issue: string): never {
  console.error(`specforge ${command}: not built yet (tracked by the ${issue} issue)`);
  process.exit(2);
}
