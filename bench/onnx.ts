// ONNX export figures for a trained draft of the shipped tiny target: file sizes of the float32 and int8
// exports, their largest differences from the tfjs draft on real inputs (the target's aux features over
// held-out prompts, then a greedy chain), and tau (chain) with the tfjs draft, the float32 ONNX draft and
// the int8 ONNX draft through `specforge eval`.
// Usage: npm run bench:onnx -- --checkpoint DIR [--recipe recipes/quickstart.yaml] [--limit 30] [--draft-steps 7] [--max-new-tokens N] [--out DIR]
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../src/backend/backend.ts';
import type { TemplateName } from '../src/data/templates.ts';
import { OnnxDrafter } from '../src/decode/onnx-drafter.ts';
import { readRecipePrompts, tokenizePrompts } from '../src/decode/prompts.ts';
import { runEval } from '../src/decode/run.ts';
import { Eagle3Drafter } from '../src/decode/tfjs-drafter.ts';
import { loadDraftCheckpoint } from '../src/draft/load.ts';
import { exportDraftOnnx } from '../src/export/onnx.ts';
import { loadTokenizer } from '../src/io/tokenizer.ts';
import { loadRecipe } from '../src/recipe/recipe.ts';
import { TfjsTarget } from '../src/target/tfjs-target.ts';

const arg = (name: string, dflt?: string) =>
  process.argv.includes(`--${name}`) ? process.argv[process.argv.indexOf(`--${name}`) + 1] : dflt;
const checkpoint = arg('checkpoint');
if (!checkpoint) throw new Error('--checkpoint DIR (a trained draft of the recipe target) is required');
const recipeFile = arg('recipe', fileURLToPath(new URL('../recipes/quickstart.yaml', import.meta.url)))!;
const limit = Number(arg('limit', '30'));
const steps = Number(arg('draft-steps', '7'));
const maxNew = arg('max-new-tokens');
const out = arg('out') ?? fs.mkdtempSync(path.join(os.tmpdir(), 'bench-onnx-'));
const r = loadRecipe(recipeFile, {
  'runtime.backend': 'wasm',
  'eval.limit': limit,
  'eval.draft_steps': steps,
  'eval.tree': null,
  'eval.temperature': 0,
  'eval.specexit': false,
  ...(maxNew ? { 'eval.max_new_tokens': Number(maxNew) } : {}),
});
await initBackend('wasm');

// Exports (weights inline so that one file's size is the whole model).
const dirs = { f32: path.join(out, 'f32'), int8: path.join(out, 'int8') };
exportDraftOnnx(checkpoint, dirs.f32, { target: r.model.target, externalData: 'never' });
exportDraftOnnx(checkpoint, dirs.int8, { target: r.model.target, externalData: 'never', quantize: 'int8' });
const size = (d: string) => fs.statSync(path.join(d, 'model.onnx')).size;
const [sf, sq] = [size(dirs.f32), size(dirs.int8)];

