// Seeing a run, without training one: TensorBoard event files (byte for byte what TensorBoard's own writer
// writes, and read back by an independent reader), metrics rows as tagged scalars, metrics.jsonl and the
// event files cut back on resume, curves.svg, and the step-best checkpoint (kept by keep_last, chosen
// by eval and export, reset on a resume before it).
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { draftConfigFor } from '../src/draft/config.ts';
import { parseModelConfig } from '../src/io/hf-config.ts';
import { bestTarget } from '../src/train/best.ts';
import { chooseCheckpoint, listCheckpoints, restoreBest, saveCheckpoint } from '../src/train/checkpoint.ts';
import { curvesSvg } from '../src/train/curves.ts';
import { RunLog, readMetrics } from '../src/train/run-log.ts';
import { crc32c, EventFileWriter, encodeEvent, eventFiles, FILE_VERSION, frameRecord, rowScalars } from '../src/train/tensorboard.ts';
import { niceTicks, tickLabel } from '../src/util/svg.ts';
import { fixture, removeTempDirs, tempDir } from './helpers.ts';
import { crc32cBitwise, readEventFile, readRecords } from './tensorboard-reader.ts';

after(removeTempDirs);

const work = tempDir('tracking-test-');
const f32 = (x: number) => Math.fround(x);

const trainRow = (step: number, loss: number) => ({
  split: 'train',
  step,
  epoch: 0,
  lr: 0.001 * step,
  loss: [loss, loss + 1],
  acc: [0.5 + step / 100, 0.25],
  tau: 1.6,
  tokens_per_s: 1000,
  grad_norm: 0.5,
});
const evalRow = (step: number, tau: number) => ({
  split: 'eval',
  step,
  epoch: 0,
  loss: [2, 3],
  acc: [0.6, 0.3],
  tau,
  samples: 8,
  specexit: { loss: [0.1, 0.2, 0.3], confidence_auc: 0.75, confidence_accuracy: null, progress_mae: 0.2, remaining_mae_tokens: 12 },
});

