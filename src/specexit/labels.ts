// SpecExit training labels, this project's definition (SpecExit's own labels are not public): for each
// position t inside a thinking span [s, e) (s = first token after <think>, e = the </think> token):
//   progress_t   = (t - s + 1) / (e - s)                      in (0, 1]
//   remaining_t  = e - t  tokens until </think>; the head regresses log(remaining_t)
//   confidence_t = 1 once the thinking text up to t states the final answer, else 0;
//                  masked when no answer could be extracted from the reply.
// Positions outside thinking spans carry no signal loss.

export interface SpecExitLabels {
  /** [T] progress targets (0 where unmasked). */
  progress: Float32Array;
  /** [T] log(remaining) targets. */
  logRemaining: Float32Array;
  /** [T] confidence targets (0/1). */
  confidence: Float32Array;
  /** [T] 1 inside a thinking span (progress and remaining losses apply). */
  spanMask: Uint8Array;
  /** [T] 1 where the confidence loss applies (inside a span whose reply has an extractable answer). */
  confidenceMask: Uint8Array;
}

/**
 * Labels for a sequence of length T from its stored spans: `spans` flattened [s0, e0, s1, e1, ...] and
 * `answerPositions[k]` the first position of span k stating the answer (-1: never). `hasAnswer[k]` tells
 * whether span k's reply had an extractable answer at all (when not, confidence is masked).
 */
export function specExitLabels(
  T: number,
  spans: ArrayLike<number>,
  answerPositions: ArrayLike<number>,
  hasAnswer: (k: number) => boolean,
): SpecExitLabels {
  const out: SpecExitLabels = {
    progress: new Float32Array(T),
    logRemaining: new Float32Array(T),
    confidence: new Float32Array(T),
    spanMask: new Uint8Array(T),
    confidenceMask: new Uint8Array(T),
  };
  for (let k = 0; 2 * k + 1 < spans.length; k++) {
    const s = spans[2 * k];
    const e = spans[2 * k + 1];
    if (!(e > s) || s < 0 || e > T) continue; // empty or (after truncation) out of range: no labels
    const at = answerPositions[k] ?? -1;
    const labelled = hasAnswer(k);
    for (let t = s; t < e; t++) {
      out.spanMask[t] = 1;
      out.progress[t] = (t - s + 1) / (e - s);
      out.logRemaining[t] = Math.log(e - t);
      if (labelled) {
        out.confidenceMask[t] = 1;
        out.confidence[t] = at >= 0 && t >= at ? 1 : 0;
      }
    }
  }
  return out;
}
