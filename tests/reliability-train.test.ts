// `specforge train` as a careless user meets it (issue 19), end to end on a small random-weight target:
// a run that diverges stops naming a checkpoint that is good, and never writes or keeps one that is not;
// eval and export refuse weights that are not finite; a run folder holds one run at a time (its lock, a
// fresh run refused into an earlier run's folder unless --overwrite, a resume from an older checkpoint
// likewise); a full disk, a damaged checkpoint, an empty eval file and a recipe that cannot make one step
// are one line naming the file or field, the last two before any work.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, test } from 'node:test';
import { SafetensorsFile } from '../src/io/safetensors.ts';
import { makeRandomTarget, runNode, withChildAtMarker } from './helpers.ts';

const repo = fileURLToPath(new URL('..', import.meta.url));
const bin = path.join(repo, 'bin', 'specforge.js');
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'reliability-train-'));
const target = path.join(work, 'target');
const ckpt = path.join(work, 'ckpt');
const data = path.join(repo, 'data/corpus/reasoning-eval.jsonl');
const diskFull = path.join(repo, 'tests/jobs/disk-full.mjs');

before(() => makeRandomTarget(target, 5));
after(() => fs.rmSync(work, { recursive: true, force: true }));

/** A recipe `name`.yaml (its run folder ckpt/<name>); recipes share one store of 40 samples (+ 400 held out) unless `store` names another. */
function recipe(
  name: string,
  training: Record<string, unknown> = {},
  o: { eval?: string | null; dataLines?: string; store?: string; trainStep?: 'ort' | 'tfjs' } = {},
): string {
  const file = path.join(work, `${name}.yaml`);
  const t = Object.entries({
    batch_size: 2,
    max_steps: 6,
    learning_rate: 0.003,
    output_dir: ckpt,
    log_interval: 1,
    save_interval: 2,
    ...training,
  })
    .map(([k, v]) => `  ${k}: ${v}\n`)
    .join('');
  const evalFile = o.eval === undefined ? null : o.eval;
  fs.writeFileSync(
    file,
    `model:\n  target: ${target}\n  aux_layer_ids: [1, 2, 4]\n  draft_vocab_size: 100\n` +
      `data:\n  train: ${data}\n${evalFile ? `  eval: ${evalFile}\n` : ''}${o.dataLines ?? ''}  format: sharegpt\n  max_length: 64\n  store: ${path.join(work, o.store ?? 'store')}\n  cache_dir: ${path.join(work, 'cache')}\n` +
      `capture:\n  batch_size: 4\n  samples_per_shard: 16\n  limit: 40\n` +
      `training:\n${t}runtime:\n  backend: wasm\n  seed: 7\n${o.trainStep ? `  train_step: ${o.trainStep}\n` : ''}`,
  );
  return file;
}

const specforge = (args: string[], env: Record<string, string> = {}, preload: string[] = []) => runNode([...preload, bin, ...args], env);
const train = (file: string, args: string[] = [], env: Record<string, string> = {}) => specforge(['train', '--recipe', file, ...args], env);
const runDir = (name: string) => path.join(ckpt, name);
/** The step-N checkpoint folders of a run, by name. */
const stepsOf = (name: string) =>
  fs
    .readdirSync(runDir(name))
    .filter((d) => /^step-\d+$/.test(d))
    .sort((a, b) => Number(a.slice(5)) - Number(b.slice(5)));
/** The one line of a failed command's error (what follows "specforge: "). */
const errorLine = (r: { stderr: string }) => {
  const lines = r.stderr.split('\n').filter((l) => l.startsWith('specforge: '));
  assert.equal(lines.length, 1, r.stderr);
  assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace');
  return lines[0];
};
/** Largest |value| over every float tensor of every safetensors file under `dir`, and whether all are finite. */
function scan(dir: string): { max: number; finite: boolean } {
  let max = 0;
  let finite = true;
  for (const f of fs.readdirSync(dir, { recursive: true }) as string[]) {
    if (!f.endsWith('.safetensors')) continue;
    const file = new SafetensorsFile(path.join(dir, f));
    for (const n of file.names()) {
      const x = file.read(n).data;
      if (!(x instanceof Float32Array)) continue;
      for (const v of x) {
        if (!Number.isFinite(v)) finite = false;
        else max = Math.max(max, Math.abs(v));
      }
    }
  }
  return { max, finite };
}