describe('TensorBoard event files', () => {
  test('CRC-32C of the standard check input and of RFC 3720 test vectors, table and bit-wise alike', () => {
    const cases: [Uint8Array, number][] = [
      [Buffer.from('123456789'), 0xe3069283],
      [new Uint8Array(32), 0x8a9136aa],
      [new Uint8Array(32).fill(0xff), 0x62a8ab43],
      [Uint8Array.from({ length: 32 }, (_, i) => i), 0x46dd794e],
    ];
    for (const [data, want] of cases) {
      assert.equal(crc32c(data), want);
      assert.equal(crc32cBitwise(data), want);
    }
  });

  test("the writer's bytes equal those TensorBoard's own writer wrote for the same events", () => {
    // tests/fixtures/tensorboard/make-reference.py wrote this with tensorboard's protobuf classes and RecordWriter.
    const reference = fs.readFileSync(fixture('tensorboard/reference.tfevents'));
    const ours = Buffer.concat([
      frameRecord(encodeEvent({ wallTime: 1700000000.25, step: 0, fileVersion: FILE_VERSION })),
      frameRecord(
        encodeEvent({
          wallTime: 1700000001.5,
          step: 10,
          scalars: [
            { tag: 'train/loss_0', value: 2.5 },
            { tag: 'train/lr', value: 0.003 },
            { tag: 'eval/specexit/confidence_auc', value: 0.875 },
          ],
        }),
      ),
      frameRecord(encodeEvent({ wallTime: 1700000002.75, step: 300, scalars: [{ tag: 'eval/tau', value: 3.19 }] })),
      frameRecord(encodeEvent({ wallTime: 1700000003.0, step: 2 ** 40 + 7, scalars: [{ tag: 'train/grad_norm', value: -1e-7 }] })),
    ]);
    assert.equal(ours.toString('hex'), reference.toString('hex'));
  });

  test('the independent reader decodes the reference file and refuses a corrupt one', () => {
    const file = fixture('tensorboard/reference.tfevents');
    const events = readEventFile(file);
    assert.deepEqual(events[0], { wallTime: 1700000000.25, step: 0, fileVersion: 'brain.Event:2' });
    assert.deepEqual(events[1], {
      wallTime: 1700000001.5,
      step: 10,
      values: [
        { tag: 'train/loss_0', value: 2.5 },
        { tag: 'train/lr', value: f32(0.003) },
        { tag: 'eval/specexit/confidence_auc', value: 0.875 },
      ],
    });
    assert.equal(events[3].step, 2 ** 40 + 7);
    const bytes = fs.readFileSync(file);
    for (const at of [3, 20, bytes.length - 2]) {
      const bad = Buffer.from(bytes);
      bad[at] ^= 0x01;
      assert.throws(() => readRecords(bad), /CRC does not match|cut short/, `byte ${at} flipped`);
    }
  });

  test('a metrics row becomes scalars tagged by split; null metrics are left out', () => {
    const tags = (row: Record<string, unknown>) => rowScalars(row as never).map((s) => `${s.tag}=${s.value}`);
    assert.deepEqual(tags(trainRow(3, 2)), [
      'train/epoch=0',
      'train/lr=0.003',
      'train/loss_0=2',
      'train/loss_1=3',
      'train/acc_0=0.53',
      'train/acc_1=0.25',
      'train/tau=1.6',
      'train/tokens_per_s=1000',
      'train/grad_norm=0.5',
    ]);
    assert.deepEqual(tags({ ...evalRow(4, 1.9), time: 5 }), [
      'eval/epoch=0',
      'eval/loss_0=2',
      'eval/loss_1=3',
      'eval/acc_0=0.6',
      'eval/acc_1=0.3',
      'eval/tau=1.9',
      'eval/samples=8',
      'eval/specexit/loss_0=0.1',
      'eval/specexit/loss_1=0.2',
      'eval/specexit/loss_2=0.3',
      'eval/specexit/confidence_auc=0.75',
      'eval/specexit/progress_mae=0.2',
      'eval/specexit/remaining_mae_tokens=12',
    ]);
  });

  test('an event file starts with the file version; each row is one event at its step, appended as it comes', () => {
    const dir = path.join(work, 'tb');
    const before = Date.now() / 1000;
    const w = EventFileWriter.start(dir, [{ ...trainRow(1, 4), time: 1234.5 }]);
    const after = Date.now() / 1000;
    w.append(evalRow(2, 2.25));
    const events = readEventFile(w.file);
    assert.equal(events.length, 3);
    assert.equal(events[0].fileVersion, 'brain.Event:2');
    assert.equal(events[0].step, 0);
    // The file-version event is stamped when the file starts, in seconds since 1970.
    assert.ok(events[0].wallTime >= before - 0.001 && events[0].wallTime <= after + 0.001, `wall time ${events[0].wallTime}`);
    assert.deepEqual([events[1].step, events[1].wallTime], [1, 1234.5]);
    assert.equal(events[2].step, 2);
    assert.deepEqual(
      events[2].values!.find((v) => v.tag === 'eval/tau'),
      { tag: 'eval/tau', value: 2.25 },
    );
    assert.ok(path.basename(w.file).startsWith('events.out.tfevents.'));
  });
});

describe('the run log', () => {
  test('resuming cuts metrics.jsonl and the event files back to the step it starts from; appending continues without a step twice', () => {
    const runDir = path.join(work, 'run');
    fs.mkdirSync(path.join(runDir, 'tensorboard'), { recursive: true });
    // An interrupted run: rows to step 6, the last line torn by the crash, an event file of its own.
    const rows = [trainRow(1, 5), trainRow(2, 4.5), evalRow(2, 1.5), trainRow(3, 4), trainRow(4, 3.5), evalRow(4, 1.75), trainRow(5, 3)];
    fs.writeFileSync(path.join(runDir, 'metrics.jsonl'), rows.map((r) => JSON.stringify(r) + '\n').join('') + '{"split":"tra');
    const stale = path.join(runDir, 'tensorboard', 'events.out.tfevents.1.old');
    fs.writeFileSync(stale, frameRecord(encodeEvent({ wallTime: 1, step: 0, fileVersion: FILE_VERSION })));

    const log = new RunLog(runDir, 4, { tensorboard: true, title: 'run', totalSteps: 8 });
    for (const r of [trainRow(5, 3.1), trainRow(6, 3), evalRow(6, 2)]) log.append(r);

    const kept = readMetrics(path.join(runDir, 'metrics.jsonl'));
    const keys = kept.map((r) => `${r.split}@${r.step}`);
    assert.deepEqual(keys, ['train@1', 'train@2', 'eval@2', 'train@3', 'train@4', 'eval@4', 'train@5', 'train@6', 'eval@6']);
    assert.equal((kept[6].loss as number[])[0], 3.1, 'the resumed row, not the interrupted one');
    assert.ok(!fs.existsSync(stale), 'the older event file is gone');
    const files = eventFiles(path.join(runDir, 'tensorboard'));
    assert.equal(files.length, 1);
    const events = readEventFile(files[0]).slice(1);
    // One event per row, in the same order and at the same step, holding the row's numbers.
    assert.deepEqual(
      events.map((e) => e.step),
      kept.map((r) => r.step),
    );
    events.forEach((e, i) => {
      const want = rowScalars(kept[i]);
      assert.deepEqual(
        e.values!.map((v) => v.tag),
        want.map((s) => s.tag),
      );
      e.values!.forEach((v, k) => assert.equal(v.value, f32(want[k].value)));
      assert.equal(e.wallTime, kept[i].time ?? e.wallTime);
    });
    assert.ok(
      kept.slice(6).every((r) => typeof r.time === 'number'),
      'appended rows carry their time',
    );
    assert.match(fs.readFileSync(path.join(runDir, 'curves.svg'), 'utf8'), /<svg/);

    // A fresh run in the same folder starts everything anew; with TensorBoard off, no event file is left.
    new RunLog(runDir, 0, { tensorboard: false, title: 'run', totalSteps: 8 });
    assert.equal(fs.readFileSync(path.join(runDir, 'metrics.jsonl'), 'utf8'), '');
    assert.deepEqual(eventFiles(path.join(runDir, 'tensorboard')), []);
  });

  test('a bad line before the last is an error naming the file and line', () => {
    const file = path.join(work, 'bad.jsonl');
    fs.writeFileSync(file, `${JSON.stringify(trainRow(1, 2))}\nnot json\n${JSON.stringify(trainRow(2, 2))}\n`);
    assert.throws(() => readMetrics(file), /bad\.jsonl:2: not a JSON row/);
    fs.writeFileSync(file, `${JSON.stringify({ split: 'train' })}\n`);
    assert.throws(() => readMetrics(file), /bad\.jsonl:1: a metrics row needs "split" \(a string\) and "step" \(an integer\)/);
  });
});

