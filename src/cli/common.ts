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
