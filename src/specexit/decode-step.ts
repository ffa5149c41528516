// SpecExit's step in one speculative verify pass: read the exit signals of the accepted draft tokens (from
// the target's features at their rows), let the exit policy (policy.ts) decide, and keep the policy's view
// of <think> / </think> up to date with every committed token. The decode loop (decode/speculative.ts)
// applies the result: on an exit the accepted tokens are cut at the step split and the first token that
// closes the thinking replaces the bonus token; each further one (the </think> after a newline) is the
// bonus of the next pass, which accepts no draft token.
import type * as tf from '@tensorflow/tfjs';
import type { ExitController, ExitSignals } from './policy.ts';

/** SpecExit during decoding: the policy, and the signals of target features [1, n, F] (one set per row). */
export interface SpecExit {
  policy: ExitController;
  signals: (features: tf.Tensor3D) => ExitSignals[];
}

export interface ExitStepResult {
  /** How many accepted draft tokens to keep (all of them unless exiting). */
  keep: number;
  /** The token to emit after them: the target's bonus token, or a token of an exit's close. */
  bonus: number;
  exited: boolean;
}

/** What one decode's exits still have to emit, one token per verify pass (a new one per decode). */
export type ExitQueue = number[];

/**
 * One verify pass: `accepted` are the draft tokens the target accepted, `bonus` its own token after them,
 * and `featuresOfAccepted` gives the target features at the accepted rows [1, accepted.length, F] (null
 * when the drafter reads none); they are read (and disposed) only while thinking. A token left in `queue`
 * by an earlier exit is this pass's bonus, with no draft token accepted.
 */
export function specExitStep(
  exit: SpecExit,
  queue: ExitQueue,
  accepted: number[],
  bonus: number,
  featuresOfAccepted: () => tf.Tensor3D | null,
): ExitStepResult {
  const { policy } = exit;
  const forced = queue.shift();
  if (forced !== undefined) {
    policy.observe([forced]);
    return { keep: 0, bonus: forced, exited: false };
  }
  let keep = accepted.length;
  let exited = false;
  if (policy.isThinking && accepted.length) {
    const feats = featuresOfAccepted();
    const signals = feats ? exit.signals(feats) : [];
    feats?.dispose();
    const d = policy.step(accepted, signals);
    if (d.exit) {
      keep = d.keep;
      [bonus] = d.emit;
      queue.push(...d.emit.slice(1));
      exited = true;
    }
  } else policy.observe(accepted);
  policy.observe([bonus]);
  return { keep, bonus, exited };
}
