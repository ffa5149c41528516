// The ONNX Runtime target against the tfjs target (itself checked against PyTorch in target.test.ts), on the
// golden fixtures and on scaled-down copies of the four published configs: full forwards on ragged batches,
// KV-cached decoding with truncate/select, tree masks; then the converted-weight cache (reuse, corruption,
// rebuild), the factory and the provider check.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../src/backend/backend.ts';
import { type ModelConfig, parseModelConfig } from '../src/io/hf-config.ts';
import { SafetensorsFolder, SafetensorsFile, writeSafetensors } from '../src/io/safetensors.ts';
import { loadTarget, prepareRecipeTarget, targetOptions } from '../src/target/load.ts';
import { OrtTarget, checkProvider } from '../src/target/ort-target.ts';
import { DATA_FILE, MANIFEST } from '../src/target/ort-weights.ts';
import type { KVCache, TargetInput, TargetModel, TargetOutput } from '../src/target/runtime.ts';
import { TfjsTarget } from '../src/target/tfjs-target.ts';
import { Rng } from '../src/util/random.ts';
import { fixture, maxAbs, maxAbsDiff, randomWeights, removeTempDirs, tempDir } from './helpers.ts';

before(async () => {
  await initBackend('wasm');
});
after(removeTempDirs);

const cacheRoot = tempDir('ort-target-cache-');
const load = (dir: string) => OrtTarget.load(dir, { cacheDir: cacheRoot, threads: 1 });

/** Largest difference, relative to max(1, |expected|) so that large logits are held to float32 precision. */
function close(got: tf.Tensor | undefined, want: tf.Tensor | undefined, what: string, tol = 1e-4): void {
  assert.ok(got && want, `${what}: missing`);
  assert.deepEqual(got.shape, want.shape, `${what}: shape`);
  const w = want.dataSync() as Float32Array;
  const d = maxAbsDiff(got.dataSync() as Float32Array, w);
  assert.ok(d <= tol * Math.max(1, maxAbs(w)), `${what}: max difference ${d}`);
}

function sameOutputs(got: TargetOutput, want: TargetOutput, what: string): void {
  close(got.finalNormed, want.finalNormed, `${what}: final normed`);
  close(got.logits, want.logits, `${what}: logits`);
  assert.deepEqual([...got.layers.keys()], [...want.layers.keys()], `${what}: layers`);
  for (const [l, t] of want.layers) close(got.layers.get(l), t, `${what}: layer ${l}`);
}

function disposeOut(...outs: TargetOutput[]): void {
  for (const o of outs) tf.dispose([o.finalNormed, ...(o.logits ? [o.logits] : []), ...o.layers.values()]);
}

/** Runs the same call on both targets (each with its own cache) and compares. */
function both(
  ort: TargetModel,
  ref: TargetModel,
  caches: [KVCache, KVCache] | null,
  input: TargetInput,
  layers: number[],
  what: string,
): void {
  const a = ort.forward(input, { layers, ...(caches ? { cache: caches[0] } : {}) });
  const b = ref.forward(input, { layers, ...(caches ? { cache: caches[1] } : {}) });
  sameOutputs(a, b, what);
  disposeOut(a, b);
}

/** A published config scaled down to test size, keeping its structural features (as in target.test.ts). */
function scaledDown(name: string): Record<string, unknown> {
  const raw = JSON.parse(fs.readFileSync(fixture(`hf-configs/${name}.json`), 'utf8'));
  const small: Record<string, unknown> = {
    ...raw,
    hidden_size: 32,
    intermediate_size: 48,
    num_hidden_layers: 4,
    num_attention_heads: 4,
    num_key_value_heads: 2,
    vocab_size: 50,
  };
  if (raw.head_dim) small.head_dim = 16; // Qwen3: head_dim differs from hidden/heads (8)
  if (raw.rope_scaling?.rope_type === 'llama3') {
    // 16 frequencies with a short original context put one in each llama3 band.
    small.num_attention_heads = 2;
    small.num_key_value_heads = 1;
    small.rope_scaling = { ...raw.rope_scaling, original_max_position_embeddings: 64 };
  }
  if (raw.dim_model_base) small.dim_model_base = 8;
  return small;
}

/** A model folder (config.json + model.safetensors) of seeded random weights. */
function writeModel(raw: Record<string, unknown>, seed: number, dtype: 'F32' | 'BF16' = 'F32'): { dir: string; config: ModelConfig } {
  const config = parseModelConfig(raw);
  const dir = tempDir('ort-target-model-');
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(raw));
  const weights = randomWeights(config, seed);
  writeSafetensors(path.join(dir, 'model.safetensors'), new Map([...weights].map(([n, t]) => [n, { ...t, dtype }])));
  return { dir, config };
}