describe('a run that diverges', () => {
  test('learning_rate 1e8: step 2 has a NaN gradient norm and stops the run before its NaN weights are saved', () => {
    // Before: "step 2: the loss is NaN; stopping (the last good checkpoint is .../step-2)", step-2 all NaN.
    // At this rate tfjs' kernels overflow to NaN; ONNX Runtime's saturate to a zero gradient, the next test's case.
    const r = train(recipe('lr1e8', { learning_rate: '1e8' }, { trainStep: 'tfjs' }));
    assert.notEqual(r.status, 0);
    const line = errorLine(r);
    assert.match(
      line,
      /step 2: the gradient norm is NaN \(the loss was [\d.]+\); training diverged and stopped: no checkpoint of this run is good/,
    );
    assert.match(line, /Lower training\.learning_rate \(100000000\)/);
    assert.deepEqual(stepsOf('lr1e8'), [], 'no checkpoint was written from the weights that diverged');
  });

  test('learning_rate 1e6: the draft stops learning at step 2 (gradient 0, loss above 0) and the run stops', () => {
    // Before: the run ended 0 at accuracy 0.000 with weights up to 4.7e6, never flagged.
    const r = train(recipe('lr1e6', { learning_rate: '1e6' }));
    assert.notEqual(r.status, 0);
    assert.match(
      errorLine(r),
      /step 2: the gradient is 0 while the loss is [\d.]+: the draft's activations overflow float32 \(its weights have blown up\); training diverged and stopped: no checkpoint of this run is good/,
    );
    assert.deepEqual(stepsOf('lr1e6'), []);
  });

  test('on 2 workers every rank stops at the same step, with the same words (no rank left waiting)', () => {
    const r = train(recipe('lr1e8-two', { learning_rate: '1e8' }, { trainStep: 'tfjs' }), ['--workers', '2']);
    assert.equal(r.signal, null, 'the run ended by itself');
    assert.notEqual(r.status, 0);
    assert.match(errorLine(r), /rank \d: step 2: the gradient norm is NaN .*no checkpoint of this run is good/);
    assert.deepEqual(stepsOf('lr1e8-two'), []);
  });

  test('learning_rate 10: a loss 10 times its recent mean stops the run (training.divergence_factor); null lets it run', () => {
    const r = train(recipe('lr10', { learning_rate: 10 }));
    assert.notEqual(r.status, 0);
    assert.match(
      errorLine(r),
      /step 2: the loss [\d.]+ is [\d.]+ times the mean [\d.]+ of the previous 1 step\(s\) \(training\.divergence_factor 10\)/,
    );
    // The step that diverged is logged, for a look.
    const rows = fs
      .readFileSync(path.join(runDir('lr10'), 'metrics.jsonl'), 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    assert.deepEqual(
      rows.map((x) => x.step),
      [1, 2],
    );
    const off = train(recipe('lr10-off', { learning_rate: 10, divergence_factor: 'null' }));
    assert.equal(off.status, 0, off.stderr);
  });

  test('weights blown up after step 4 are written as step-4; step 5 diverges: step-4 is set aside, step-2 (spared by keep_last 1) is named, and resumes', () => {
    // Held-out evaluation at step 4 only, so that step-4 becomes step-best and step-2 cannot be.
    const file = recipe('blowup', { keep_last: 1, eval_interval: 4, eval_samples: 8, max_steps: 8 }, { eval: data });
    const r = train(file, [], { SPECFORGE_INJECT_FAULT: '0:4:blowup' });
    assert.notEqual(r.status, 0);
    const dir = runDir('blowup');
    assert.equal(
      errorLine(r),
      `specforge: step 5: ${/the gradient (norm is NaN|is 0)[^;]*/.exec(r.stderr)![0]}; training diverged and stopped: step-4, written from the weights that diverged, is set aside as ${dir}/step-4.diverged; the last good checkpoint is ${dir}/step-2. Lower training.learning_rate (0.003) or check the data, and start again (--overwrite, or another training.run_id)`,
    );
    assert.deepEqual(stepsOf('blowup'), ['step-2']);
    assert.ok(scan(path.join(dir, 'step-4.diverged')).max > 1e4, 'the set-aside checkpoint holds the blown-up weights');
    assert.ok(scan(path.join(dir, 'step-2')).max < 100, 'the named one does not');
    assert.equal(fs.lstatSync(path.join(dir, 'step-best'), { throwIfNoEntry: false }), undefined, 'step-best no longer points at step-4');
    // The named checkpoint is good: the run continues from it to the end.
    const resumed = train(file, ['--resume', 'latest']);
    assert.equal(resumed.status, 0, resumed.stderr);
    assert.match(resumed.stdout, /resumed from .*step-2 at step 2/);
  });

  test('weights that are not finite are never written: NaN after step 4 stops the run at its checkpoint, naming step-2', () => {
    const r = train(recipe('nan'), [], { SPECFORGE_INJECT_FAULT: '0:4:nan' });
    assert.notEqual(r.status, 0);
    const dir = runDir('nan');
    assert.match(
      errorLine(r),
      new RegExp(
        `step 4: not writing ${dir}/step-4: the weight '[\\w.]+' is not finite \\(NaN at index 0; 1 of \\d+ values are not finite\\); training diverged and stopped: the last good checkpoint is ${dir}/step-2\\.`,
      ),
    );
    assert.deepEqual(
      fs.readdirSync(dir).filter((d) => d.startsWith('step-')),
      ['step-2'],
      'nothing of step-4, not even a temporary folder',
    );
    assert.ok(scan(path.join(dir, 'step-2')).finite);
  });
});

describe('eval and export-onnx refuse weights that are not finite', () => {
  test('a checkpoint with a NaN weight is refused naming the file and the tensor', () => {
    const file = recipe('poisoned', { max_steps: 2 }, { eval: data });
    assert.equal(train(file).status, 0);
    const step = path.join(runDir('poisoned'), 'step-2');
    const model = path.join(step, 'model.safetensors');
    const f = new SafetensorsFile(model);
    const header = f.info('midlayer.mlp.up_proj.weight');
    // The tensor's first float, in place (8-byte length, the JSON header, then the data at its offset).
    const bytes = fs.readFileSync(model);
    const headerLen = Number(bytes.readBigUInt64LE(0));
    const offsets = JSON.parse(bytes.subarray(8, 8 + headerLen).toString())['midlayer.mlp.up_proj.weight'].data_offsets;
    assert.equal(header.dtype, 'F32');
    bytes.writeFloatLE(Number.NaN, 8 + headerLen + offsets[0]);
    fs.writeFileSync(model, bytes);
    const want = new RegExp(
      `${model}: tensor 'midlayer\\.mlp\\.up_proj\\.weight' is not finite \\(NaN at index 0; 1 of \\d+ values are not finite\\)`,
    );
    const exported = specforge(['export-onnx', '--checkpoint', step, '--out', path.join(work, 'poisoned-export')]);
    assert.equal(exported.status, 1);
    assert.match(errorLine(exported), want);
    assert.ok(!fs.existsSync(path.join(work, 'poisoned-export', 'onnx', 'model.onnx')));
    const evaluated = specforge(['eval', '--recipe', file, '--checkpoint', step, '--limit', '1', '--max-new-tokens', '4']);
    assert.equal(evaluated.status, 1);
    assert.match(errorLine(evaluated), want);
  });
});

describe('a run folder holds one run', () => {
  test('a second run with --max-steps 3 into the folder of a finished run is refused; --overwrite replaces the run, and keep_last keeps the step-3 it announces', () => {
    // Before: "checkpoint .../step-3", but keep_last had deleted step-3 and kept the old run's step-4 and step-6.
    const file = recipe('again', { keep_last: 2 });
    assert.equal(train(file).status, 0);
    assert.deepEqual(stepsOf('again'), ['step-4', 'step-6']);
    const refused = train(file, ['--max-steps', '3']);
    assert.equal(refused.status, 1);
    assert.equal(
      errorLine(refused),
      `specforge: ${runDir('again')} holds the checkpoints of an earlier run (step-4, step-6): --resume latest continues it, --overwrite deletes it and starts afresh, or set another training.run_id`,
    );
    assert.doesNotMatch(refused.stdout, /capturing|backend/, 'refused before any work');
    assert.deepEqual(stepsOf('again'), ['step-4', 'step-6'], 'the earlier run is untouched');
    const over = train(file, ['--max-steps', '3', '--overwrite']);
    assert.equal(over.status, 0, over.stderr);
    assert.match(over.stdout, /--overwrite: removing the earlier run in .* \(step-4, step-6\)/);
    assert.match(over.stdout, /checkpoint .*step-3\n/);
    assert.deepEqual(stepsOf('again'), ['step-2', 'step-3']);
    const rows = fs
      .readFileSync(path.join(runDir('again'), 'metrics.jsonl'), 'utf8')
      .trim()
      .split('\n');
    assert.deepEqual(
      rows.map((l) => JSON.parse(l).step),
      [1, 2, 3],
      'metrics of this run only',
    );
    assert.ok(!fs.existsSync(path.join(runDir('again'), 'train.lock')), 'the lock is released');
  });

  test('a resume from a checkpoint before the newest is refused naming the later ones; --overwrite deletes them', () => {
    const file = recipe('older', { keep_last: 3 });
    assert.equal(train(file).status, 0);
    const from = path.join(runDir('older'), 'step-2');
    const refused = train(file, ['--resume', from]);
    assert.equal(refused.status, 1);
    assert.match(
      errorLine(refused),
      /--resume .*step-2: .*older holds later checkpoints \(step-4, step-6\) that the resumed run would leave beside its own; --overwrite deletes them/,
    );
    const over = train(file, ['--resume', from, '--overwrite']);
    assert.equal(over.status, 0, over.stderr);
    assert.match(over.stdout, /removing the checkpoints after step 2 \(step-4, step-6\)/);
    assert.match(over.stdout, /resumed from .*step-2 at step 2/);
    assert.deepEqual(stepsOf('older'), ['step-2', 'step-4', 'step-6']);
  });

  test('a second train into a folder in use refuses naming the pid; once that run is killed its lock is taken over with a note', async () => {
    const file = recipe('busy', { max_steps: 100000, save_interval: 100000 });
    const lock = path.join(runDir('busy'), 'train.lock');
    // The first run takes the lock, trains a step and stops there for good; it is killed after the second try.
    let pid = 0;
    await withChildAtMarker(
      ['train', '--recipe', file],
      /rank 0: injected hang at step 1 /,
      { env: { SPECFORGE_INJECT_FAULT: '0:1:hang' } },
      async (p) => {
        pid = p;
        assert.ok(fs.existsSync(lock), 'the first run holds the lock');
        const second = train(file);
        assert.equal(second.status, 1);
        assert.match(
          errorLine(second),
          new RegExp(`${runDir('busy')} is in use by the train of pid ${pid} on ${os.hostname()} \\(since [^)]+\\): wait for it to finish`),
        );
      },
    );
    assert.ok(fs.existsSync(lock), 'a killed run leaves its lock');
    const third = train(file, ['--max-steps', '2', '--overwrite']);
    assert.equal(third.status, 0, third.stderr);
    assert.match(third.stdout, new RegExp(`note: ${lock} was left by pid ${pid} on .*, which no longer runs: taking it over`));
    assert.ok(!fs.existsSync(lock));
  });
});

describe('messages that say where', () => {
  test('a full disk while writing a checkpoint or metrics.jsonl is one line naming the file and what the run keeps', () => {
    const file = recipe('full');
    const preload = ['--import', diskFull];
    const atCheckpoint = specforge(['train', '--recipe', file], { SPECFORGE_TEST_DISK_FULL: 'step-4\\.tmp/model\\.safetensors' }, preload);
    assert.equal(atCheckpoint.status, 1);
    const dir = runDir('full');
    assert.equal(
      errorLine(atCheckpoint),
      `specforge: ${dir}/step-4.tmp/model.safetensors: cannot write (ENOSPC: no space left on device, write); the run stopped at step 4 and keeps its checkpoints up to ${dir}/step-2 (--resume latest continues from it)`,
    );
    assert.deepEqual(
      fs.readdirSync(dir).filter((d) => d.startsWith('step-')),
      ['step-2'],
      'no half-written folder',
    );
    const atMetrics = specforge(
      ['train', '--recipe', file, '--resume', 'latest'],
      { SPECFORGE_TEST_DISK_FULL: 'metrics\\.jsonl$' },
      preload,
    );
    assert.equal(atMetrics.status, 1);
    assert.equal(
      errorLine(atMetrics),
      `specforge: ${dir}/metrics.jsonl: cannot write (ENOSPC: no space left on device, write); the run stopped at step 3 and keeps its checkpoints up to ${dir}/step-2 (--resume latest continues from it)`,
    );
    const resumed = train(file, ['--resume', 'latest']);
    assert.equal(resumed.status, 0, resumed.stderr);
  });

  test('a damaged checkpoint: config.json and trainer_state.json that are not JSON, or a config of another draft, are named, not reported as other settings', () => {
    const file = recipe('damaged', { max_steps: 2 });
    assert.equal(train(file).status, 0);
    const step = path.join(runDir('damaged'), 'step-2');
    const config = path.join(step, 'config.json');
    const state = path.join(step, 'training_state', 'trainer_state.json');
    const goodConfig = fs.readFileSync(config, 'utf8');
    const goodState = fs.readFileSync(state, 'utf8');

    fs.writeFileSync(config, goodConfig.slice(0, 40));
    const notJson = /config\.json: not valid JSON, expected a draft config \(/;
    for (const r of [
      train(file, ['--resume', 'latest', '--max-steps', '2']),
      specforge(['export-onnx', '--checkpoint', step, '--out', path.join(work, 'damaged-export')]),
    ]) {
      assert.equal(r.status, 1);
      assert.match(errorLine(r), notJson);
      assert.doesNotMatch(r.stderr, /other model, data or training settings/);
    }

    fs.writeFileSync(config, goodConfig.replace('"intermediate_size": 48', '"intermediate_size": 64'));
    const edited = train(file, ['--resume', 'latest']);
    assert.equal(edited.status, 1);
    assert.match(errorLine(edited), /step-2\/config\.json: not the draft this recipe trains: intermediate_size is 64, expected 48/);
    fs.writeFileSync(config, goodConfig);

    fs.writeFileSync(state, goodState.slice(0, 30));
    const torn = train(file, ['--resume', 'latest']);
    assert.equal(torn.status, 1);
    assert.match(
      errorLine(torn),
      /step-2\/training_state\/trainer_state\.json: not valid JSON, expected the trainer state of a checkpoint \(/,
    );
    assert.doesNotMatch(torn.stdout, /capturing|backend/, 'refused before any work');
    fs.writeFileSync(state, goodState.replace(/"recipeKey": "\w+"/, '"recipeKey": 7'));
    const badField = train(file, ['--resume', 'latest']);
    assert.match(errorLine(badField), /trainer_state\.json: field "recipeKey" is 7; expected a string/);
  });

  test('an empty eval file is refused naming it before any work; held-out data that gives no sample is refused naming the files', () => {
    const empty = path.join(work, 'empty.jsonl');
    fs.writeFileSync(empty, '\n\n');
    const file = recipe('empty-eval', {}, { eval: empty });
    for (const cmd of ['train', 'capture']) {
      const r = specforge([cmd, '--recipe', file]);
      assert.equal(r.status, 1, r.stdout);
      assert.equal(errorLine(r), `specforge: ${file}: data.eval: ${empty} is empty; expected JSONL conversations (or remove data.eval)`);
      assert.doesNotMatch(r.stdout, /backend|capture/);
    }
    // Lines that are all skipped as invalid: capture finds no sample, and says so.
    const invalid = path.join(work, 'invalid.jsonl');
    fs.writeFileSync(invalid, '{"id": "x"}\n');
    const skipped = recipe('invalid-eval', {}, { eval: invalid, dataLines: '  skip_invalid: true\n', store: 'store-skip' });
    const r = train(skipped);
    assert.equal(r.status, 1);
    assert.match(
      errorLine(r),
      new RegExp(
        `invalid-eval\\.yaml: data\\.eval \\(${invalid}\\) gives no sample \\(1 invalid lines skipped\\); give it conversations, or remove data\\.eval`,
      ),
    );
    assert.doesNotMatch(r.stdout, /acc 0\.000/);
    // The split capture wrote (as an older capture did, without a word): training refuses it too.
    const again = train(skipped);
    assert.equal(again.status, 1);
    assert.match(
      errorLine(again),
      new RegExp(`data\\.eval \\(${invalid}\\) gives no held-out sample \\(its store split ${work}/store-skip/eval holds none\\)`),
    );
    assert.doesNotMatch(again.stdout, /acc 0\.000/);
  });

  test('a capture.limit below one optimizer step is refused before any work', () => {
    const r = train(recipe('small', { batch_size: 16, accumulation_steps: 4 }));
    assert.equal(r.status, 1);
    assert.match(
      errorLine(r),
      /small\.yaml: capture\.limit 40 lets in fewer samples than one optimizer step takes \(training\.batch_size 16 x accumulation_steps 4 x 1 worker\(s\) = 64\)/,
    );
    assert.doesNotMatch(r.stdout, /capturing|backend/);
  });
});
