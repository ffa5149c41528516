// `export-onnx --format onnx`: a draft checkpoint (and, for input_ids, its target's embedding table) to
// <out>/model.onnx, float32 or weight-only int8. The graph is described in onnx-draft.ts.
import fs from 'node:fs';
import path from 'node:path';
import { loadDraftCheckpoint } from '../draft/load.ts';
import { Checkpoint } from '../io/safetensors.ts';
import type { DraftConfig } from '../draft/config.ts';
import { buildDraftModel } from './onnx-draft.ts';
import { type ExternalData, writeOnnxModel } from './onnx-write.ts';

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
  let ck: Checkpoint;
  try {
    ck = new Checkpoint(target);
  } catch (e) {
    throw new Error(`--target ${target}: ${(e as Error).message}`);
  }
  if (!ck.has(name)) throw new Error(`${target}: no tensor '${name}' (the target's input embedding)`);
  const t = ck.read(name);
  if (t.shape.join() !== [c.vocabSize, c.hiddenSize].join()) throw new Error(`${target}: '${name}' is [${t.shape}]; the draft needs [${c.vocabSize}, ${c.hiddenSize}] (vocab_size, hidden_size)`);
  return t.data as Float32Array;
}

/** Writes <out>/model.onnx (+ model.onnx.data); returns the files written. */
export function exportDraftOnnx(checkpoint: string, out: string, o: OnnxExportOptions = {}): string[] {
  const { draft, config, used } = loadDraftCheckpoint(checkpoint);
  try {
    const embed = o.target ? readTargetEmbedding(o.target, config) : null;
    const model = buildDraftModel(config, draft.exportWeights(), used, { quantize: o.quantize ?? null, topk: o.topk ?? 0, embed });
    fs.mkdirSync(out, { recursive: true });
    return writeOnnxModel(path.join(out, 'model.onnx'), model, o.externalData ?? 'auto');
  } finally {
    draft.dispose();
  }
}
