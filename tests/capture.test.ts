// `specforge capture` end to end on a small random-weight target with the tiny tokenizer: the store reads
// back equal (within float16 rounding) to a direct forward; a killed capture resumes to the same bytes.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, test } from 'node:test';
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../src/backend/backend.ts';
import { readAllConversations } from '../src/data/datasets.ts';
import { tokenizeConversation } from '../src/data/templates.ts';
import { loadTokenizer } from '../src/io/tokenizer.ts';
import { ArrowStore } from '../src/store/reader.ts';
import { f16ToF32, f32ToF16 } from '../src/io/dtypes.ts';
import { TfjsTarget } from '../src/target/tfjs-target.ts';
import { RETAINING_MALLOC, retainingMallocEnv } from '../src/util/malloc-env.ts';
import {
  type ChildRun,
  killAtMarker,
  makeRandomTarget,
  randomWeights,
  removeTempDirs,
  repoRoot as repo,
  runNode,
  specforge,
  specforgeBin,
  tempDir,
} from './helpers.ts';

const work = tempDir('capture-test-');
const target = path.join(work, 'target');
const hangAfterShards = fileURLToPath(new URL('./jobs/hang-after-shards.mjs', import.meta.url));
const reportMalloc = fileURLToPath(new URL('./jobs/report-malloc.mjs', import.meta.url));

const reasoning = path.join(repo, 'data/corpus/reasoning-eval.jsonl');
const chat = path.join(repo, 'data/corpus/chat-eval.jsonl');

/** A recipe `<name>.yaml` (its store `<name>` unless o.store); `extra` goes after the capture section. */
function recipe(
  name: string,
  extra = '',
  o: { train?: string; store?: string; limit?: number; aux?: string; target?: string; yaml?: string; vocab?: number } = {},
): string {
  const file = path.join(work, `${o.yaml ?? name}.yaml`);
  fs.writeFileSync(
    file,
    `model:\n  target: ${o.target ?? target}\n  aux_layer_ids: ${o.aux ?? '[1, 2, 4]'}\n  draft_vocab_size: ${o.vocab ?? 128}\n` +
      `data:\n  train: ${o.train ?? reasoning}\n  format: sharegpt\n  template: tokenizer\n  max_length: 160\n  store: ${path.join(work, o.store ?? name)}\n  cache_dir: ${path.join(work, 'cache')}\n` +
      `capture:\n  batch_size: 4\n  samples_per_shard: 6\n  limit: ${o.limit ?? 30}\n${extra}runtime:\n  backend: wasm\n`,
  );
  return file;
}

const cli = (...args: string[]) => specforge(args);
/** The capture of the recipe `name` (its defaults) that several tests read, made by the first that needs it. */
const captures = new Map<string, ChildRun>();
function capturedStore(name: string, ...args: string[]): { dir: string; run: ChildRun } {
  let run = captures.get(name);
  if (!run) {
    run = cli('capture', '--recipe', recipe(name), ...args);
    assert.equal(run.status, 0, run.stderr + run.stdout);
    captures.set(name, run);
  }
  return { dir: path.join(work, name, 'train'), run };
}

const training = (steps: number, batch = 10) =>
  `training:\n  batch_size: ${batch}\n  max_steps: ${steps}\n  output_dir: ${path.join(work, 'ckpt')}\n  save_interval: 100\n  eval_interval: 100\n`;

/** Every file of a store split, by name. */
function files(dir: string): Map<string, Buffer> {
  return new Map(
    fs
      .readdirSync(dir)
      .sort()
      .map((f) => [f, fs.readFileSync(path.join(dir, f))]),
  );
}

function assertSameFiles(a: string, b: string): void {
  const fa = files(a);
  const fb = files(b);
  assert.deepEqual([...fb.keys()], [...fa.keys()]);
  for (const [f, bytes] of fa) assert.ok(fb.get(f)!.equals(bytes), `${f} differs`);
}

/**
 * Starts a capture, which stops for good once its manifest lists `shards` finished shards or more (the
 * preloaded hang-after-shards.mjs), and kills it there; returns the manifest it left.
 */
