// Memory settings for glibc's malloc, applied by starting the process again with them (bin/specforge.js;
// glibc reads them once, at start). By default glibc hands every block over 32 MiB back to the OS when it
// is freed (and any block over 64 MiB that a worker thread allocates), so each training step's large
// tensors are fresh pages that fault in, zero-filled, on first write: measured 22% of a step at the
// Qwen3-0.6B draft shape (59 -> 46 s) and 10-15% at the Qwen2.5-0.5B one. With these, all threads allocate
// from one heap that keeps what is freed for the next step: the process holds its peak memory (the same
// peak it reached before) until it exits. SPECFORGE_MALLOC=0 keeps glibc's defaults (1 marks the process
// started again).

/** The settings; a variable the user has set already is left as it is. */
export const RETAINING_MALLOC: Readonly<Record<string, string>> = {
  MALLOC_ARENA_MAX: '1', // one heap for every thread (a thread's own arena cannot hold blocks over 64 MiB)
  MALLOC_MMAP_MAX_: '0', // no block gets its own mapping, which free would return to the OS
  MALLOC_TRIM_THRESHOLD_: String(2 ** 40), // never shrink the heap
  MALLOC_TOP_PAD_: String(2 ** 26), // grow it 64 MiB at a time
};

/** The environment to start again with, or null: not glibc, already applied, or turned off. */
export function retainingMallocEnv(env: NodeJS.ProcessEnv = process.env): NodeJS.ProcessEnv | null {
  if (process.platform !== 'linux' || env.SPECFORGE_MALLOC === '0' || env.SPECFORGE_MALLOC === '1') return null;
  const header = (process.report?.getReport() as { header?: { glibcVersionRuntime?: string } } | undefined)?.header;
  if (!header?.glibcVersionRuntime) return null; // musl and others: their own allocator, left alone
  return { ...RETAINING_MALLOC, ...env, SPECFORGE_MALLOC: '1' };
}
