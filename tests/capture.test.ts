// `specforge capture` end to end on a small random-weight target with the tiny tokenizer: the store reads
// back equal (within float16 rounding) to a direct forward; a killed capture resumes to the same bytes.
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { before, describe, test } from 'node:test';
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../src/backend/backend.ts';
import { readAllConversations } from '../src/data/datasets.ts';
import { tokenizeConversation } from '../src/data/templates.ts';
import { loadTokenizer } from '../src/io/tokenizer.ts';
import { ArrowStore } from '../src/store/reader.ts';
import { f16ToF32, f32ToF16 } from '../src/io/dtypes.ts';
import { TfjsTarget } from '../src/target/tfjs-target.ts';
import { makeRandomTarget } from './helpers.ts';

const repo = fileURLToPath(new URL('..', import.meta.url));
const bin = path.join(repo, 'bin', 'specforge.js');
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'capture-test-'));
const target = path.join(work, 'target');

function recipe(name: string, extra = ''): string {
  const file = path.join(work, `${name}.yaml`);
  fs.writeFileSync(
    file,
    `model:\n  target: ${target}\n  aux_layer_ids: [1, 2, 4]\n  draft_vocab_size: 128\n` +
      `data:\n  train: ${path.join(repo, 'data/corpus/reasoning-eval.jsonl')}\n  format: sharegpt\n  template: tokenizer\n  max_length: 160\n  store: ${path.join(work, name)}\n  cache_dir: ${path.join(work, 'cache')}\n` +
      `capture:\n  batch_size: 4\n  samples_per_shard: 6\n  limit: 30\n${extra}runtime:\n  backend: wasm\n`,
  );
  return file;
}

before(async () => {
  await initBackend('wasm');
  await makeRandomTarget(target, 3);
});

