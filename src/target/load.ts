// Chooses the engine that runs the target model (recipe runtime.target_engine): ONNX Runtime, or tfjs.
import type { Recipe } from '../recipe/recipe.ts';
import type { ForwardOptions, TargetInput, TargetModel, TargetOutput } from './runtime.ts';
import { ORT_PROVIDERS, OrtTarget, type OrtProvider } from './ort-target.ts';
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
    engine: r.runtime.target_engine as TargetEngine,
    provider: r.runtime.target_provider as OrtProvider,
    threads: r.runtime.target_threads,
  };
}

/**
 * forward() that leaves the calling thread free where the engine can (ONNX Runtime computes in a worker
 * thread); engines without an asynchronous path run forward() itself.
 */
export async function forwardAsync(model: TargetModel, input: TargetInput, opts?: ForwardOptions): Promise<TargetOutput> {
  return model.forwardAsync ? model.forwardAsync(input, opts) : model.forward(input, opts);
}