// Differences on real inputs: each prompt's aux features as context, then a greedy chain following the tfjs draft.
const target = TfjsTarget.load(r.model.target);
const loaded = loadDraftCheckpoint(checkpoint);
const ref = new Eagle3Drafter(loaded.draft, target.embeddings(), loaded.used);
const onnx = { f32: new OnnxDrafter(dirs.f32), int8: new OnnxDrafter(dirs.int8) };
const tok = loadTokenizer(r.model.target);
const prompts = tokenizePrompts(
  await readRecipePrompts(r.data.eval!, { format: r.data.format, skipInvalid: r.data.skip_invalid, limit }),
  tok,
  r.data.template as TemplateName,
);
const layers = loaded.config.auxLayerIds;
// Signals: confidence and progress in (0, 1) by absolute difference; remaining (a token count, up to
// hundreds) by relative difference.
const worst = {
  f32: { logits: 0, signals: 0, remainingRel: 0 },
  int8: { logits: 0, signals: 0, remainingRel: 0, range: 0, top1: 0, of: 0 },
};
const argmax = (x: Float32Array) => x.reduce((b, v, i) => (v > x[b] ? i : b), 0);
for (const p of prompts) {
  const fwd = target.forward({ ids: [p.ids] }, { layers });
  const feats = tf.tidy(
    () =>
      tf
        .concat(
          layers.map((l) => fwd.layers.get(l)!),
          -1,
        )
        .slice([0, 0, 0], [1, p.ids.length - 1, -1]) as tf.Tensor3D,
  );
  tf.dispose([fwd.logits!, fwd.finalNormed, ...fwd.layers.values()]);
  for (const d of [ref, onnx.f32, onnx.int8]) {
    d.reset();
    d.extend(p.ids.slice(1), feats);
  }
  const chain: number[] = [];
  for (let k = 0; k <= steps; k++) {
    const [a] = ref.expand([chain]);
    for (const kind of ['f32', 'int8'] as const) {
      const [b] = onnx[kind].expand([chain]);
      for (let j = 0; j < a.logits.length; j++) worst[kind].logits = Math.max(worst[kind].logits, Math.abs(a.logits[j] - b.logits[j]));
      if (kind === 'int8') {
        for (const x of a.logits) worst.int8.range = Math.max(worst.int8.range, Math.abs(x));
        worst.int8.of++;
        if (argmax(a.logits) === argmax(b.logits)) worst.int8.top1++;
      }
    }
    chain.push(a.vocab[argmax(a.logits)]);
  }
  if (loaded.config.specExit) {
    const sa = ref.signals(feats);
    for (const kind of ['f32', 'int8'] as const) {
      const sb = onnx[kind].signals(feats);
      sa.forEach((x, j) => {
        worst[kind].signals = Math.max(
          worst[kind].signals,
          Math.abs(x.confidence - sb[j].confidence),
          Math.abs(x.progress - sb[j].progress),
        );
        worst[kind].remainingRel = Math.max(worst[kind].remainingRel, Math.abs(x.remaining - sb[j].remaining) / x.remaining);
      });
    }
  }
  feats.dispose();
}
ref.dispose();
onnx.f32.dispose();
onnx.int8.dispose();
loaded.draft.dispose();
target.dispose();

// tau through eval: the same prompts and settings, three drafters.
const tau: Record<string, number | null> = {};
for (const [name, o] of [
  ['tfjs', { checkpoint }],
  ['onnx f32', { draftOnnx: dirs.f32 }],
  ['onnx int8', { draftOnnx: dirs.int8 }],
] as const) {
  const { report } = await runEval(r, { ...o, out: path.join(out, `eval-${name.replace(' ', '-')}`) });
  tau[name] = report.tau;
}

console.log(`checkpoint ${checkpoint}; ${prompts.length} held-out prompts of ${path.basename(recipeFile)}, chain ${steps}, greedy`);
console.log(`model.onnx float32 ${sf} bytes, int8 ${sq} bytes: ratio ${(sq / sf).toFixed(3)}`);
console.log(
  `max abs vs tfjs (context + ${steps}-step chain): float32 logits ${worst.f32.logits.toExponential(2)}, confidence/progress ${worst.f32.signals.toExponential(2)}, remaining ${worst.f32.remainingRel.toExponential(2)} relative`,
);
console.log(
  `                                        int8 logits ${worst.int8.logits.toExponential(2)} (${((100 * worst.int8.logits) / worst.int8.range).toFixed(2)}% of max |logit| ${worst.int8.range.toFixed(2)}), confidence/progress ${worst.int8.signals.toExponential(2)}, remaining ${worst.int8.remainingRel.toExponential(2)} relative, top-1 agreement ${worst.int8.top1}/${worst.int8.of}`,
);
console.log(`tau: tfjs ${tau.tfjs?.toFixed(3)}, onnx float32 ${tau['onnx f32']?.toFixed(3)}, onnx int8 ${tau['onnx int8']?.toFixed(3)}`);
console.log(`exports and eval reports under ${out}`);
