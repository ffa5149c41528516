// Decoding the eval prompts both ways, speculatively and with plain greedy `generate` (same backend, same
// run, alternating per prompt so that both see the same machine state).
import { generate } from '../target/generate.ts';
import type { TargetModel } from '../target/runtime.ts';
import { Rng } from '../util/random.ts';
import type { Drafter } from './drafter.ts';
import type { TokenizedPrompt } from './prompts.ts';
import type { PromptRecord } from './report.ts';
import { type SpecOptions, speculativeDecode } from './speculative.ts';
import type { TreeShape } from './tree.ts';

export interface DecodeSettings {
  draftSteps: number;
  tree: TreeShape | null;
  temperature: number;
  topP: number;
  maxNewTokens: number;
  stopIds: number[];
  seed: number;
}

/**
 * Decodes every prompt speculatively and plainly (greedy, KV cache), alternating so that both see the same
 * machine state; one short warm-up of each first (kernels, allocations), not counted.
 */
export function evaluatePrompts(
  target: TargetModel,
  drafter: Drafter,
  prompts: TokenizedPrompt[],
  s: DecodeSettings,
  onPrompt: (i: number, r: PromptRecord) => void = () => {},
): PromptRecord[] {
  const spec = (ids: number[], maxNewTokens: number, seed: number) =>
    speculativeDecode(target, drafter, ids, {
      maxNewTokens,
      stopIds: s.stopIds,
      draftSteps: s.draftSteps,
      tree: s.tree,
      temperature: s.temperature,
      topP: s.topP,
      rng: new Rng(seed),
    } satisfies SpecOptions);
  const plain = (ids: number[], maxNewTokens: number) => {
    const t0 = performance.now();
    const tokens = generate(target, [ids], { maxNewTokens, stopIds: s.stopIds })[0];
    return { tokens, seconds: (performance.now() - t0) / 1000 };
  };
  if (prompts.length) {
    const warm = Math.min(8, s.maxNewTokens);
    spec(prompts[0].ids, warm, s.seed);
    plain(prompts[0].ids, warm);
  }
  return prompts.map((p, i) => {
    const record: PromptRecord = {
      id: p.id,
      category: p.category,
      promptTokens: p.ids.length,
      spec: spec(p.ids, s.maxNewTokens, s.seed + i),
      plain: plain(p.ids, s.maxNewTokens),
    };
    onPrompt(i, record);
    return record;
  });
}
