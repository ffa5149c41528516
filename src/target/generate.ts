// Batched generation with the KV cache: prompts of different lengths are right-padded into one prefill,
// then every row advances one token per step until it emits a stop token or reaches maxNewTokens. Token
// choice (greedy, temperature, top-p) is util/sampling.ts's pickToken.
import * as tf from '@tensorflow/tfjs';
import type { Rng } from '../util/random.ts';
import { pickToken } from '../util/sampling.ts';
import type { TargetModel } from './runtime.ts';

export interface GenerateOptions {
  maxNewTokens: number;
  /** Token ids that end a row (end-of-turn, eos); the stop token is kept in the output. */
  stopIds: number[];
  /** 0 (default) is greedy. */
  temperature?: number;
  topP?: number;
  /** One generator for the whole batch, or one per row (a row's tokens then do not depend on its batch). */
  rng?: Rng | Rng[];
  padId?: number;
  /** Called after each decoding step with the tokens emitted in it (for throughput reporting). */
  onTokens?: (emitted: number) => void;
}

/** Returns the new tokens of each prompt (stop token included when reached). */
export function generate(model: TargetModel, prompts: number[][], opts: GenerateOptions): number[][] {
  const B = prompts.length;
  const padId = opts.padId ?? 0;
  const T = Math.max(...prompts.map((p) => p.length));
  const cache = model.newCache(B);
  const outputs: number[][] = prompts.map(() => []);
  const done = new Array(B).fill(false);
  const V = model.config.vocabSize;
  if (Array.isArray(opts.rng) && opts.rng.length !== B) throw new Error(`generate: ${opts.rng.length} generators for ${B} prompts`);
  const rngOf = (b: number) => (Array.isArray(opts.rng) ? opts.rng[b] : opts.rng);
  try {
    const ids = prompts.map((p) => [...p, ...new Array(T - p.length).fill(padId)]);
    const attentionMask = prompts.map((p) => ids[0].map((_, t) => (t < p.length ? 1 : 0)));
    const first = model.forward({ ids, attentionMask }, { cache });
    // Each row's next-token logits sit at its own last prompt position.
    const all = first.logits!.dataSync() as Float32Array;
    let next = prompts.map((p, b) =>
      pickToken(all.subarray((b * T + p.length - 1) * V, (b * T + p.length) * V), opts.temperature, opts.topP, rngOf(b)),
    );
    tf.dispose([first.logits!, first.finalNormed]);
    for (let step = 0; step < opts.maxNewTokens; step++) {
      let emitted = 0;
      next.forEach((tok, b) => {
        if (done[b]) return;
        outputs[b].push(tok);
        emitted++;
        if (opts.stopIds.includes(tok) || outputs[b].length >= opts.maxNewTokens) done[b] = true;
      });
      opts.onTokens?.(emitted);
      if (done.every(Boolean)) break;
      // Finished rows still step (batch shape stays fixed) with their input masked out.
      const out = model.forward({ ids: next.map((t) => [t]), attentionMask: done.map((d) => [d ? 0 : 1]) }, { cache });
      const logits = out.logits!.dataSync() as Float32Array;
      next = next.map((_, b) => (done[b] ? 0 : pickToken(logits.subarray(b * V, (b + 1) * V), opts.temperature, opts.topP, rngOf(b))));
      tf.dispose([out.logits!, out.finalNormed]);
    }
  } finally {
    cache.dispose();
  }
  return outputs;
}
