// Loads a draft checkpoint folder (config.json + model.safetensors in the SGLang EAGLE-3 layout) for
// decoding or export. Errors name the folder and what is missing or wrong; weights that are not finite (a
// run that diverged) are refused naming the tensor, so that neither eval nor export works from them.
import fs from 'node:fs';
import path from 'node:path';
import { parseModelConfig } from '../io/hf-config.ts';
import { readJsonObject } from '../io/json-file.ts';
import { SafetensorsFile } from '../io/safetensors.ts';
import { nonFinite } from '../util/finite.ts';
import type { DraftConfig } from './config.ts';
import { Eagle3Draft, draftTensorShapes, isServingTensor } from './eagle3.ts';

export class DraftLoadError extends Error {}

export interface LoadedDraft {
  draft: Eagle3Draft;
  config: DraftConfig;
  /** Target ids of the draft vocabulary, ascending (used[i] = i + d2t[i]). */
  used: Int32Array;
  t2d: Uint8Array;
}

/** The fields of a draft's config.json read here beyond the Llama ones (each checked before use). */
type DraftConfigJson = Record<string, unknown> & {
  architectures?: unknown;
  eagle_config?: { eagle_aux_hidden_state_layer_ids?: number[] };
  draft_vocab_size?: number;
  target_hidden_size?: number;
  specexit?: unknown;
};

export function loadDraftCheckpoint(dir: string): LoadedDraft {
  const configFile = path.join(dir, 'config.json');
  const modelFile = path.join(dir, 'model.safetensors');
  if (!fs.existsSync(configFile) || !fs.existsSync(modelFile))
    throw new DraftLoadError(`${dir}: not a draft checkpoint (needs config.json and model.safetensors)`);
  const raw = readJsonObject(configFile, 'a draft config') as DraftConfigJson;
  if (!Array.isArray(raw.architectures) || raw.architectures[0] !== 'LlamaForCausalLMEagle3') {
    throw new DraftLoadError(`${configFile}: architectures is ${JSON.stringify(raw.architectures)}; expected ["LlamaForCausalLMEagle3"]`);
  }
  const base = parseModelConfig({ ...raw, architectures: ['LlamaForCausalLM'] }, configFile);
  const aux = raw.eagle_config?.eagle_aux_hidden_state_layer_ids;
  if (!Array.isArray(aux)) throw new DraftLoadError(`${configFile}: missing eagle_config.eagle_aux_hidden_state_layer_ids`);
  if (!Number.isInteger(raw.draft_vocab_size)) throw new DraftLoadError(`${configFile}: missing draft_vocab_size`);
  const config: DraftConfig = {
    hiddenSize: base.hiddenSize,
    targetHiddenSize: raw.target_hidden_size ?? base.hiddenSize,
    intermediateSize: base.intermediateSize,
    numHeads: base.numHeads,
    numKvHeads: base.numKvHeads,
    headDim: base.headDim,
    vocabSize: base.vocabSize,
    draftVocabSize: raw.draft_vocab_size as number,
    rmsNormEps: base.rmsNormEps,
    ropeTheta: base.ropeTheta,
    ropeScaling: base.ropeScaling,
    maxPositionEmbeddings: base.maxPositionEmbeddings,
    auxLayerIds: aux,
    specExit: Boolean(raw.specexit),
  };
  const f = new SafetensorsFile(modelFile);
  const signals = config.specExit ? new SafetensorsFile(path.join(dir, 'specexit', 'signals.safetensors')) : null;
  const weights = new Map<string, Float32Array>();
  for (const [name, shape] of draftTensorShapes(config)) {
    const src = isServingTensor(name) ? f : signals!;
    if (!src.has(name)) throw new DraftLoadError(`${src.path}: missing tensor '${name}' (shape [${shape}])`);
    const t = src.read(name);
    if (t.shape.join() !== shape.join())
      throw new DraftLoadError(`${src.path}: '${name}' has shape [${t.shape}], config.json implies [${shape}]`);
    const bad = nonFinite(t.data as Float32Array);
    if (bad)
      throw new DraftLoadError(
        `${src.path}: tensor '${name}' is not finite (${bad}); the run that wrote it diverged: take an earlier checkpoint`,
      );
    weights.set(name, t.data as Float32Array);
  }
  for (const name of ['d2t', 't2d']) if (!f.has(name)) throw new DraftLoadError(`${modelFile}: missing tensor '${name}'`);
  const d2t = f.read('d2t').data as BigInt64Array;
  const t2d = f.read('t2d').data as Uint8Array;
  if (d2t.length !== config.draftVocabSize || t2d.length !== config.vocabSize)
    throw new DraftLoadError(
      `${modelFile}: d2t [${d2t.length}] / t2d [${t2d.length}] do not match draft_vocab_size ${config.draftVocabSize} / vocab_size ${config.vocabSize}`,
    );
  const used = Int32Array.from(d2t, (o, i) => i + Number(o));
  return { draft: new Eagle3Draft(config, weights), config, used, t2d };
}
