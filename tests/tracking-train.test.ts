// What `specforge train` leaves to look at, end to end on a small random-weight target with held-out data
// and SpecExit heads: a run that fails after step 7 and is resumed from step-4 ends with metrics.jsonl,
// the TensorBoard event file (read back by the independent reader in tensorboard-reader.ts), curves.svg and
// summary.json agreeing, no step twice, step-best on the best evaluated checkpoint (kept by keep_last 1),
// and export-onnx --recipe taking it.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { makeRandomTarget, once, removeTempDirs, repoRoot as repo, specforge, tempDir } from './helpers.ts';
import { readEventFile } from './tensorboard-reader.ts';

after(removeTempDirs);

const work = tempDir('tracking-train-');
const target = path.join(work, 'target');
const runDir = path.join(work, 'ckpt', 'tracked');
const recipe = path.join(work, 'tracked.yaml');
const data = path.join(repo, 'data/corpus/reasoning-eval.jsonl');

before(async () => {
  await makeRandomTarget(target, 5);
  fs.writeFileSync(
    recipe,
    `model:\n  target: ${target}\n  aux_layer_ids: [1, 2, 4]\n  draft_vocab_size: 100\n` +
      `data:\n  train: ${data}\n  eval: ${data}\n  format: sharegpt\n  max_length: 64\n  store: ${path.join(work, 'store')}\n  cache_dir: ${path.join(work, 'cache')}\n` +
      `capture:\n  limit: 32\n` +
      `training:\n  batch_size: 4\n  max_steps: 8\n  learning_rate: 0.003\n  output_dir: ${path.join(work, 'ckpt')}\n` +
      `  log_interval: 1\n  eval_interval: 2\n  eval_samples: 8\n  save_interval: 4\n  keep_last: 1\n  specexit: true\n` +
      `runtime:\n  backend: wasm\n  seed: 3\n`,
  );
});

const train = (args: string[], env: Record<string, string> = {}) => specforge(['train', '--recipe', recipe, ...args], env);
const rows = () =>
  fs
    .readFileSync(path.join(runDir, 'metrics.jsonl'), 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l));
const f32 = (x: number) => Math.fround(x);

/** The run every test reads: it fails after step 7 (checkpoint step-4), then resumes from step-4 to the end. */
const scenario = once(() => {
  const failed = train([], { SPECFORGE_INJECT_FAULT: '0:7' });
  const rowsAtFailure = rows();
  const resumed = train(['--resume', 'latest']);
  return { failed, rowsAtFailure, resumed };
});

