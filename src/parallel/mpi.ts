// One process of a job that mpirun or srun started: it joins the MPI world (specforge-mpi, packages/mpi),
// takes the GPU of its place on its machine before any backend loads, and is one rank whose Collective is
// MPI's. Rank 0 alone prints; a process that ends with an error aborts the whole job (MPI_Abort), so a
// failing rank never leaves the others blocked in a collective.
import fs from 'node:fs';
import { createRequire } from 'node:module';
import type * as MpiBinding from 'specforge-mpi';
import type { Collective } from './collective.ts';

/** Variables an MPI launcher gives each process it starts: Open MPI's mpirun, srun with PMIx or PMI-2. */
const LAUNCH_VARS = ['OMPI_COMM_WORLD_SIZE', 'PMIX_RANK', 'PMI_SIZE'] as const;

export const HOW_TO_GET_MPI =
  'install Open MPI (Debian/Ubuntu: apt-get install libopenmpi-dev openmpi-bin g++ make python3), then run npm rebuild specforge-mpi';

/** Whether an MPI launcher started this process (it may be the only one). */
export function launchedByMpi(env: NodeJS.ProcessEnv = process.env): boolean {
  return LAUNCH_VARS.some((v) => env[v] !== undefined);
}

/** The MPI binding, or an error saying how to get it. */
export function loadMpi(): typeof MpiBinding {
  try {
    return createRequire(import.meta.url)('specforge-mpi');
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    // Built but failing to load says why; not installed at all says what to install.
    if (err.code === 'SPECFORGE_MPI_NOT_BUILT') throw new Error(err.message);
    throw new Error(`the MPI binding specforge-mpi is not installed (${err.message.split('\n')[0]}): ${HOW_TO_GET_MPI}`);
  }
}

export interface MpiWorld {
  mpi: typeof MpiBinding;
  rank: number;
  size: number;
  /** Rank among this machine's processes of the job. */
  localRank: number;
}

let world: MpiWorld | null = null;

/** This process's MPI world when an MPI launcher started it (joined by joinMpiWorld), else null. */
export function mpiWorld(): MpiWorld | null {
  return world;
}

/**
 * Joins the MPI world when an MPI launcher started this process (once; null otherwise): MPI_Init, the GPU
 * of this process, and on exit MPI_Finalize, or MPI_Abort of the whole job when it ends with an error.
 * Call it before any tfjs or ONNX Runtime backend loads.
 */
export function joinMpiWorld(): MpiWorld | null {
  if (world || !launchedByMpi()) return world;
  const mpi = loadMpi();
  mpi.init();
  const w: MpiWorld = { mpi, rank: mpi.rank(), size: mpi.size(), localRank: mpi.localRank() };
  world = w;
  const gpu = gpuFor(w.localRank, process.env.CUDA_VISIBLE_DEVICES, nvidiaGpuCount());
  if (gpu !== undefined) process.env.CUDA_VISIBLE_DEVICES = gpu;
  process.on('exit', (code) => {
    if (code !== 0 && w.size > 1) mpi.abort(code);
    mpi.finalize();
  });
  return w;
}

/**
 * CUDA_VISIBLE_DEVICES for the process with `localRank` on its machine (tfjs has no device placement: one
 * GPU per process, chosen before CUDA loads), or undefined to leave it as it is: a launcher that already
 * gave this process one GPU (srun --gpus-per-task) is kept; from a list of several, the local rank's one;
 * with none set and `gpus` on the machine, GPU localRank (mod gpus); no GPU, nothing.
 */
export function gpuFor(localRank: number, visible: string | undefined, gpus: number): string | undefined {
  if (visible !== undefined) {
    const ids = visible.split(',').filter((s) => s.trim() !== '');
    return ids.length > 1 ? ids[localRank % ids.length].trim() : undefined;
  }
  return gpus > 0 ? String(localRank % gpus) : undefined;
}

/** NVIDIA GPUs the driver lists on this machine (0 without the driver). */
function nvidiaGpuCount(): number {
  try {
    return fs.readdirSync('/proc/driver/nvidia/gpus').length;
  } catch {
    return 0;
  }
}

/** The Collective of an MPI job: each process is one rank; MPI sums the vectors. */
export class MpiCollective implements Collective {
  readonly rank: number;
  readonly worldSize: number;
  private readonly mpi: typeof MpiBinding;

  constructor(w: MpiWorld) {
    this.mpi = w.mpi;
    this.rank = w.rank;
    this.worldSize = w.size;
  }

  allReduceSum(data: Float32Array): void {
    this.mpi.allReduceSum(data);
  }

  barrier(): void {
    this.mpi.barrier();
  }
}

/** Rank 0's `value` on every process (as JSON): the others pass anything and wait for it. */
export function shareFromRankZero<T>(w: MpiWorld, value: T): T {
  w.mpi.barrier(); // waits sleeping, however long rank 0 took to make the value
  const bytes = w.rank === 0 ? Buffer.from(JSON.stringify(value ?? null)) : Buffer.alloc(0);
  const length = new Float64Array([bytes.length]);
  w.mpi.broadcast(length, 0);
  const out = w.rank === 0 ? bytes : Buffer.alloc(length[0]);
  w.mpi.broadcast(out, 0);
  return JSON.parse(out.toString('utf8'));
}
