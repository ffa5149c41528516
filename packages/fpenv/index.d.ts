/** Sets flush-to-zero and denormals-are-zero on the calling thread; false where the architecture has no such bits. */
export function flushDenormals(): boolean;
/** Whether the calling thread flushes subnormal floats to zero now. */
export function flushingDenormals(): boolean;