describe('curves.svg', () => {
  const rows = [1, 2, 3, 4, 5, 6, 7, 8].flatMap((s) => [
    { ...trainRow(s, 5 - s / 2), acc: [0.3 + s / 20, 0.1 + s / 40, s / 80] },
    ...(s % 4 === 0 ? [{ ...evalRow(s, s === 4 ? 2.5 : 2.25), acc: [0.5, 0.3, 0.1] }] : []),
  ]);
  const svg = curvesSvg(rows as never, { title: 'Training: a<b', totalSteps: 10 });

  test('four panels with axes, a legend per panel and the best held-out tau marked', () => {
    assert.match(svg, /^<svg xmlns="http:\/\/www\.w3\.org\/2000\/svg"/);
    assert.match(svg, /<\/svg>\n$/);
    assert.match(svg, /Training: a&lt;b/);
    for (const title of ['loss of TTT step 0', 'accuracy per TTT step', 'simulated acceptance length', 'learning rate'])
      assert.ok(svg.includes(`font-weight="bold">${title}</text>`), title);
    assert.equal((svg.match(/>optimizer step</g) ?? []).length, 4);
    // Legend: train and held-out for loss and tau, one entry per TTT step for the accuracies, the learning rate.
    assert.equal((svg.match(/class="legend"/g) ?? []).length, 2 + 3 + 2 + 1);
    for (const k of [0, 1, 2]) assert.ok(svg.includes(`>acc_${k}</text>`));
    // Series: loss 2, accuracy 3 x 2, tau 2, lr 1; held-out ones dashed.
    assert.equal((svg.match(/class="series"/g) ?? []).length, 11);
    assert.equal((svg.match(/class="series"[^>]*stroke-dasharray/g) ?? []).length, 5);
    // The best held-out tau is 2.5 at step 4 (not the last evaluation).
    assert.match(svg, /best held-out acceptance length 2\.500 at step 4/);
    assert.equal((svg.match(/class="best"/g) ?? []).length, 1);
    assert.match(svg, /best 2\.500 @ 4/);
    assert.equal((svg.match(/class="best-step"/g) ?? []).length, 4);
    // The x axis spans the planned run; every tick label is a round number.
    assert.match(svg, />10<\/text>/);
    const opened = (svg.match(/<(rect|text|line|svg|title|polyline|circle)\b/g) ?? []).length;
    const closed = (svg.match(/<\/(rect|text|line|svg|title|polyline|circle)>|\/>/g) ?? []).length;
    assert.equal(opened, closed, 'every element is closed');
  });

  test('the best marker sits on the best point', () => {
    const ring = /class="best" cx="([\d.]+)" cy="([\d.]+)"/.exec(svg)!;
    const dot = [...svg.matchAll(/<circle cx="([\d.]+)" cy="([\d.]+)" r="3"[^>]*><title>held-out at step 4: 2\.5<\/title>/g)];
    assert.equal(dot.length, 1, 'the held-out tau dot at step 4');
    assert.deepEqual([ring[1], ring[2]], [dot[0][1], dot[0][2]]);
  });

  test('a run without held-out data, and one with no rows yet, still draw', () => {
    const trainOnly = curvesSvg([trainRow(1, 3), trainRow(2, 2)] as never, { title: 't' });
    assert.match(trainOnly, /no held-out evaluation yet/);
    assert.ok(!trainOnly.includes('class="best"'));
    assert.match(curvesSvg([], { title: 't' }), /no data yet/);
  });

  test('ticks are round and cover the range; labels have no float noise', () => {
    assert.deepEqual(niceTicks(0, 200, 6), [0, 50, 100, 150, 200]);
    assert.deepEqual(niceTicks(0.31, 0.92, 5), [0.2, 0.4, 0.6, 0.8, 1]);
    assert.deepEqual(niceTicks(2, 2, 4), [1, 1.5, 2, 2.5, 3]);
    assert.equal(tickLabel(0.1 + 0.2), '0.3');
    assert.equal(tickLabel(0.00025), '2.5e-4');
    assert.equal(tickLabel(0), '0');
  });
});