const PUBLISHED = ['llama-3.1-8b-instruct', 'qwen2.5-0.5b-instruct', 'qwen3-8b', 'minicpm4-0.5b'];
const MODELS: { name: string; dir: () => string; golden?: boolean }[] = [
  ...['llama', 'qwen2', 'qwen3', 'minicpm'].map((arch) => ({
    name: `golden ${arch}`,
    dir: () => fixture(`golden/targets/${arch}`),
    golden: true,
  })),
  ...PUBLISHED.map((name, i) => {
    let dir: string | null = null;
    return { name: `scaled ${name}`, dir: () => (dir ??= writeModel(scaledDown(name), 20 + i).dir) };
  }),
];

for (const m of MODELS) {
  describe(`ORT target equals tfjs: ${m.name}`, () => {
    let ort: OrtTarget;
    let ref: TfjsTarget;
    let V = 0;
    let L = 0;
    let rng: Rng;
    const tokens = (n: number) => Array.from({ length: n }, () => rng.int(V));
    before(async () => {
      ort = await load(m.dir());
      ref = TfjsTarget.load(m.dir());
      V = ref.config.vocabSize;
      L = ref.config.numLayers;
      rng = new Rng(V * 31 + L);
    });
    after(() => {
      ort?.dispose();
      ref?.dispose();
    });

    if (m.golden)
      test('PyTorch golden vectors', () => {
        const expected = new SafetensorsFile(path.join(m.dir(), 'expected.safetensors'));
        const ids = Array.from(expected.read('input_ids').data as BigInt64Array, Number);
        const out = ort.forward({ ids: [ids] }, { layers: Array.from({ length: L }, (_, l) => l) });
        const want = (name: string, shape: number[]) => tf.tensor(expected.read(name).data as Float32Array, shape);
        const T = ids.length;
        const H = ref.config.hiddenSize;
        close(out.logits, want('logits', [1, T, V]), 'logits');
        close(out.finalNormed, want('final_normed_hidden', [1, T, H]), 'final normed');
        for (let l = 0; l < L; l++) close(out.layers.get(l), want(`layer_output.${l}`, [1, T, H]), `layer ${l}`);
        disposeOut(out);
      });

    test('ragged right-padded batch: layers, final normed, logits', () => {
      const lengths = [11, 6, 9];
      const T = Math.max(...lengths);
      const ids = lengths.map((n) => [...tokens(n), ...new Array(T - n).fill(0)]);
      const attentionMask = lengths.map((n) => Array.from({ length: T }, (_, t) => (t < n ? 1 : 0)));
      both(ort, ref, null, { ids, attentionMask }, [1, L - 1], 'padded batch');
      both(ort, ref, null, { ids: [ids[0]] }, [], 'one row, no layers');
      // Fewer tokens than attention blocks (empty blocks), and uneven blocks.
      for (const n of [1, 2, 3, 5]) both(ort, ref, null, { ids: [tokens(n), tokens(n)] }, [0], `${n} tokens`);
    });

    test('logits: false returns no logits; lmHead and embeddings match', () => {
      const ids = [tokens(7)];
      const a = ort.forward({ ids }, { logits: false, layers: [0] });
      const b = ref.forward({ ids }, { logits: true, layers: [0] });
      assert.equal(a.logits, undefined);
      close(a.layers.get(0), b.layers.get(0), 'layer 0');
      const head = ort.lmHead(a.finalNormed);
      close(head, b.logits, 'lmHead(finalNormed)');
      close(ort.embeddings(), ref.embeddings(), 'embeddings');
      tf.dispose(head);
      disposeOut(a, b);
    });

    test('KV cache: prefill, single steps, k tokens at once, truncate and select, then continue', () => {
      const caches: [KVCache, KVCache] = [ort.newCache(1), ref.newCache(1)];
      const seq = tokens(16);
      const layers = [0, L - 1];
      both(ort, ref, caches, { ids: [seq.slice(0, 5)] }, layers, 'prefill 5');
      both(ort, ref, caches, { ids: [seq.slice(5, 6)] }, layers, 'step 6');
      both(ort, ref, caches, { ids: [seq.slice(6, 7)] }, layers, 'step 7');
      both(ort, ref, caches, { ids: [seq.slice(7, 10)] }, layers, '3 at once');
      for (const c of caches) c.truncate(8);
      both(ort, ref, caches, { ids: [seq.slice(10, 12)] }, layers, 'after truncate(8)');
      for (const c of caches) c.select([0, 1, 2, 3, 4, 5, 6, 7, 9]);
      both(ort, ref, caches, { ids: [seq.slice(12, 13)] }, layers, 'after select');
      // Past the first capacity step (64 slots): the worker's buffers grow and keep their contents.
      both(ort, ref, caches, { ids: [tokens(70)] }, [], 'long append');
      both(ort, ref, caches, { ids: [seq.slice(13, 14)] }, layers, 'step after growth');
      assert.equal(caches[0].length, caches[1].length);
      for (const c of caches) c.dispose();
    });

    test('KV cache: ragged batch, prefill right-padded, then steps and a finished row', () => {
      const caches: [KVCache, KVCache] = [ort.newCache(2), ref.newCache(2)];
      const a = tokens(9);
      const b = tokens(4);
      const pad = (s: number[]) => [...s, ...new Array(9 - s.length).fill(0)];
      both(
        ort,
        ref,
        caches,
        { ids: [a, pad(b)], attentionMask: [a.map(() => 1), pad(b).map((_, t) => (t < b.length ? 1 : 0))] },
        [1],
        'prefill',
      );
      both(ort, ref, caches, { ids: [tokens(1), tokens(1)] }, [1], 'step (row 1 continues at position 4)');
      both(ort, ref, caches, { ids: [tokens(1), [0]], attentionMask: [[1], [0]] }, [1], 'step with row 1 finished');
      both(ort, ref, caches, { ids: [tokens(2), tokens(2)] }, [1], 'two more');
      for (const c of caches) c.dispose();
    });

    test('tree mask over a cached prefix, then keep the accepted path', () => {
      const caches: [KVCache, KVCache] = [ort.newCache(1), ref.newCache(1)];
      both(ort, ref, caches, { ids: [tokens(5)] }, [], 'prefix');
      // Root x0 with children x1, x2; x3 a child of x2.
      const treeMask = [
        [1, 0, 0, 0],
        [1, 1, 0, 0],
        [1, 0, 1, 0],
        [1, 0, 1, 1],
      ];
      both(ort, ref, caches, { ids: [tokens(4)], positionIds: [[5, 6, 6, 7]], treeMask }, [0, L - 1], 'tree');
      for (const c of caches) c.select([0, 1, 2, 3, 4, 5, 7, 8]);
      both(ort, ref, caches, { ids: [tokens(1)] }, [0], 'continuation after select');
      // A tree without a cache (the capture graph) too, and a mask under which a token sees a later one
      // (the unblocked capture graph).
      both(ort, ref, null, { ids: [tokens(4)], treeMask }, [1], 'tree without cache');
      both(ort, ref, null, { ids: [tokens(4)], treeMask: treeMask.map((r) => r.map(() => 1)) }, [1], 'bidirectional mask without cache');
      for (const c of caches) c.dispose();
    });

    test('forwardAsync equals forward', async () => {
      const ids = [tokens(6), tokens(6)];
      const a = await ort.forwardAsync({ ids }, { layers: [0] });
      const b = ort.forward({ ids }, { layers: [0] });
      sameOutputs(a, b, 'async');
      const cache = ort.newCache(2);
      const pending = ort.forwardAsync({ ids }, { cache });
      assert.throws(
        () => cache.select([0]),
        /forwardAsync on this cache is still running/,
        'the bookkeeping is not touched while a call runs',
      );
      assert.throws(() => ort.forward({ ids }), /forwardAsync call is still running/);
      const c = await pending;
      assert.equal(cache.length, 6);
      cache.dispose();
      disposeOut(a, b, c);
    });
  });
}

