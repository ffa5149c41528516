// Training with SpecExit heads on: the signal loss joins the TTT loss, held-out signal metrics are
// reported, and the checkpoint stays a plain EAGLE-3 folder with the signal rows in their own file.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, test } from 'node:test';
import { loadDraftCheckpoint } from '../src/draft/load.ts';
import { SafetensorsFile } from '../src/io/safetensors.ts';
import { specExitLabels } from '../src/specexit/labels.ts';
import { ArrowStore } from '../src/store/reader.ts';
import { makeRandomTarget, removeTempDirs, repoRoot as repo, specforge, tempDir } from './helpers.ts';

after(removeTempDirs);

/**
 * The held-out signal metrics recomputed here from a checkpoint's signal rows and the first `n` samples of
 * an eval store: z = W aux in plain arithmetic, confidence AUC by counting pairs (ties half), progress and
 * remaining-token mean absolute errors over the spans.
 */
async function signalMetrics(checkpoint: string, evalStore: string, n: number) {
  const w = new SafetensorsFile(path.join(checkpoint, 'specexit', 'signals.safetensors')).read('specexit.signals.weight');
  const [rowsW, F] = w.shape;
  assert.equal(rowsW, 3);
  const W = w.data as Float32Array;
  const store = await ArrowStore.open(evalStore);
  const sigmoid = (x: number) => 1 / (1 + Math.exp(-x));
  const pos: number[] = [];
  const neg: number[] = [];
  let prog = 0;
  let remain = 0;
  let spans = 0;
  for (let i = 0; i < n; i++) {
    const s = await store.get(i);
    const l = specExitLabels(s.inputIds.length, s.thinkSpans, s.answerPositions, () => s.answer !== '');
    for (let t = 0; t < s.inputIds.length; t++) {
      const z = [0, 1, 2].map((r) => {
        let acc = 0;
        for (let k = 0; k < F; k++) acc += W[r * F + k] * s.aux[t * F + k];
        return acc;
      });
      if (l.confidenceMask[t]) (l.confidence[t] === 1 ? pos : neg).push(sigmoid(z[0]));
      if (l.spanMask[t]) {
        prog += Math.abs(sigmoid(z[1]) - l.progress[t]);
        remain += Math.abs(Math.exp(z[2]) - Math.exp(l.logRemaining[t]));
        spans++;
      }
    }
  }
  await store.close();
  let wins = 0;
  for (const p of pos) for (const q of neg) wins += p > q ? 1 : p === q ? 0.5 : 0;
  return {
    auc: wins / (pos.length * neg.length),
    pairs: pos.length * neg.length,
    progress_mae: prog / spans,
    remaining_mae_tokens: remain / spans,
  };
}

