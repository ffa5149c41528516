// Chooses the engine that runs the target model (recipe runtime.target_engine): ONNX Runtime, or tfjs.
import os from 'node:os';
import type { Recipe } from '../recipe/recipe.ts';
import type { ForwardOptions, TargetInput, TargetModel, TargetOutput } from './runtime.ts';
import { loadModelConfig } from '../io/hf-config.ts';
import { ORT_PROVIDERS, OrtTarget, type OrtProvider } from './ort-target.ts';
import { ensureWeightCache } from './ort-weights.ts';
import { TfjsTarget } from './tfjs-target.ts';

export const TARGET_ENGINES = ['ort', 'tfjs'] as const;
export type TargetEngine = (typeof TARGET_ENGINES)[number];

export interface LoadTargetOptions {
  engine?: TargetEngine;
  /** ORT only: intra-op threads (0 or absent: every core; give cores / ranks when several share a machine). */
  threads?: number;
  /** ORT only: execution provider. */
  provider?: OrtProvider;
  /** ORT only: root of the converted-weights cache. */
  cacheDir?: string;
  log?: (msg: string) => void;
}

/** Loads a Hugging Face target folder with the chosen engine (default ort). */
export async function loadTarget(dir: string, opts: LoadTargetOptions = {}): Promise<TargetModel> {
  const engine = opts.engine ?? 'ort';
  if (!TARGET_ENGINES.includes(engine)) throw new Error(`target engine '${engine}': expected one of ${TARGET_ENGINES.join(', ')}`);
  if (engine === 'tfjs') {
    if (opts.provider && opts.provider !== 'cpu')
      throw new Error(`target provider '${opts.provider}' needs engine 'ort' (the tfjs engine's device is runtime.backend)`);
    return TfjsTarget.load(dir);
  }
  if (opts.provider && !ORT_PROVIDERS.includes(opts.provider))
    throw new Error(`target provider '${opts.provider}': expected one of ${ORT_PROVIDERS.join(', ')}`);
  return OrtTarget.load(dir, { threads: opts.threads, provider: opts.provider, cacheDir: opts.cacheDir, log: opts.log });
}

/** The recipe's runtime.target_* fields as loadTarget options. */
export function targetOptions(r: Pick<Recipe, 'runtime'>): LoadTargetOptions {
  return {
    engine: r.runtime.target_engine,
    provider: r.runtime.target_provider,
    threads: r.runtime.target_threads,
  };
}

/**
 * The recipe's target model, with its engine, provider and threads. ONNX Runtime's threads default to this
 * machine's cores shared among the `ranks` ranks that each load a target here; its converted weights are
 * cached under data.cache_dir.
 */
export async function loadRecipeTarget(
  r: Pick<Recipe, 'runtime' | 'model' | 'data'>,
  opts: { ranks?: number; log?: (m: string) => void } = {},
): Promise<TargetModel> {
  const o = targetOptions(r);
  const threads = o.threads || Math.max(1, Math.floor(os.availableParallelism() / Math.max(1, opts.ranks ?? 1)));
  return loadTarget(r.model.target, { ...o, threads, cacheDir: r.data.cache_dir, log: opts.log });
}

/**
 * Converts the target's weights for ONNX Runtime now, before ranks start: ranks are threads of one process,
 * and each would otherwise convert the whole model side by side into the same cache (N times the time,
 * memory and disk, and one install wins). A no-op for the tfjs engine and when the cache is already built.
 */
export function prepareRecipeTarget(r: Pick<Recipe, 'runtime' | 'model' | 'data'>, log?: (m: string) => void): void {
  if ((targetOptions(r).engine ?? 'ort') !== 'ort') return;
  ensureWeightCache(r.model.target, loadModelConfig(r.model.target), { cacheRoot: r.data.cache_dir, log });
}

/**
 * forward() that leaves the calling thread free where the engine can (ONNX Runtime computes in a worker
 * thread); engines without an asynchronous path run forward() itself.
 */
export async function forwardAsync(model: TargetModel, input: TargetInput, opts?: ForwardOptions): Promise<TargetOutput> {
  return model.forwardAsync ? model.forwardAsync(input, opts) : model.forward(input, opts);
}
