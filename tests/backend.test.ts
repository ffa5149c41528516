// Backend choice and the custom-gradient matmul.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { after, before, describe, test } from 'node:test';
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../src/backend/backend.ts';
import {
  SPLIT_BATCH_MACS,
  ORT_GEMM_MIN_MACS,
  configureGemm,
  linear,
  matmul,
  ortGemmThreads,
  stopOrtGemm,
  useOrtGemm,
} from '../src/backend/matmul.ts';
import { OrtGemm } from '../src/backend/ort-gemm.ts';
import { Rng } from '../src/util/random.ts';
import { maxAbs, maxAbsDiff, removeTempDirs, repoRoot, runNode, tempDir } from './helpers.ts';

after(removeTempDirs);

test('an unknown backend name is refused, naming the choices', async () => {
  await assert.rejects(initBackend('bogus' as never), /unknown backend 'bogus': expected one of auto, node-gpu, node, wasm, cpu/);
});

test('an explicit backend that cannot load is a clear error, never a silent fallback', () => {
  // Run where @tensorflow/tfjs-node and -node-gpu cannot load (a resolve hook refuses them), so that this runs
  // whether or not they are installed here.
  const dir = tempDir('backend-test-');
  const hook = path.join(dir, 'hook.mjs');
  fs.writeFileSync(
    hook,
    `export async function resolve(spec, ctx, next) {\n` +
      `  if (spec.startsWith('@tensorflow/tfjs-node')) throw new Error('Cannot find package ' + spec);\n` +
      `  return next(spec, ctx);\n}\n`,
  );
  fs.writeFileSync(
    path.join(dir, 'register.mjs'),
    `import { register } from 'node:module';\nregister(${JSON.stringify(pathToFileURL(hook).href)});\n`,
  );
  const backend = pathToFileURL(path.join(repoRoot, 'src', 'backend', 'backend.ts')).href;
  const script =
    `const { BackendError, initBackend } = await import(${JSON.stringify(backend)});\n` +
    `for (const name of ['node', 'node-gpu', 'auto']) {\n` +
    `  try { console.log(name, 'ok', await initBackend(name)); }\n` +
    `  catch (e) { console.log(name, e instanceof BackendError ? 'BackendError' : 'other', e.message); }\n}\n`;
  const r = runNode(['--import', 'tsx', '--import', path.join(dir, 'register.mjs'), '--input-type=module', '-e', script]);
  assert.equal(r.status, 0, r.stderr);
  const lines = r.stdout.trim().split('\n');
  assert.match(
    lines[0],
    /^node BackendError backend 'node': cannot load @tensorflow\/tfjs-node \(.*Cannot find package @tensorflow\/tfjs-node.*\); it is an optional dependency/,
  );
  assert.match(lines[1], /^node-gpu BackendError backend 'node-gpu': cannot load @tensorflow\/tfjs-node-gpu \(/);
  // auto goes on to the next choice instead.
  assert.match(lines[2], /^auto ok wasm$/);
  assert.equal(lines.length, 3, r.stdout);
});

for (const [backend, ort] of [
  ['cpu', false],
  ['wasm', false],
  ['wasm', true],
] as const) {
  describe(`matmul on ${backend}${ort ? ' with every product on ONNX Runtime GEMM' : ''}`, () => {
    before(async () => {
      if (ort) await useOrtGemm(1, 0);
    });
    after(() => stopOrtGemm());

    test('forward and gradients equal tf.matMul, shared weight and batched', async () => {
      assert.equal(await initBackend(backend), backend);
      assert.equal(tf.getBackend(), backend);
      assert.equal(ortGemmThreads(), ort ? 1 : null);
      const rng = new Rng(1);
      const rand = (shape: number[]) => tf.tensor(rng.normalArray(shape.reduce((a, b) => a * b, 1)), shape);
      const before = tf.memory().numTensors;
      const cases: [number[], number[]][] = [
        [
          [5, 7],
          [7, 3],
        ], // 2-D
        [
          [2, 5, 7],
          [7, 3],
        ], // shared weight over leading dims
        [
          [4, 5, 7],
          [4, 7, 3],
        ], // batched
        [
          [3, 64, 96],
          [3, 96, 96],
        ], // batched, large enough (SPLIT_BATCH_MACS) to run as one 2-D product per entry on wasm
        [
          [2, 3, 5, 7],
          [2, 3, 7, 4],
        ], // batched, rank 4
      ];
      for (const [sa, sb] of cases) {
        const a = rand(sa);
        const b = rand(sb);
        const w = rand([...sa.slice(0, -1), sb[sb.length - 1]]); // weights of a scalar loss sum(w * y)
        const ours = tf.grads((x: tf.Tensor, y: tf.Tensor) => tf.sum(tf.mul(matmul(x, y), w)));
        const ref = tf.grads((x: tf.Tensor, y: tf.Tensor) => {
          const prod =
            sb.length === 2 && sa.length > 2 ? tf.matMul(x.reshape([-1, sa[sa.length - 1]]), y).reshape(w.shape) : tf.matMul(x, y);
          return tf.sum(tf.mul(prod, w));
        });
        const [ga, gb] = ours([a, b]);
        const [ra, rb] = ref([a, b]);
        const fwd = matmul(a, b);
        const plain = tf.matMul(a, b);
        assert.ok(maxAbsDiff(fwd.dataSync(), plain.dataSync()) <= 1e-4 * Math.max(1, maxAbs(plain.dataSync())), `forward ${sa} x ${sb}`);
        plain.dispose();
        if (backend === 'wasm' && !ort && sa[1] * sa[2] * sb[2] >= SPLIT_BATCH_MACS) {
          // The split path really runs: one product kernel per batch entry.
          const info = await tf.profile(() => matmul(a, b));
          assert.equal(info.kernels.filter((k) => k.name === 'BatchMatMul').length, sa[0], `split ${sa} x ${sb}`);
          tf.dispose(info.result as tf.Tensor);
        }
        const tol = 1e-5 * Math.max(1, maxAbs(ra.dataSync()), maxAbs(rb.dataSync()));
        assert.deepEqual(fwd.shape, w.shape);
        assert.ok(maxAbsDiff(ga.dataSync(), ra.dataSync()) <= tol, `dA ${sa} x ${sb}`);
        assert.ok(maxAbsDiff(gb.dataSync(), rb.dataSync()) <= tol, `dB ${sa} x ${sb}`);
        tf.dispose([a, b, w, ga, gb, ra, rb, fwd]);
      }
      assert.equal(tf.memory().numTensors, before, 'no tensors leaked');
    });

    test('linear adds its bias and rejects mismatched shapes', async () => {
      await initBackend(backend);
      const x = tf.tensor2d([[1, 2]]);
      const w = tf.tensor2d([
        [1, 0, 2],
        [0, 1, 3],
      ]);
      const y = linear(x, w, tf.tensor1d([10, 20, 30]));
      assert.deepEqual(Array.from(y.dataSync()), [11, 22, 38]);
      assert.throws(() => matmul(x, tf.ones([3, 2])), /inner dimensions differ/);
    });
  });
}

test('runtime.gemm: auto turns ONNX Runtime GEMM on for wasm and off for tfjs; products only past the size threshold go there', async () => {
  await initBackend('wasm');
  await configureGemm('tfjs', 1);
  assert.equal(ortGemmThreads(), null);
  await configureGemm('auto', 2);
  assert.equal(ortGemmThreads(), Math.max(1, Math.floor(os.availableParallelism() / 2)));
  // Below ORT_GEMM_MIN_MACS the product stays a tfjs kernel; at it, it leaves tfjs.
  const kernels = async (n: number) => {
    const a = tf.ones([n, 256]);
    const b = tf.ones([256, 256]);
    const info = await tf.profile(() => matmul(a, b));
    tf.dispose([a, b, info.result as tf.Tensor]);
    return info.kernels.filter((k) => k.name === 'BatchMatMul').length;
  };
  assert.equal(await kernels(8), 1);
  assert.equal(await kernels(ORT_GEMM_MIN_MACS / (256 * 256)), 0);
  stopOrtGemm();
  assert.equal(ortGemmThreads(), null);
});

const fpenvBuilt = (() => {
  try {
    createRequire(import.meta.url)('specforge-fpenv');
    return true;
  } catch {
    return false;
  }
})();

test('the ONNX Runtime worker flushes subnormal floats to zero (specforge-fpenv), and computes them in full when told not to', {
  skip: fpenvBuilt ? false : 'specforge-fpenv is not built (no C toolchain when npm installed it)',
}, async () => {
  const tiny = Math.fround(1e-40); // subnormal in float32 (below 1.2e-38), yet not zero
  assert.ok(tiny > 0 && tiny < 1.1754944e-38);
  const run = async (env: string | undefined) => {
    const saved = process.env.SPECFORGE_FLUSH_DENORMALS;
    if (env === undefined) delete process.env.SPECFORGE_FLUSH_DENORMALS;
    else process.env.SPECFORGE_FLUSH_DENORMALS = env;
    const g = await OrtGemm.start(1);
    if (saved === undefined) delete process.env.SPECFORGE_FLUSH_DENORMALS;
    else process.env.SPECFORGE_FLUSH_DENORMALS = saved;
    try {
      // A subnormal result (1e-20 * 1e-20) and a subnormal input (1e-40 * 1e30).
      const out = g.product(Float32Array.of(1e-20, tiny), [2, 1], Float32Array.of(1e-20, 1e30), [1, 2]).c;
      return { mode: g.denormals, under: out[0], fromInput: out[3] };
    } finally {
      g.dispose();
    }
  };
  // Twice: ORT itself sets the bits on the thread that creates the process's first session (once), and
  // every rank's worker must flush, not only the first.
  for (let i = 0; i < 2; i++) {
    const flushed = await run(undefined);
    assert.deepEqual(flushed.mode, { flushing: true });
    assert.equal(flushed.under, 0, `worker ${i + 1}`);
    assert.equal(flushed.fromInput, 0, `worker ${i + 1}`);
  }
  const full = await run('0');
  assert.equal(full.mode.flushing, false);
  assert.match(full.mode.reason ?? '', /SPECFORGE_FLUSH_DENORMALS=0/);
  assert.ok(Math.abs(full.under - 1e-40) < 1e-44, `1e-20 * 1e-20 = ${full.under}`);
  assert.ok(Math.abs(full.fromInput - 1e-10) < 1e-14, `1e-40 * 1e30 = ${full.fromInput}`);
});
