// Serving layouts of a trained draft, written from a checkpoint folder:
//  - 'sglang': the EAGLE-3 folder SGLang and vLLM load (config.json + model.safetensors in bf16 or f32,
//    no training state);
//  - 'specexit': the same with the SpecExit signal rows appended to fc (fc.weight [H + 3, 3*Ht], the public
//    SpecExit layout) for SpecExit-aware servers; config.json says so, and names policy.json, the exit
//    policy calibrated for the draft, when there is one.
import fs from 'node:fs';
import path from 'node:path';
import { draftConfigJson } from '../draft/config.ts';
import { loadDraftCheckpoint } from '../draft/load.ts';
import { type Dtype, type StoredTensor, writeSafetensors } from '../io/safetensors.ts';
import { writeAtomic } from '../io/atomic.ts';
import { SafetensorsFile } from '../io/safetensors.ts';
import { checkpointPolicy, EXPORT_POLICY_FILE, writePolicyFile } from '../specexit/policy-file.ts';

export type ServingFormat = 'sglang' | 'specexit';

export function writeServingFolder(checkpoint: string, out: string, format: ServingFormat, dtype: 'F32' | 'BF16' = 'BF16'): string[] {
  const { draft, config } = loadDraftCheckpoint(checkpoint);
  try {
    if (format === 'specexit' && !config.specExit)
      throw new Error(`${checkpoint}: this draft has no SpecExit signal heads (train with training.specexit: true)`);
    const weights = draft.exportWeights();
    const src = new SafetensorsFile(path.join(checkpoint, 'model.safetensors'));
    const tensors = new Map<string, StoredTensor>();
    for (const [name, w] of weights) {
      if (name.startsWith('specexit.')) continue;
      tensors.set(name, { dtype: dtype as Dtype, shape: w.shape, data: w.data });
    }
    if (format === 'specexit') {
      const fc = weights.get('fc.weight')!;
      const sig = weights.get('specexit.signals.weight')!;
      const data = new Float32Array(fc.data.length + sig.data.length);
      data.set(fc.data);
      data.set(sig.data, fc.data.length);
      tensors.set('fc.weight', { dtype: dtype as Dtype, shape: [fc.shape[0] + 3, fc.shape[1]], data });
    }
    tensors.set('d2t', src.read('d2t') as StoredTensor);
    tensors.set('t2d', src.read('t2d') as StoredTensor);
    fs.mkdirSync(out, { recursive: true });
    writeSafetensors(path.join(out, 'model.safetensors'), tensors, { format: 'pt' });
    const json = draftConfigJson({ ...config, specExit: false }, dtype === 'BF16' ? 'bfloat16' : 'float32');
    const files = [path.join(out, 'config.json'), path.join(out, 'model.safetensors')];
    const policy = format === 'specexit' ? checkpointPolicy(checkpoint) : null;
    if (format === 'specexit') {
      json.specexit = {
        layout: 'widened_fc',
        fc_extra_outputs: ['confidence', 'progress', 'log_remaining'],
        ...(policy ? { exit_policy: EXPORT_POLICY_FILE } : {}),
      };
      if (policy) {
        writePolicyFile(path.join(out, EXPORT_POLICY_FILE), policy);
        files.push(path.join(out, EXPORT_POLICY_FILE));
      }
    }
    writeAtomic(path.join(out, 'config.json'), [JSON.stringify(json, null, 2) + '\n']);
    return files;
  } finally {
    draft.dispose();
  }
}
