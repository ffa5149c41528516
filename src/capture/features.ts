// What the target computes for a set of tokenized samples, in the store's per-sample form: one padded
// forward, then each sample's aux layers, final normed hidden and thinking spans. Shared by capture
// (which stores it) and online training (which uses it at once). A NaN or infinity from a broken target
// is an error naming the sample here, not a NaN loss many steps later.
import * as tf from '@tensorflow/tfjs';
import type { AnswerExtractor } from '../data/answers.ts';
import { findThinkingSpans } from '../data/thinking.ts';
import type { Tokenizer } from '../io/tokenizer.ts';
import { type FeatureSample, featureFiniteError } from '../store/schema.ts';
import type { TargetModel } from '../target/runtime.ts';

export interface TokenizedSample {
  id: string;
  ids: number[];
  lossMask: number[];
}

export function computeFeatures(
  model: TargetModel,
  tok: Tokenizer,
  batch: TokenizedSample[],
  auxLayerIds: number[],
  answerExtractor: AnswerExtractor,
): FeatureSample[] {
  const T = Math.max(...batch.map((s) => s.ids.length));
  const ids = batch.map((s) => [...s.ids, ...new Array(T - s.ids.length).fill(0)]);
  const attentionMask = batch.map((s) => ids[0].map((_, t) => (t < s.ids.length ? 1 : 0)));
  const out = model.forward({ ids, attentionMask }, { layers: auxLayerIds, logits: false });
  const auxAll = tf
    .tidy(() =>
      tf.concat(
        auxLayerIds.map((l) => out.layers.get(l)!),
        -1,
      ),
    )
    .dataSync() as Float32Array; // [B, T, k*H]
  const finalAll = out.finalNormed.dataSync() as Float32Array; // [B, T, H]
  tf.dispose([out.finalNormed, ...out.layers.values()]);
  const H = model.config.hiddenSize;
  const A = auxLayerIds.length * H;
  const think = tok.tokenToId('<think>');
  const endThink = tok.tokenToId('</think>');
  const decode = (x: number[]) => tok.decode(x);
  return batch.map((s, b) => {
    const n = s.ids.length;
    const spans =
      think !== undefined && endThink !== undefined
        ? findThinkingSpans(s.ids, s.lossMask, { think, endThink }, decode, answerExtractor)
        : [];
    const f: FeatureSample = {
      id: s.id,
      inputIds: Int32Array.from(s.ids),
      lossMask: Uint8Array.from(s.lossMask),
      aux: auxAll.slice(b * T * A, b * T * A + n * A),
      finalHidden: finalAll.slice(b * T * H, b * T * H + n * H),
      thinkSpans: Int32Array.from(spans.flatMap((sp) => [sp.start, sp.end])),
      answerPositions: Int32Array.from(spans.map((sp) => sp.answerAt)),
      answer: spans.find((sp) => sp.answer)?.answer ?? '',
    };
    const bad = featureFiniteError(f, auxLayerIds);
    if (bad) throw new Error(`sample ${JSON.stringify(s.id)}: the target computed a non-finite feature: ${bad} (are its weights damaged?)`);
    return f;
  });
}
