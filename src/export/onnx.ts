// `export-onnx --format onnx`: a draft checkpoint (and, for input_ids, its target's embedding table) to
// <out>/model.onnx, float32 or weight-only int8. The graph is described in onnx-draft.ts.
import fs from 'node:fs';
import path from 'node:path';
import { loadDraftCheckpoint } from '../draft/load.ts';
import { SafetensorsFolder } from '../io/safetensors.ts';
import type { DraftConfig } from '../draft/config.ts';
import { writeAtomic } from '../io/atomic.ts';
import { ONNX_OPSET, buildDraftModel, draftGraphNames } from './onnx-draft.ts';
import { type ExternalData, writeOnnxModel } from '../io/onnx-write.ts';
import { checkpointPolicy, type ExitPolicyJson, policyJson } from '../specexit/policy-file.ts';

export interface OnnxExportOptions {
  quantize?: 'int8' | null;
  topk?: number;
  /** Target folder whose model.embed_tokens.weight goes into the file (input_ids); absent: inputs_embeds. */
  target?: string | null;
  externalData?: ExternalData;
}

/** The target's input embedding table [V, H], checked against the draft's config. */
export function readTargetEmbedding(target: string, c: DraftConfig): Float32Array {
  const name = 'model.embed_tokens.weight';
  let ck: SafetensorsFolder;
  try {
    ck = new SafetensorsFolder(target);
  } catch (e) {
    throw new Error(`--target ${target}: ${(e as Error).message}`);
  }
  if (!ck.has(name)) throw new Error(`${target}: no tensor '${name}' (the target's input embedding)`);
  const t = ck.read(name);
  if (t.shape.join() !== [c.vocabSize, c.hiddenSize].join())
    throw new Error(`${target}: '${name}' is [${t.shape}]; the draft needs [${c.vocabSize}, ${c.hiddenSize}] (vocab_size, hidden_size)`);
  return t.data as Float32Array;
}

/**
 * draft.json beside model.onnx: what a runtime needs that the graph does not say by itself (which target
 * layers feed aux_hidden_states, the cache geometry, the draft-to-target id map for the logits columns).
 */
export interface OnnxDraftInfo {
  format: 'specforge-eagle3-onnx';
  model: string;
  opset: number;
  quantize: 'none' | 'int8';
  topk: number;
  /** 'in-file': input_ids; 'input': inputs_embeds (the target's embedding rows). */
  embedding: 'in-file' | 'input';
  inputs: string[];
  outputs: string[];
  hidden_size: number;
  target_hidden_size: number;
  aux_layer_ids: number[];
  num_key_value_heads: number;
  head_dim: number;
  vocab_size: number;
  draft_vocab_size: number;
  specexit: boolean;
  /** Target id of each draft-vocabulary id (column of logits). */
  draft_to_target: number[];
  /** The SpecExit exit policy calibrated for this draft (specexit/policy.ts, policy-file.ts), when one was. */
  specexit_policy?: ExitPolicyJson | null;
}

/** Writes <out>/model.onnx (+ model.onnx.data) and <out>/draft.json; returns the files written. */
export function exportDraftOnnx(checkpoint: string, out: string, o: OnnxExportOptions = {}): string[] {
  const { draft, config, used } = loadDraftCheckpoint(checkpoint);
  try {
    const embed = o.target ? readTargetEmbedding(o.target, config) : null;
    const opts = { quantize: o.quantize ?? null, topk: o.topk ?? 0, embed };
    const model = buildDraftModel(config, draft.exportWeights(), used, opts);
    fs.mkdirSync(out, { recursive: true });
    const files = writeOnnxModel(path.join(out, 'model.onnx'), model, o.externalData ?? 'auto');
    const names = draftGraphNames(config, opts);
    const info: OnnxDraftInfo = {
      format: 'specforge-eagle3-onnx',
      model: 'model.onnx',
      opset: ONNX_OPSET,
      quantize: opts.quantize ?? 'none',
      topk: opts.topk,
      embedding: embed ? 'in-file' : 'input',
      inputs: names.inputs,
      outputs: names.outputs,
      hidden_size: config.hiddenSize,
      target_hidden_size: config.targetHiddenSize,
      aux_layer_ids: config.auxLayerIds,
      num_key_value_heads: config.numKvHeads,
      head_dim: config.headDim,
      vocab_size: config.vocabSize,
      draft_vocab_size: config.draftVocabSize,
      specexit: Boolean(config.specExit),
      draft_to_target: Array.from(used),
    };
    const policy = config.specExit ? checkpointPolicy(checkpoint) : null;
    if (policy) info.specexit_policy = policyJson(policy);
    const infoFile = path.join(out, 'draft.json');
    writeAtomic(infoFile, [JSON.stringify(info, null, 2) + '\n']);
    return [...files, infoFile];
  } finally {
    draft.dispose();
  }
}