describe('a tracked run, interrupted and resumed', () => {
  test('fails after step 7 (checkpoint step-4), then resumes from step-4 to the end', () => {
    const { failed, rowsAtFailure, resumed } = scenario();
    assert.equal(failed.status, 1, failed.stdout);
    assert.match(failed.stderr, /injected fault at step 7/);
    // The interrupted run logged past its last checkpoint: steps 5-7 and the evaluation at 6.
    assert.deepEqual(
      rowsAtFailure.map((r) => `${r.split}@${r.step}`),
      ['train@1', 'train@2', 'eval@2', 'train@3', 'train@4', 'eval@4', 'train@5', 'train@6', 'eval@6', 'train@7'],
    );
    assert.equal(resumed.status, 0, resumed.stderr + resumed.stdout);
    assert.match(resumed.stdout, /resumed from .*step-4 at step 4/);
  });

  test('metrics.jsonl holds each step once', () => {
    scenario();
    const keys = rows().map((r) => `${r.split}@${r.step}`);
    const want = [1, 2, 3, 4, 5, 6, 7, 8].flatMap((s) => [`train@${s}`, ...(s % 2 === 0 ? [`eval@${s}`] : [])]);
    assert.deepEqual(keys, want);
  });

  test('the TensorBoard event file holds the same rows, at the same steps, tagged by split', () => {
    scenario();
    const dir = path.join(runDir, 'tensorboard');
    const files = fs.readdirSync(dir);
    assert.equal(files.length, 1, `one event file: ${files.join(', ')}`);
    assert.match(files[0], /^events\.out\.tfevents\.\d+\./);
    const events = readEventFile(path.join(dir, files[0]));
    assert.equal(events[0].fileVersion, 'brain.Event:2');
    const scalars = events.slice(1);
    const metrics = rows();
    assert.deepEqual(
      scalars.map((e) => e.step),
      metrics.map((r) => r.step),
    );
    scalars.forEach((e, i) => {
      const r = metrics[i];
      const tag = (t: string) => e.values!.find((v) => v.tag === t)?.value;
      assert.equal(e.wallTime, r.time, 'the row time is the event wall time');
      assert.equal(tag(`${r.split}/loss_0`), f32(r.loss[0]));
      assert.equal(tag(`${r.split}/acc_6`), f32(r.acc[6]));
      assert.equal(tag(`${r.split}/tau`), f32(r.tau));
      if (r.split === 'train') {
        assert.equal(tag('train/lr'), f32(r.lr));
        assert.equal(tag('train/grad_norm'), f32(r.grad_norm));
        assert.equal(tag('train/tokens_per_s'), f32(r.tokens_per_s));
        assert.equal(tag('train/specexit_loss_2'), f32(r.specexit_loss[2]));
      } else {
        assert.equal(tag('eval/specexit/confidence_auc'), r.specexit.confidence_auc === null ? undefined : f32(r.specexit.confidence_auc));
        assert.equal(tag('eval/specexit/progress_mae'), f32(r.specexit.progress_mae));
      }
    });
  });

  test('step-best points at the best evaluated checkpoint, which keep_last 1 keeps', () => {
    const summaryOut = scenario().resumed.stdout;
    const taus = new Map(
      rows()
        .filter((r) => r.split === 'eval' && r.step % 4 === 0)
        .map((r) => [r.step, r.tau as number]),
    );
    const bestStep = [...taus.entries()].reduce((a, b) => (b[1] > a[1] ? b : a))[0];
    assert.equal(fs.readlinkSync(path.join(runDir, 'step-best')), `step-${bestStep}`);
    const kept = fs.readdirSync(runDir).filter((d) => /^step-\d+$/.test(d));
    assert.deepEqual(kept.sort(), [...new Set([`step-${bestStep}`, 'step-8'])].sort());

    const summary = JSON.parse(fs.readFileSync(path.join(runDir, 'summary.json'), 'utf8'));
    assert.equal(summary.steps, 8);
    assert.deepEqual(summary.best, { step: bestStep, tau: taus.get(bestStep), checkpoint: path.join(runDir, `step-${bestStep}`) });
    assert.equal(summary.checkpoint, path.join(runDir, `step-${bestStep}`));
    assert.equal(summary.last_checkpoint, path.join(runDir, 'step-8'));
    assert.equal(summary.resumed_from, path.join(runDir, 'step-4'));
    assert.equal(summary.last_eval.step, 8);
    assert.ok(summary.tokens > 0 && summary.wall_seconds > 0);
    assert.equal(summary.tokens_per_s, summary.tokens / summary.wall_seconds);
    assert.ok(summary.peak_rss_bytes > 0 && summary.wasm_heap_bytes > 0);
    assert.equal(summary.files.tensorboard, path.join(runDir, 'tensorboard'));

    // The same, printed at the end.
    assert.match(summaryOut, /trained to step 8 in [\d.]+ min \(\d+ tok\/s\); checkpoint .*step-8/);
    assert.match(summaryOut, /peak memory: [\d.]+ GiB resident, wasm heap/);
    assert.match(summaryOut, new RegExp(`best held-out simulated acceptance length ${taus.get(bestStep)!.toFixed(3)} at step ${bestStep}`));
    assert.match(summaryOut, /checkpoint to use: .*step-\d+/);
    assert.match(summaryOut, /tensorboard --logdir .*tensorboard/);
  });

  test('curves.svg draws every row once and marks the best held-out tau', () => {
    scenario();
    const svg = fs.readFileSync(path.join(runDir, 'curves.svg'), 'utf8');
    const bestStep = Number(fs.readlinkSync(path.join(runDir, 'step-best')).slice('step-'.length));
    const evals = rows().filter((r) => r.split === 'eval');
    const bestTau = Math.max(...evals.map((r) => r.tau));
    const bestEval = evals.find((r) => r.tau === bestTau)!;
    // The picture marks the best evaluation; step-best is the best among evaluated checkpoints (steps 4 and 8).
    assert.match(svg, new RegExp(`best held-out acceptance length ${bestTau.toFixed(3)} at step ${bestEval.step}`));
    assert.ok(bestEval.tau >= rows().find((r) => r.split === 'eval' && r.step === bestStep).tau);
    // One held-out point per evaluation on the held-out tau line, and a training line of 8 points.
    const tauLine = /<polyline class="series"[^>]*points="([^"]+)"><title>held-out<\/title>/g;
    const lines = [...svg.matchAll(tauLine)].map((m) => m[1].split(' ').length);
    assert.deepEqual(lines, [4, 4], 'held-out loss_0 and tau: 4 evaluations each');
    assert.equal([...svg.matchAll(/<polyline class="series"[^>]*points="([^"]+)"><title>train<\/title>/g)][0][1].split(' ').length, 8);
  });

  test('export-onnx --recipe takes the run step-best', () => {
    scenario();
    const bestStep = fs.readlinkSync(path.join(runDir, 'step-best'));
    const out = path.join(work, 'export');
    const r = specforge(['export-onnx', '--recipe', recipe, '--out', out, '--format', 'sglang']);
    assert.equal(r.status, 0, r.stderr);
    assert.ok(r.stdout.includes(`checkpoint: the run's best (step-best), ${path.join(runDir, bestStep)}`), r.stdout);
    assert.ok(fs.existsSync(path.join(out, 'sglang', 'model.safetensors')));
    const both = specforge(['export-onnx', '--recipe', recipe, '--checkpoint', runDir, '--out', out]);
    assert.equal(both.status, 1, both.stdout);
    assert.match(both.stderr, /mutually exclusive/);
  });
});