async function killAfterShards(file: string, shards: number, ...args: string[]): Promise<{ complete: boolean; shards: unknown[] }> {
  const manifest = path.join(path.dirname(file), path.basename(file, '.yaml'), 'train', 'manifest.json');
  await killAtMarker(['capture', '--recipe', file, ...args], /hang: manifest lists \d+ shards/, {
    node: ['--import', hangAfterShards],
    env: { SPECFORGE_TEST_HANG_SHARDS: String(shards) },
  });
  const m = JSON.parse(fs.readFileSync(manifest, 'utf8'));
  assert.equal(m.complete, false, 'killed before the capture ended');
  assert.ok(m.shards.length >= shards, `the manifest lists ${m.shards.length} shards`);
  return m;
}

before(async () => {
  await initBackend('wasm');
  await makeRandomTarget(target, 3);
});
after(removeTempDirs);

describe('capture', () => {
  test('the store reads back as a direct target forward (within f16 rounding), with thinking spans', async () => {
    const r = capturedStore('direct').run;
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
    const a = capturedStore('whole').dir;
    const file = recipe('killed');
    await killAfterShards(file, 2);
    const resumed = cli('capture', '--recipe', file);
    assert.equal(resumed.status, 0, resumed.stderr);
    assert.match(resumed.stdout, /resuming; 12 samples are in finished shards/);
    assert.match(resumed.stdout, /captured 18 samples/);
    const b = path.join(work, 'killed', 'train');
    assert.equal([...files(a).keys()].filter((f) => f.endsWith('.arrow')).length, 5);
    assertSameFiles(a, b);
  });

  test('on glibc, specforge runs again with the malloc settings, and that process ends when the first is killed', {
    skip: retainingMallocEnv({}) ? false : 'not Linux with glibc',
  }, async () => {
    const file = recipe('malloc');
    const run = await killAtMarker(['capture', '--recipe', file], /hang: manifest lists \d+ shards/, {
      node: ['--import', reportMalloc, '--import', hangAfterShards],
      env: { SPECFORGE_MALLOC: '', SPECFORGE_TEST_HANG_SHARDS: '1' },
    });
    const lines = [...run.stderr.matchAll(/malloc: pid (\d+) ppid (\d+) arena_max (\S+)/g)].map((m) => ({
      pid: Number(m[1]),
      ppid: Number(m[2]),
      arenaMax: m[3],
    }));
    assert.equal(lines.length, 2, run.stderr);
    const [first, second] = lines;
    assert.equal(first.arenaMax, 'unset');
    assert.deepEqual([second.ppid, second.arenaMax], [first.pid, RETAINING_MALLOC.MALLOC_ARENA_MAX]);
    // The SIGKILL went to the first process; the second, blocked where the capture hangs, ends within seconds.
    const alive = (pid: number) => {
      try {
        process.kill(pid, 0);
        return true;
      } catch {
        return false;
      }
    };
    for (let i = 0; i < 50 && alive(second.pid); i++) await new Promise((r) => setTimeout(r, 100));
    assert.equal(alive(second.pid), false, `pid ${second.pid} outlived its parent`);
  });

  test('two workers capture disjoint shards into the same store as one worker, byte for byte', async () => {
    const a = capturedStore('one-worker').dir;
    const two = cli('capture', '--recipe', recipe('two-workers'), '--workers', '2');
    assert.equal(two.status, 0, two.stderr + two.stdout);
    assert.match(two.stdout, /captured 30 samples, \d+ tokens in [\d.]+ s \(\d+ tok\/s on 2 workers\)/);
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
    const a = capturedStore('one-worker').dir;
    const file = recipe('killed-two');
    const dir = path.join(work, 'killed-two', 'train');
    await killAfterShards(file, 2, '--workers', '2');
    const resumed = cli('capture', '--recipe', file, '--workers', '1');
    assert.equal(resumed.status, 0, resumed.stderr);
    const kept = Number(/resuming; (\d+) samples are in finished shards/.exec(resumed.stdout)?.[1]);
    assert.ok(kept >= 12, resumed.stdout);
    assert.match(resumed.stdout, new RegExp(`captured ${30 - kept} samples`), 'only the rest was captured');
    assertSameFiles(a, dir);
  });

  test('a store captured with other settings is refused by name', async () => {
    capturedStore('direct');
    const { storeIdentity } = await import('../src/store/identity.ts');
    const { readManifest } = await import('../src/store/manifest.ts');
    const expected = storeIdentity(target, 'chatml', [1, 2, 4], 160, readManifest(path.join(work, 'direct', 'train')).source);
    await assert.rejects(ArrowStore.open(path.join(work, 'direct', 'train'), expected), /template/);
  });
  test('a store is tied to its data: capture and train refuse other data naming the field, and keep the draft vocabulary', () => {
    const dir = capturedStore('direct').dir;
    const before = files(dir);
    const file = recipe('direct-chat', training(1), { train: chat, store: 'direct' });
    const mismatch =
      /store .*direct\/train does not match the recipe \(1 field\); recapture it .*\n {2}source\.data_sha256: store has "[0-9a-f]{64}" \(reasoning-eval\.jsonl\), expected "[0-9a-f]{64}" \(chat-eval\.jsonl\)/;
    const cap = cli('capture', '--recipe', file);
    assert.equal(cap.status, 1, cap.stdout);
    assert.match(cap.stderr, mismatch);
    assert.doesNotMatch(cap.stdout, /nothing to capture|draft vocabulary/);
    const tr = cli('train', '--recipe', file);
    assert.equal(tr.status, 1, tr.stdout);
    assert.match(tr.stderr, mismatch);
    const after = files(dir);
    for (const [f, bytes] of before) assert.ok(after.get(f)!.equals(bytes), `${f} was rewritten`);
    // Its own data: nothing captured, the draft vocabulary left alone.
    const again = cli('capture', '--recipe', recipe('direct'));
    assert.equal(again.status, 0, again.stderr);
    assert.match(again.stdout, /direct\/train is complete; nothing to capture/);
    assert.doesNotMatch(again.stdout, /draft vocabulary/);
  });

  test('a store is tied to its target: a fine-tuned target (other weights) or another target is refused by capture and train, naming the fields', async () => {
    const dir = capturedStore('direct').dir;
    const before = files(dir);
    // Fine-tuned: the same config and tokenizer, other weights everywhere.
    const tuned = path.join(work, 'tuned-target');
    await makeRandomTarget(tuned, 4);
    // Another target: another config too (a deeper model).
    const other = path.join(work, 'other-target');
    await makeRandomTarget(other, 3);
    const config = JSON.parse(fs.readFileSync(path.join(other, 'config.json'), 'utf8'));
    const { parseModelConfig } = await import('../src/io/hf-config.ts');
    const { writeSafetensors } = await import('../src/io/safetensors.ts');
    config.num_hidden_layers = 7;
    fs.writeFileSync(path.join(other, 'config.json'), JSON.stringify(config));
    writeSafetensors(path.join(other, 'model.safetensors'), randomWeights(parseModelConfig(config), 3));
    const hash = '"[0-9a-f]{64}"';
    for (const [t, fields] of [
      [tuned, [`target.weights_sha256: store has ${hash}, expected ${hash}`]],
      [other, [`target.config_sha256: store has ${hash}, expected ${hash}`, `target.weights_sha256: store has ${hash}, expected ${hash}`]],
    ] as const) {
      const file = recipe(`direct-${path.basename(t)}`, training(1), { target: t, store: 'direct' });
      const mismatch = new RegExp(
        `direct/train does not match the recipe \\(${fields.length} fields?\\).*${fields.map((f) => `\\n {2}${f}`).join('')}$`,
        'm',
      );
      // Both commands for the fine-tuned target; train for the other (the same check).
      for (const cmd of t === tuned ? ['capture', 'train'] : ['train']) {
        const r = cli(cmd, '--recipe', file);
        assert.equal(r.status, 1, r.stdout);
        assert.match(r.stderr, mismatch, `${cmd} with ${path.basename(t)}`);
      }
    }
    const after = files(dir);
    for (const [f, bytes] of before) assert.ok(after.get(f)!.equals(bytes), `${f} was rewritten`);
  });

  test("model.draft_vocab_size changed: train rebuilds the vocabulary from the store's own data, and keeps its features", () => {
    capturedStore('whole');
    fs.cpSync(path.join(work, 'whole'), path.join(work, 'revocab'), { recursive: true });
    const dir = path.join(work, 'revocab', 'train');
    const before = files(dir);
    const tr = cli('train', '--recipe', recipe('revocab', training(1), { vocab: 64 }));
    assert.equal(tr.status, 0, tr.stderr + tr.stdout);
    assert.match(
      tr.stdout,
      /needs its draft vocabulary \(.*draft-vocab\.safetensors holds 128 tokens, model\.draft_vocab_size asks for 64\): capturing first/,
    );
    assert.match(tr.stdout, /nothing to capture.*draft vocabulary: 64 of 335 tokens/s);
    const after = files(dir);
    for (const [f, bytes] of before) if (f !== 'draft-vocab.safetensors') assert.ok(after.get(f)!.equals(bytes), `${f} was rewritten`);
    assert.ok(!after.get('draft-vocab.safetensors')!.equals(before.get('draft-vocab.safetensors')!));
  });

  test('a capture killed and resumed with other data is refused naming the field; the original data completes it', async () => {
    capturedStore('whole');
    const file = recipe('mixed');
    await killAfterShards(file, 2);
    const dir = path.join(work, 'mixed', 'train');
    const manifest = fs.readFileSync(path.join(dir, 'manifest.json'));
    const r = cli('capture', '--recipe', recipe('mixed', '', { train: chat, yaml: 'mixed-chat' }));
    assert.equal(r.status, 1, r.stdout);
    assert.match(
      r.stderr,
      /mixed\/train\/manifest\.json: cannot resume the existing store, it was captured with different settings .*\n {2}source\.data_sha256: store has "[0-9a-f]{64}" \(reasoning-eval\.jsonl\), expected "[0-9a-f]{64}" \(chat-eval\.jsonl\)/,
    );
    assert.ok(fs.readFileSync(path.join(dir, 'manifest.json')).equals(manifest));
    const ok = cli('capture', '--recipe', file);
    assert.equal(ok.status, 0, ok.stderr);
    assertSameFiles(path.join(work, 'whole', 'train'), dir);
  });

  test('capture.limit raised: the store grows into a capture of the larger limit (train too); lowered: refused naming source.limit', () => {
    capturedStore('whole');
    const file = recipe('grow', '', { limit: 27 }); // 4 full shards of 6 and one of 3
    assert.equal(cli('capture', '--recipe', file).status, 0);
    const r = cli('capture', '--recipe', file, '--limit', '30');
    assert.equal(r.status, 0, r.stderr);
    assert.match(
      r.stdout,
      /train: capture\.limit raised from 27 to 30: .*grow\/train keeps its 24 samples in full shards and captures the rest/,
    );
    assert.match(r.stdout, /captured 6 samples/);
    assertSameFiles(path.join(work, 'whole', 'train'), path.join(work, 'grow', 'train'));
    const low = cli('capture', '--recipe', file);
    assert.equal(low.status, 1, low.stdout);
    assert.match(low.stderr, /grow\/train does not match the recipe \(1 field\).*\n {2}source\.limit: store has 30, expected 27/);
    // train with a raised limit captures the rest first, then trains on all of it.
    const tr = cli('train', '--recipe', recipe('grow', training(1, 12), { limit: 36, yaml: 'grow-36' }));
    assert.equal(tr.status, 0, tr.stderr + tr.stdout);
    assert.match(tr.stdout, /needs more train samples \(capture\.limit was raised\): capturing first/);
    const m = JSON.parse(fs.readFileSync(path.join(work, 'grow', 'train', 'manifest.json'), 'utf8'));
    assert.equal(m.total_samples, 36);
    assert.equal(m.source.limit, 36);
  });

  test('capture --verify: a sound store passes; a flipped float bit and an unlisted shard are named, and training refuses them', async () => {
    capturedStore('whole');
    const dir = path.join(work, 'damaged', 'train');
    fs.cpSync(path.join(work, 'whole'), path.join(work, 'damaged'), { recursive: true });
    const file = recipe('damaged', training(3));
    const ok = cli('capture', '--recipe', file, '--verify');
    assert.equal(ok.status, 0, ok.stderr);
    assert.match(
      ok.stdout,
      /train: 30 samples in 5 shards of .*damaged\/train: every row and column checksum, token id and feature checked; sound/,
    );

    const store = await ArrowStore.open(dir);
    const s = await store.get(14);
    await store.close();
    const shard = path.join(dir, 'shard-00002.arrow');
    const bytes = fs.readFileSync(shard);
    const at = bytes.indexOf(Buffer.from(Uint16Array.from(s.aux, f32ToF16).buffer));
    assert.ok(at > 0);
    bytes[at + 10] ^= 1; // the lowest mantissa bit of one float16
    fs.writeFileSync(shard, bytes);
    const bad = cli('capture', '--recipe', file, '--verify');
    assert.equal(bad.status, 1, bad.stdout);
    assert.match(
      bad.stderr,
      /store .*damaged failed verification:\n {2}.*damaged\/train\/shard-00002\.arrow: record batch 0 \(samples #12 to #17\), column aux_hidden fails its checksum/,
    );
    const tr = cli('train', '--recipe', file);
    assert.equal(tr.status, 1, tr.stdout);
    assert.match(tr.stderr, /shard-00002\.arrow: sample "re-14" \(#14, row 2 of the shard\) fails its checksum/);

    // A shard's entry removed from the manifest, its totals adjusted.
    const unlisted = path.join(work, 'unlisted', 'train');
    fs.cpSync(path.join(work, 'whole'), path.join(work, 'unlisted'), { recursive: true });
    const mf = path.join(unlisted, 'manifest.json');
    const m = JSON.parse(fs.readFileSync(mf, 'utf8'));
    const [gone] = m.shards.splice(4, 1);
    m.total_samples -= gone.samples;
    m.total_tokens -= gone.tokens;
    fs.writeFileSync(mf, JSON.stringify(m));
    const file2 = recipe('unlisted', training(3));
    for (const args of [['capture', '--verify'], ['train']]) {
      const r = cli(...args, '--recipe', file2);
      assert.equal(r.status, 1, r.stdout);
      assert.match(
        r.stderr,
        /unlisted\/train\/manifest\.json: lists 4 shards, but the store folder also holds shard-00004\.arrow, which it does not list/,
      );
    }
  });

  test('a manifest.json that is not JSON: capture, train and capture --verify name the file', () => {
    capturedStore('whole');
    fs.cpSync(path.join(work, 'whole'), path.join(work, 'garbled'), { recursive: true });
    fs.writeFileSync(path.join(work, 'garbled', 'train', 'manifest.json'), '{"schema_version": 2,');
    const file = recipe('garbled', training(1));
    for (const args of [['capture'], ['train'], ['capture', '--verify']]) {
      const r = cli(...args, '--recipe', file);
      assert.equal(r.status, 1, r.stdout);
      assert.match(r.stderr, /garbled\/train\/manifest\.json: not valid JSON \(/, args.join(' '));
    }
  });

  test('a target that computes NaN: capture stops naming the sample and the layer, and writes no shard', async () => {
    const { parseModelConfig } = await import('../src/io/hf-config.ts');
    const { writeSafetensors } = await import('../src/io/safetensors.ts');
    const broken = path.join(work, 'nan-target');
    await makeRandomTarget(broken, 3);
    const weights = randomWeights(parseModelConfig(JSON.parse(fs.readFileSync(path.join(broken, 'config.json'), 'utf8'))), 3);
    (weights.get('model.layers.2.mlp.down_proj.weight')!.data as Float32Array)[0] = Number.NaN;
    writeSafetensors(path.join(broken, 'model.safetensors'), weights);
    const r = cli('capture', '--recipe', recipe('nan', '', { target: broken }));
    assert.equal(r.status, 1, r.stdout);
    assert.match(r.stderr, /sample "re-0": the target computed a non-finite feature: aux_hidden \(layer 2\) is NaN at token 0/);
    assert.deepEqual(
      fs.readdirSync(path.join(work, 'nan', 'train')).filter((f) => f.endsWith('.arrow')),
      [],
    );
  });

  test('aux_layer_ids of the wrong length, or beyond the target, are refused before anything is captured', () => {
    const two = cli('capture', '--recipe', recipe('two-aux', '', { aux: '[1, 2]' }));
    assert.equal(two.status, 1, two.stdout);
    assert.match(two.stderr, /two-aux\.yaml:3: field 'model\.aux_layer_ids': expected 3 values, got 2/);
    assert.ok(!fs.existsSync(path.join(work, 'two-aux')));
    const deep = cli('capture', '--recipe', recipe('deep-aux', '', { aux: '[1, 2, 9]' }), '--regenerate');
    assert.equal(deep.status, 1, deep.stdout);
    assert.match(deep.stderr, /aux layer id 9 is outside the target's layers \[0, 6\)/);
    assert.doesNotMatch(deep.stdout + deep.stderr, /regenerate/);
    assert.ok(!fs.existsSync(path.join(work, 'deep-aux')));
  });

  test('a full disk during capture: one line naming the shard and what the store keeps; a rerun resumes to the same store', () => {
    // Preloaded into the capture: writes into shard 2's temporary file fail as a full disk does.
    const preload = path.join(work, 'enospc.mjs');
    fs.writeFileSync(
      preload,
      `import fs from 'node:fs';\n` +
        `const { openSync, writeSync } = fs;\nconst doomed = new Set();\n` +
        `fs.openSync = (p, ...a) => { const fd = openSync(p, ...a); if (/shard-00002\\.arrow\\..*\\.tmp$/.test(String(p))) doomed.add(fd); return fd; };\n` +
        `fs.writeSync = (fd, ...a) => { if (doomed.has(fd)) throw Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' }); return writeSync(fd, ...a); };\n`,
    );
    const file = recipe('disk-full');
    const dir = path.join(work, 'disk-full', 'train');
    capturedStore('whole');
    const r = runNode(['--import', preload, specforgeBin, 'capture', '--recipe', file]);
    assert.equal(r.status, 1, r.stdout);
    const lines = r.stderr.split('\n').filter((l) => l.startsWith('specforge:'));
    assert.equal(lines.length, 1, r.stderr);
    assert.match(
      lines[0],
      /^specforge: \S*disk-full\/train\/shard-00002\.arrow: cannot write shard \(ENOSPC: no space left on device, write\); \S*disk-full\/train keeps the 2 finished shards \(12 samples\) that its manifest\.json lists; rerun to resume from them$/,
    );
    assert.doesNotMatch(r.stderr, /^\s+at |node:internal|Unhandled|triggerUncaughtException/m);
    assert.deepEqual(
      fs.readdirSync(dir).filter((f) => f.endsWith('.tmp')),
      [],
    );
    const ok = cli('capture', '--recipe', file);
    assert.equal(ok.status, 0, ok.stderr);
    assert.match(ok.stdout, /resuming; 12 samples are in finished shards/);
    assertSameFiles(path.join(work, 'whole', 'train'), dir);
  });

  test("storeSource: the data's content (not its path) and every setting that selects or changes samples", async () => {
    const { loadRecipe } = await import('../src/recipe/recipe.ts');
    const { storeSource } = await import('../src/data/train-files.ts');
    const file = recipe('source');
    const a = storeSource(loadRecipe(file), 'train');
    assert.match(a.data_sha256, /^[0-9a-f]{64}$/);
    assert.deepEqual(
      { ...a, data_sha256: '' },
      {
        data_sha256: '',
        data_files: ['reasoning-eval.jsonl'],
        format: 'sharegpt',
        skip_invalid: false,
        limit: 30,
        answer_extractor: 'gsm8k',
        regenerate: null,
      },
    );
    // Moved data is the same data; one changed character is other data.
    const moved = path.join(work, 'moved.jsonl');
    fs.copyFileSync(reasoning, moved);
    assert.equal(storeSource(loadRecipe(file, { 'data.train': moved }), 'train').data_sha256, a.data_sha256);
    const text = fs.readFileSync(moved, 'utf8');
    fs.writeFileSync(moved, text.replace('4', '5'));
    assert.notEqual(storeSource(loadRecipe(file, { 'data.train': moved }), 'train').data_sha256, a.data_sha256);
    // Regeneration: its sampling settings (top-p and seed only when sampling).
    assert.deepEqual(storeSource(loadRecipe(file, { 'data.regenerate': true }), 'train').regenerate, {
      batch_size: 16,
      max_new_tokens: 512,
      temperature: 0,
      top_p: null,
      seed: null,
    });
    assert.deepEqual(
      storeSource(loadRecipe(file, { 'data.regenerate': true, 'regenerate.temperature': 0.7, 'regenerate.seed': 5 }), 'train').regenerate,
      { batch_size: 16, max_new_tokens: 512, temperature: 0.7, top_p: 1, seed: 5 },
    );
    // The eval split: captured whole, never regenerated.
    const e = storeSource(loadRecipe(file, { 'data.eval': chat, 'data.regenerate': true }), 'eval');
    assert.equal(e.limit, null);
    assert.equal(e.regenerate, null);
    assert.deepEqual(e.data_files, ['chat-eval.jsonl']);
  });
});