describe('converted-weight cache', () => {
  const raw = scaledDown('qwen2.5-0.5b-instruct');
  const ids = [[3, 1, 4, 1, 5, 9, 2, 6]];

  test('a second load reuses the converted weights; a bf16 checkpoint converts like tfjs reads it', async () => {
    const { dir } = writeModel(raw, 5, 'BF16');
    const root = tempDir('ort-cache-reuse-');
    const first = await OrtTarget.load(dir, { cacheDir: root, threads: 1 });
    assert.equal(first.weights.built, true);
    const data = path.join(first.weights.dir, DATA_FILE);
    const mtime = fs.statSync(data).mtimeMs;
    const a = first.forward({ ids });
    first.dispose();
    const second = await OrtTarget.load(dir, { cacheDir: root, threads: 1 });
    assert.equal(second.weights.built, false, 'no rebuild');
    assert.equal(second.weights.dir, first.weights.dir);
    assert.equal(fs.statSync(data).mtimeMs, mtime);
    const b = second.forward({ ids });
    const ref = TfjsTarget.load(dir);
    const c = ref.forward({ ids });
    sameOutputs(b, a, 'reloaded');
    sameOutputs(b, c, 'bf16 vs tfjs');
    // Only the entries of one model: no temporary folders left behind.
    assert.deepEqual(fs.readdirSync(path.join(root, 'ort-target')), [path.basename(second.weights.dir)]);
    second.dispose();
    ref.dispose();
    disposeOut(a, b, c);
  });

  test('prepareRecipeTarget converts once before ranks start (ort), and does nothing for tfjs', async () => {
    const { dir } = writeModel(raw, 6);
    const root = tempDir('ort-cache-prepare-');
    const recipe = (engine: 'ort' | 'tfjs') =>
      ({
        model: { target: dir },
        data: { cache_dir: root },
        runtime: { target_engine: engine, target_provider: 'cpu', target_threads: 0 },
      }) as never;
    prepareRecipeTarget(recipe('tfjs'));
    assert.equal(fs.existsSync(path.join(root, 'ort-target')), false, 'tfjs: nothing converted');
    const said: string[] = [];
    prepareRecipeTarget(recipe('ort'), (m) => said.push(m));
    assert.ok(
      said.some((m) => m.includes('converting')),
      said.join('; '),
    );
    const t = await OrtTarget.load(dir, { cacheDir: root, threads: 1 });
    assert.equal(t.weights.built, false, 'the ranks find it built');
    t.dispose();
  });

  test('a truncated data file, a missing manifest or a changed byte is detected and rebuilt', async () => {
    const { dir } = writeModel(raw, 6);
    const root = tempDir('ort-cache-corrupt-');
    const logs: string[] = [];
    const opts = { cacheDir: root, threads: 1, log: (m: string) => logs.push(m) };
    const good = await OrtTarget.load(dir, opts);
    const want = good.forward({ ids });
    const cacheDir = good.weights.dir;
    good.dispose();
    const data = path.join(cacheDir, DATA_FILE);
    const damage: [string, () => void, RegExp][] = [
      [
        'truncated',
        () => fs.truncateSync(data, fs.statSync(data).size - 100),
        /weights\.bin has \d+ bytes, the manifest records \d+ \(truncated\?\)/,
      ],
      ['no manifest', () => fs.rmSync(path.join(cacheDir, MANIFEST)), /manifest\.json is missing/],
      [
        'changed byte',
        () => {
          const fd = fs.openSync(data, 'r+');
          fs.writeSync(fd, Buffer.from([0x7f]), 0, 1, 4096 + 3);
          fs.closeSync(fd);
        },
        /weights\.bin: contents differ from the manifest's sample hash/,
      ],
    ];
    for (const [what, hurt, reason] of damage) {
      hurt();
      logs.length = 0;
      const t = await OrtTarget.load(dir, opts);
      assert.equal(t.weights.built, true, `${what}: rebuilt`);
      assert.match(t.weights.rebuiltBecause ?? '', reason, what);
      assert.ok(
        logs.some((l) => l.includes(cacheDir) && l.includes('rebuilding')),
        `${what}: logged`,
      );
      const got = t.forward({ ids });
      sameOutputs(got, want, what);
      disposeOut(got);
      t.dispose();
    }
    disposeOut(want);
  });

  test('a missing or damaged graph file is rewritten; a leftover temporary build is ignored', async () => {
    const { dir } = writeModel(raw, 7);
    const root = tempDir('ort-cache-graphs-');
    const t1 = await OrtTarget.load(dir, { cacheDir: root, threads: 1 });
    const want = t1.forward({ ids }, { layers: [1] });
    t1.dispose();
    const cacheDir = t1.weights.dir;
    const graphs = fs
      .readdirSync(cacheDir)
      .filter((f) => f.endsWith('.onnx'))
      .sort();
    assert.deepEqual(graphs, ['capture-b4-1.onnx', 'head.onnx']);
    fs.rmSync(path.join(cacheDir, 'head.onnx'));
    fs.writeFileSync(path.join(cacheDir, 'capture-b4-1.onnx'), 'not a protobuf');
    fs.mkdirSync(path.join(root, 'ort-target', `.${path.basename(cacheDir)}.tmp-crashed`)); // a build that died
    const t2 = await OrtTarget.load(dir, { cacheDir: root, threads: 1 });
    assert.equal(t2.weights.built, false, 'the weights are fine: no rebuild');
    const got = t2.forward({ ids }, { layers: [1] });
    sameOutputs(got, want, 'rewritten graphs');
    t2.dispose();
    disposeOut(want, got);
  });

  test('a checkpoint missing a tensor is refused, naming it, and leaves no cache behind', async () => {
    const { dir, config } = writeModel(raw, 8);
    const ckpt = new SafetensorsFolder(dir);
    const keep = new Map(
      ckpt
        .names()
        .filter((n) => n !== 'model.layers.2.self_attn.k_proj.bias')
        .map((n) => [n, ckpt.read(n)] as const),
    );
    writeSafetensors(path.join(dir, 'model.safetensors'), keep as never);
    const root = tempDir('ort-cache-missing-');
    const kv = config.numKvHeads * config.headDim;
    await assert.rejects(
      OrtTarget.load(dir, { cacheDir: root }),
      new RegExp(`missing tensor 'model\\.layers\\.2\\.self_attn\\.k_proj\\.bias' \\(expected shape \\[${kv}\\]\\)`),
    );
    assert.deepEqual(fs.readdirSync(path.join(root, 'ort-target')), []);
  });
});

