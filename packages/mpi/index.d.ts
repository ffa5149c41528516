/** MPI_Init_thread (funneled), once per process; also finds the rank's place on its machine. */
export function init(): void;
/** This process's rank in MPI_COMM_WORLD. */
export function rank(): number;
/** Processes in MPI_COMM_WORLD. */
export function size(): number;
/** This process's rank among the processes on its machine (which GPU it takes). */
export function localRank(): number;
/** In place: every element becomes its sum over all ranks. */
export function allReduceSum(data: Float32Array | Float64Array): void;
/** In place: the bytes of `data` on `root` replace every other rank's. */
export function broadcast(data: ArrayBufferView, root: number): void;
/** Blocks until every rank has arrived (sleeping between polls, not spinning). */
export function barrier(): void;
/** Ends every process of the job with `code` (MPI_Abort); does not return. */
export function abort(code?: number): never;
/** MPI_Finalize, when initialized and not yet finalized. */
export function finalize(): void;