describe('step-best', () => {
  const runDir = path.join(work, 'best-run');
  const save = (step: number, best: boolean) => {
    const w = new Map([['fc.weight', { shape: [2, 2], data: new Float32Array([step, 0, 0, 1]) }]]);
    const z = new Map([['fc.weight', new Float32Array(4)]]);
    const state = { step, epoch: 0, batchInEpoch: step, totalSteps: 10, seed: 1, learningRate: 0, recipeKey: 'k' };
    const config = draftConfigFor(
      parseModelConfig({
        architectures: ['LlamaForCausalLM'],
        hidden_size: 8,
        intermediate_size: 16,
        num_hidden_layers: 4,
        num_attention_heads: 2,
        num_key_value_heads: 1,
        vocab_size: 2,
      }),
      [1, 2, 3],
      1,
    );
    return saveCheckpoint(runDir, config, w, { d2t: new BigInt64Array(1), t2d: new Uint8Array(2) }, { m: z, v: z }, state, 1, best);
  };

  test('keep_last never deletes the best checkpoint; eval and export choose it, else the newest', () => {
    save(2, false);
    assert.deepEqual(chooseCheckpoint(runDir), { dir: path.join(runDir, 'step-2'), best: false });
    save(4, true);
    save(6, false);
    save(8, false);
    // keep_last 1: the newest and the best.
    assert.deepEqual(
      listCheckpoints(runDir)
        .map((d) => path.basename(d))
        .sort(),
      ['step-4', 'step-8'],
    );
    assert.equal(fs.readlinkSync(path.join(runDir, 'step-best')), 'step-4', 'a relative link');
    assert.deepEqual(chooseCheckpoint(runDir), { dir: path.join(runDir, 'step-4'), best: true });
    assert.ok(fs.existsSync(path.join(runDir, 'step-best', 'model.safetensors')), 'the link opens as a checkpoint folder');
    save(10, true);
    assert.deepEqual(
      listCheckpoints(runDir).map((d) => path.basename(d)),
      ['step-10'],
      'the old best goes once it is no longer the best',
    );
    assert.equal(bestTarget(runDir), path.join(runDir, 'step-10'));
  });

  test('a resume restores the best among the checkpoints at or before its step, or removes the link', () => {
    save(12, false);
    save(14, false); // keep_last 1: step-10 (best) and step-14 remain
    assert.deepEqual(
      restoreBest(
        runDir,
        14,
        new Map([
          [10, 1.5],
          [14, 1.75],
        ]),
      ),
      { step: 14, tau: 1.75 },
    );
    assert.equal(bestTarget(runDir), path.join(runDir, 'step-14'));
    // Resumed from step-10: step-14 belongs to the abandoned future.
    assert.deepEqual(restoreBest(runDir, 10, new Map([[10, 1.5]])), { step: 10, tau: 1.5 });
    assert.equal(bestTarget(runDir), path.join(runDir, 'step-10'));
    // A fresh run: no best yet.
    assert.equal(restoreBest(runDir, 0, new Map()), null);
    assert.ok(!fs.existsSync(path.join(runDir, 'step-best')));
    assert.deepEqual(chooseCheckpoint(runDir), { dir: path.join(runDir, 'step-14'), best: false });
  });
});