describe('factory and options', () => {
  test('loadTarget picks the engine', async () => {
    const dir = fixture('golden/targets/qwen3');
    const t = await loadTarget(dir, { engine: 'tfjs' });
    assert.ok(t instanceof TfjsTarget);
    t.dispose();
    const o = await loadTarget(dir, { engine: 'ort', threads: 1, cacheDir: cacheRoot });
    assert.ok(o instanceof OrtTarget);
    assert.equal((o as OrtTarget).threads, 1);
    o.dispose();
    await assert.rejects(loadTarget(dir, { engine: 'torch' as never }), /engine 'torch': expected one of ort, tfjs/);
    const recipe = {
      runtime: {
        backend: 'wasm',
        seed: 1,
        gemm: 'auto',
        train_step: 'auto',
        target_engine: 'ort',
        target_provider: 'cpu',
        target_threads: 0,
      },
    } as const;
    assert.deepEqual(targetOptions(recipe), { engine: 'ort', provider: 'cpu', threads: 0 });
  });

  test('the CUDA provider, when its libraries are absent, fails with how to get them', (t) => {
    let installed = true;
    try {
      checkProvider('cuda');
    } catch (e) {
      installed = false;
      assert.match((e as Error).message, /provider 'cuda' is not (installed|available).*--onnxruntime-node-install=cuda12/);
    }
    if (installed) t.skip('the CUDA provider is installed here');
    assert.throws(() => checkProvider('rocm' as never), /expected one of cpu, cuda/);
  });

  test('unpacked weights and spinning threads give the same results', async () => {
    const dir = fixture('golden/targets/qwen2');
    const ids = [[5, 9, 2, 7, 1, 3]];
    const plain = await load(dir);
    const tuned = await OrtTarget.load(dir, { cacheDir: cacheRoot, threads: 2, prepack: false, spin: true });
    const [ca, cb] = [plain.newCache(1), tuned.newCache(1)];
    for (const step of [ids, [[11]], [[12, 13]]]) {
      const a = plain.forward({ ids: step }, { cache: ca, layers: [2] });
      const b = tuned.forward({ ids: step }, { cache: cb, layers: [2] });
      sameOutputs(b, a, 'prepack off, spinning');
      disposeOut(a, b);
    }
    plain.dispose();
    tuned.dispose();
  });

  test('a worker that has gone is an error, not a hang', async () => {
    const o = await load(fixture('golden/targets/llama'));
    await (o as unknown as { worker: { terminate(): Promise<number> } }).worker.terminate();
    assert.throws(() => o.forward({ ids: [[1, 2]] }), /ONNX Runtime worker exited; load the target again/);
    assert.throws(() => o.forward({ ids: [[1, 2]] }), /worker exited/);
    o.dispose();
    assert.throws(() => o.forward({ ids: [[1, 2]] }), /after dispose/);
    await assert.rejects(OrtTarget.load(fixture('golden/targets/llama'), { threads: -1 }), /threads: expected a non-negative integer/);
  });

  test('use after dispose is an error', async () => {
    const o = await load(fixture('golden/targets/llama'));
    o.dispose();
    assert.throws(() => o.forward({ ids: [[1, 2]] }), /after dispose/);
  });
});