test('train with training.specexit on a reasoning split', async () => {
  const work = tempDir('specexit-train-');
  const target = path.join(work, 'target');
  await makeRandomTarget(target, 5);
  const data = path.join(repo, 'data/corpus/reasoning-eval.jsonl');
  const recipe = path.join(work, 'se.yaml');
  fs.writeFileSync(
    recipe,
    `model:\n  target: ${target}\n  aux_layer_ids: [1, 2, 4]\n  draft_vocab_size: 100\n` +
      `data:\n  train: ${data}\n  eval: ${data}\n  format: sharegpt\n  max_length: 128\n  store: ${path.join(work, 'store')}\n  cache_dir: ${path.join(work, 'cache')}\n` +
      `capture:\n  limit: 24\n` +
      `training:\n  batch_size: 4\n  max_steps: 6\n  learning_rate: 0.003\n  output_dir: ${path.join(work, 'ckpt')}\n  log_interval: 2\n  eval_interval: 6\n  eval_samples: 16\n  specexit: true\n  specexit_weights: [1, 1, 0.1]\n` +
      `runtime:\n  backend: wasm\n`,
  );
  const r = specforge(['train', '--recipe', recipe]);
  assert.equal(r.status, 0, r.stderr + r.stdout);
  const rows = fs
    .readFileSync(path.join(work, 'ckpt', 'se', 'metrics.jsonl'), 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l));
  const train = rows.filter((m) => m.split === 'train');
  assert.ok(train.every((m) => m.specexit_loss.length === 3 && m.specexit_loss.every((x: number) => x > 0)));
  const ev = rows.find((m) => m.split === 'eval');
  const dir = path.join(work, 'ckpt', 'se', 'step-6');
  // The held-out signal metrics are those of the step-6 signal rows on the first 16 eval samples.
  assert.equal(ev.step, 6);
  const mine = await signalMetrics(dir, path.join(work, 'store', 'eval'), 16);
  console.log(`# SpecExit eval: ${JSON.stringify(ev.specexit)}; recomputed ${JSON.stringify(mine)}`);
  // Float32 products against these double ones may swap a near-tie pair or two.
  assert.ok(Math.abs(ev.specexit.confidence_auc - mine.auc) <= 2 / mine.pairs, `AUC ${ev.specexit.confidence_auc} vs ${mine.auc}`);
  assert.ok(
    Math.abs(ev.specexit.progress_mae - mine.progress_mae) <= 1e-5,
    `progress MAE ${ev.specexit.progress_mae} vs ${mine.progress_mae}`,
  );
  assert.ok(
    Math.abs(ev.specexit.remaining_mae_tokens - mine.remaining_mae_tokens) <= 1e-5 * mine.remaining_mae_tokens,
    `remaining MAE ${ev.specexit.remaining_mae_tokens} vs ${mine.remaining_mae_tokens}`,
  );
  assert.deepEqual(new SafetensorsFile(path.join(dir, 'model.safetensors')).info('fc.weight').shape, [32, 96], 'fc stays [H, 3Ht]');
  assert.ok(!new SafetensorsFile(path.join(dir, 'model.safetensors')).names().some((n) => n.startsWith('specexit')));
  assert.deepEqual(new SafetensorsFile(path.join(dir, 'specexit', 'signals.safetensors')).info('specexit.signals.weight').shape, [3, 96]);
  const loaded = loadDraftCheckpoint(dir);
  assert.ok(loaded.config.specExit && loaded.draft.params.has('specexit.signals.weight'));
  loaded.draft.dispose();

  // Serving layouts: plain EAGLE-3 (bf16) and the SpecExit widened fc.
  const out = path.join(work, 'export');
  const e = specforge(['export-onnx', '--checkpoint', dir, '--out', out, '--format', 'sglang', 'specexit']);
  assert.equal(e.status, 0, e.stderr);
  const plain = new SafetensorsFile(path.join(out, 'sglang', 'model.safetensors'));
  assert.deepEqual(plain.info('fc.weight'), { dtype: 'BF16', shape: [32, 96] });
  assert.deepEqual(plain.info('d2t').dtype, 'I64');
  const wide = new SafetensorsFile(path.join(out, 'specexit', 'model.safetensors'));
  assert.deepEqual(wide.info('fc.weight').shape, [35, 96]);
  const extra = (wide.read('fc.weight').data as Float32Array).slice(32 * 96);
  const signals = new SafetensorsFile(path.join(dir, 'specexit', 'signals.safetensors')).read('specexit.signals.weight')
    .data as Float32Array;
  extra.forEach((x, i) =>
    assert.ok(Math.abs(x - signals[i]) <= Math.abs(signals[i]) / 128 + 1e-6, 'the last three fc rows are the signal rows (bf16)'),
  );
  assert.equal(JSON.parse(fs.readFileSync(path.join(out, 'specexit', 'config.json'), 'utf8')).specexit.layout, 'widened_fc');
  assert.deepEqual(JSON.parse(fs.readFileSync(path.join(out, 'sglang', 'config.json'), 'utf8')).architectures, ['LlamaForCausalLMEagle3']);
});
