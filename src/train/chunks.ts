// Splits a rank's micro-batch into chunks that run through the draft one after another, their gradients
// summed, so that a step touches a few hundred positions at a time instead of the whole padded batch.
//
// Why: on a CPU the padded batch's attention scores and logits are several MB per tensor and stream
// through the shared L3 cache and memory, which two ranks then contend for (measured: two independent
// trainers at batch 8 run at 1.59x one; at batch 1, 1.72x). Chunks of similar length also cut the padding.
//
// Equal to the whole batch: the loss keeps the whole batch's normaliser B*T (see tttForward), and a chunk
// shorter than the batch is padded one position past its longest sample, so that each sample's last real
// position sees the same padding row (zero features, id 0) it would see in the whole batch.

export interface Chunk {
  /** Positions in the micro-batch of this chunk's samples, longest first. */
  indices: number[];
  /** Padded length of the chunk: min(T, longest + 1), or T when the longest sample fills it. */
  padTo: number;
}

/**
 * Groups samples (by their lengths) longest first into chunks of at most `budget` padded positions
 * (`samples x padTo`; a longer sample is a chunk of its own). `T` is the whole batch's padded length;
 * `budget` 0 puts the whole batch in one chunk padded to T, which is the unchunked computation.
 */
export function planChunks(lengths: number[], budget: number, T: number): Chunk[] {
  if (lengths.some((n) => n > T))
    throw new Error(`planChunks: a sample of ${Math.max(...lengths)} positions is longer than the batch length ${T}`);
  if (!(budget > 0)) return [{ indices: lengths.map((_, i) => i), padTo: T }];
  const order = lengths.map((_, i) => i).sort((a, b) => lengths[b] - lengths[a] || a - b);
  const padOf = (longest: number) => Math.min(T, longest + 1);
  const chunks: Chunk[] = [];
  for (const i of order) {
    const last = chunks[chunks.length - 1];
    // Sorted longest first, so the chunk's padded length is fixed by its first sample.
    if (last && (last.indices.length + 1) * last.padTo <= budget) last.indices.push(i);
    else chunks.push({ indices: [i], padTo: padOf(lengths[i]) });
  }
  return chunks;
}