describe('capture', () => {
  test('the store reads back as a direct target forward (within f16 rounding), with thinking spans', async () => {
    const r = spawnSync(process.execPath, [bin, 'capture', '--recipe', recipe('direct')], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr + r.stdout);
    assert.match(r.stdout, /draft vocabulary: 128 of 335 tokens cover/);
    const store = await ArrowStore.open(path.join(work, 'direct', 'train'));
    assert.equal(store.size, 30);
    const tok = loadTokenizer(target);
    const model = TfjsTarget.load(target);
    const convs = await readAllConversations(path.join(repo, 'data/corpus/reasoning-eval.jsonl'), { limit: 30 });
    for (const i of [0, 7, 29]) {
      const s = await store.get(i);
      const t = tokenizeConversation(convs[i].messages, tok, { template: 'tokenizer', maxLength: 160 });
      assert.deepEqual(Array.from(s.inputIds), t.ids);
      assert.deepEqual(Array.from(s.lossMask), t.lossMask);
      const out = model.forward({ ids: [t.ids] }, { layers: [1, 2, 4], logits: false });
      const aux = tf
        .concat(
          [1, 2, 4].map((l) => out.layers.get(l)!),
          -1,
        )
        .dataSync();
      const fin = out.finalNormed.dataSync();
      const f16 = (x: number) => f16ToF32(f32ToF16(x));
      // Batched (padded) capture vs single-sequence forward: equal up to float32 noise, then f16 rounding.
      let worst = 0;
      aux.forEach((x, k) => (worst = Math.max(worst, Math.abs(s.aux[k] - f16(x)) / Math.max(1, Math.abs(x)))));
      fin.forEach((x, k) => (worst = Math.max(worst, Math.abs(s.finalHidden[k] - f16(x)) / Math.max(1, Math.abs(x)))));
      assert.ok(worst < 2e-3, `sample ${i}: worst relative diff ${worst}`);
      // One thinking span per reasoning sample, ending at </think>, answer stated inside it.
      assert.equal(s.thinkSpans.length, 2);
      assert.equal(s.inputIds[s.thinkSpans[1]], tok.requireId('</think>'));
      assert.equal(s.inputIds[s.thinkSpans[0] - 1], tok.requireId('<think>'));
      assert.equal(s.answer, String(convs[i].extra.answer));
      assert.ok(s.answerPositions[0] >= s.thinkSpans[0] && s.answerPositions[0] < s.thinkSpans[1]);
      tf.dispose([out.finalNormed, ...out.layers.values()]);
    }
    model.dispose();
    await store.close();
  });

  test('a capture killed mid-way resumes to a store equal, shard for shard, to an uninterrupted one', async () => {
    const full = spawnSync(process.execPath, [bin, 'capture', '--recipe', recipe('whole')], { encoding: 'utf8' });
    assert.equal(full.status, 0, full.stderr);
    const file = recipe('killed');
    const manifest = path.join(work, 'killed', 'train', 'manifest.json');
    const child = spawn(process.execPath, [bin, 'capture', '--recipe', file], { stdio: 'ignore' });
    // Kill as soon as two shards are finished.
    await new Promise<void>((resolve) => {
      const poll = setInterval(() => {
        const m = fs.existsSync(manifest) ? JSON.parse(fs.readFileSync(manifest, 'utf8')) : null;
        if ((m?.shards.length ?? 0) >= 2) {
          clearInterval(poll);
          child.kill('SIGKILL');
          resolve();
        }
      }, 20);
    });
    await new Promise((r) => child.once('exit', r));
    const partial = JSON.parse(fs.readFileSync(manifest, 'utf8'));
    assert.equal(partial.complete, false);
    const resumed = spawnSync(process.execPath, [bin, 'capture', '--recipe', file], { encoding: 'utf8' });
    assert.equal(resumed.status, 0, resumed.stderr);
    assert.match(resumed.stdout, /resuming; \d+ samples are in finished shards/);
    const a = path.join(work, 'whole', 'train');
    const b = path.join(work, 'killed', 'train');
    const shards = fs
      .readdirSync(a)
      .filter((f) => f.endsWith('.arrow'))
      .sort();
    assert.equal(shards.length, 5);
    assert.deepEqual(
      fs
        .readdirSync(b)
        .filter((f) => f.endsWith('.arrow'))
        .sort(),
      shards,
    );
    for (const s of shards) assert.ok(fs.readFileSync(path.join(a, s)).equals(fs.readFileSync(path.join(b, s))), s);
  });

  test('two workers capture disjoint shards into the same store as one worker, byte for byte', async () => {
    const one = spawnSync(process.execPath, [bin, 'capture', '--recipe', recipe('one-worker')], { encoding: 'utf8' });
    assert.equal(one.status, 0, one.stderr);
    const two = spawnSync(process.execPath, [bin, 'capture', '--recipe', recipe('two-workers'), '--workers', '2'], { encoding: 'utf8' });
    assert.equal(two.status, 0, two.stderr + two.stdout);
    assert.match(two.stdout, /captured 30 samples, \d+ tokens in [\d.]+ s \(\d+ tok\/s on 2 workers\)/);
    const a = path.join(work, 'one-worker', 'train');
    const b = path.join(work, 'two-workers', 'train');
    const files = fs.readdirSync(a).sort();
    assert.deepEqual(fs.readdirSync(b).sort(), files);
    // Shards, manifest (it names no worker count) and draft vocabulary alike.
    for (const f of files) assert.ok(fs.readFileSync(path.join(a, f)).equals(fs.readFileSync(path.join(b, f))), f);
    const store = await ArrowStore.open(b);
    assert.deepEqual((await store.get(29)).id, 're-29');
    await store.close();
  });

  test('a capture killed on 2 workers resumes on 1 to the same store', async () => {
    const file = recipe('killed-two');
    const dir = path.join(work, 'killed-two', 'train');
    const child = spawn(process.execPath, [bin, 'capture', '--recipe', file, '--workers', '2'], { stdio: 'ignore' });
    await new Promise<void>((resolve) => {
      const poll = setInterval(() => {
        if (fs.existsSync(dir) && fs.readdirSync(dir).filter((f) => f.endsWith('.arrow')).length >= 2) {
          clearInterval(poll);
          child.kill('SIGKILL');
          resolve();
        }
      }, 20);
    });
    await new Promise((r) => child.once('exit', r));
    assert.equal(JSON.parse(fs.readFileSync(path.join(dir, 'manifest.json'), 'utf8')).complete, false);
    const resumed = spawnSync(process.execPath, [bin, 'capture', '--recipe', file, '--workers', '1'], { encoding: 'utf8' });
    assert.equal(resumed.status, 0, resumed.stderr);
    const a = path.join(work, 'one-worker', 'train');
    const files = fs.readdirSync(a).sort();
    assert.deepEqual(fs.readdirSync(dir).sort(), files);
    for (const f of files) assert.ok(fs.readFileSync(path.join(a, f)).equals(fs.readFileSync(path.join(dir, f))), f);
  });

  test('a store captured with other settings is refused by name', async () => {
    const { storeIdentity } = await import('../src/store/identity.ts');
    const { readManifest } = await import('../src/store/manifest.ts');
    const expected = storeIdentity(target, 'chatml', [1, 2, 4], 160, readManifest(path.join(work, 'direct', 'train')).source);
    await assert.rejects(ArrowStore.open(path.join(work, 'direct', 'train'), expected), /template/);
  });
});
