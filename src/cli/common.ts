// Options every command shares, and the error exit.
import type { Argv } from 'yargs';
import { BACKENDS, type BackendName } from '../backend/backend.ts';
import { mpiWorld } from '../parallel/mpi.ts';
import { TARGET_ENGINES, type TargetEngine } from '../target/load.ts';

export interface CommonArgs {
  backend?: BackendName;
  'target-engine'?: TargetEngine;
}

export function withBackend<T>(y: Argv<T>): Argv<T & CommonArgs> {
  return y.option('backend', {
    choices: BACKENDS,
    describe: 'tfjs engine (auto takes the first that loads: node-gpu, node, wasm, cpu); overrides the recipe',
  }) as Argv<T & CommonArgs>;
}

/** For the commands that run the target model. */
export function withTargetEngine<T>(y: Argv<T>): Argv<T & CommonArgs> {
  return y.option('target-engine', {
    choices: TARGET_ENGINES,
    describe: 'engine that runs the target model (runtime.target_engine): ONNX Runtime or tfjs; overrides the recipe',
  }) as Argv<T & CommonArgs>;
}

/** The recipe overrides the shared options make. */
export function commonOverrides(args: CommonArgs): Record<string, unknown> {
  return { 'runtime.backend': args.backend, 'runtime.target_engine': args['target-engine'] };
}

/**
 * parallel.workers for this launch: --workers, or under mpirun/srun the job's process count (each process
 * is one rank, whatever the recipe says; a --workers that differs is refused).
 */
export function launchWorkers(flag: number | undefined): number | undefined {
  const w = mpiWorld();
  if (!w) return flag;
  if (flag !== undefined && flag !== w.size)
    throw new Error(`--workers ${flag}: under mpirun or srun each process is one rank, and this job has ${w.size}; leave --workers out`);
  return w.size;
}
