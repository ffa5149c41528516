// Shared test utilities: random HF-named weights for a config, comparisons, fixture paths, child processes
// under a timeout with their output kept.
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { ModelConfig } from '../src/io/hf-config.ts';
import type { StoredTensor } from '../src/io/safetensors.ts';
import type { DraftConfig } from '../src/draft/config.ts';
import type { Eagle3Draft } from '../src/draft/eagle3.ts';
import { Rng } from '../src/util/random.ts';

export function fixture(rel: string): string {
  return fileURLToPath(new URL(`./fixtures/${rel}`, import.meta.url));
}

/** Random weights under Hugging Face names for `c` (norm weights near 1, biases included where the family has them). */
export function randomWeights(c: ModelConfig, seed: number): Map<string, StoredTensor> {
  const rng = new Rng(seed);
  const w = new Map<string, StoredTensor>();
  const put = (name: string, shape: number[], std: number, mean = 0) => {
    const n = shape.reduce((a, b) => a * b, 1);
    const data = rng.normalArray(n, std);
    if (mean) for (let i = 0; i < n; i++) data[i] += mean;
    w.set(name, { dtype: 'F32', shape, data });
  };
  const H = c.hiddenSize;
  const q = c.numHeads * c.headDim;
  const kv = c.numKvHeads * c.headDim;
  put('model.embed_tokens.weight', [c.vocabSize, H], 0.5);
  for (let l = 0; l < c.numLayers; l++) {
    const p = `model.layers.${l}.`;
    put(p + 'input_layernorm.weight', [H], 0.1, 1);
    put(p + 'post_attention_layernorm.weight', [H], 0.1, 1);
    put(p + 'self_attn.q_proj.weight', [q, H], 0.2);
    put(p + 'self_attn.k_proj.weight', [kv, H], 0.2);
    put(p + 'self_attn.v_proj.weight', [kv, H], 0.2);
    put(p + 'self_attn.o_proj.weight', [H, q], 0.2);
    if (c.qkvBias) {
      put(p + 'self_attn.q_proj.bias', [q], 0.1);
      put(p + 'self_attn.k_proj.bias', [kv], 0.1);
      put(p + 'self_attn.v_proj.bias', [kv], 0.1);
    }
    if (c.oBias) put(p + 'self_attn.o_proj.bias', [H], 0.1);
    if (c.qkNorm) {
      put(p + 'self_attn.q_norm.weight', [c.headDim], 0.1, 1);
      put(p + 'self_attn.k_norm.weight', [c.headDim], 0.1, 1);
    }
    put(p + 'mlp.gate_proj.weight', [c.intermediateSize, H], 0.2);
    put(p + 'mlp.up_proj.weight', [c.intermediateSize, H], 0.2);
    put(p + 'mlp.down_proj.weight', [H, c.intermediateSize], 0.2);
  }
  put('model.norm.weight', [H], 0.1, 1);
  if (!c.tieWordEmbeddings) put('lm_head.weight', [c.vocabSize, H], 0.2);
  return w;
}

export function mapSource(m: Map<string, StoredTensor>) {
  return { has: (n: string) => m.has(n), read: (n: string) => m.get(n)! };
}

/** Largest |a - b| over two equal-length arrays. */
export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`length ${a.length} vs ${b.length}`);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

export function maxAbs(a: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]));
  return m;
}

/** Rows [from, to) of a row-major [*, width] array. */
export function rows(a: Float32Array, width: number, from: number, to: number): Float32Array {
  return a.subarray(from * width, to * width);
}

/**
 * A small random-weight Llama folder (config.json, model.safetensors, the tiny tokenizer files) for
 * end-to-end tests of capture, training and export: 6 layers, hidden 32, GQA 4/2.
 */
export async function makeRandomTarget(dir: string, seed: number): Promise<void> {
  const fs = await import('node:fs');
  const path = await import('node:path');
  const { parseModelConfig } = await import('../src/io/hf-config.ts');
  const { writeSafetensors } = await import('../src/io/safetensors.ts');
  const { loadTokenizer } = await import('../src/io/tokenizer.ts');
  const tinyDir = fileURLToPath(new URL('../data/tiny-target', import.meta.url));
  const raw = {
    architectures: ['LlamaForCausalLM'],
    hidden_size: 32,
    intermediate_size: 48,
    num_hidden_layers: 6,
    num_attention_heads: 4,
    num_key_value_heads: 2,
    vocab_size: loadTokenizer(tinyDir).vocabSize,
    eos_token_id: 2,
  };
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(raw));
  writeSafetensors(path.join(dir, 'model.safetensors'), randomWeights(parseModelConfig(raw), seed));
  for (const f of ['tokenizer.json', 'tokenizer_config.json']) fs.copyFileSync(path.join(tinyDir, f), path.join(dir, f));
}

const tempDirs: string[] = [];

/** A fresh temporary folder, removed by removeTempDirs (register it with node:test's after()). */
export function tempDir(prefix: string): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  tempDirs.push(d);
  return d;
}

export function removeTempDirs(): void {
  for (const d of tempDirs.splice(0)) fs.rmSync(d, { recursive: true, force: true });
}

/** Deterministic PRNG for tests (mulberry32 written out here, independent of src/util). */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** A checkpoint folder as training writes it: config.json, model.safetensors (+ d2t/t2d), specexit/signals.safetensors. */
export async function writeDraftCheckpoint(dir: string, config: DraftConfig, draft: Eagle3Draft, used: Int32Array): Promise<void> {
  const { writeSafetensors } = await import('../src/io/safetensors.ts');
  const { draftConfigJson } = await import('../src/draft/config.ts');
  const { isServingTensor } = await import('../src/draft/eagle3.ts');
  const model = new Map<string, StoredTensor>();
  const signals = new Map<string, StoredTensor>();
  for (const [n, w] of draft.exportWeights()) (isServingTensor(n) ? model : signals).set(n, { dtype: 'F32', shape: w.shape, data: w.data });
  const t2d = new Uint8Array(config.vocabSize);
  for (const t of used) t2d[t] = 1;
  model.set('d2t', { dtype: 'I64', shape: [used.length], data: BigInt64Array.from(used, (t, i) => BigInt(t - i)) });
  model.set('t2d', { dtype: 'BOOL', shape: [config.vocabSize], data: t2d });
  fs.mkdirSync(dir, { recursive: true });
  writeSafetensors(path.join(dir, 'model.safetensors'), model, { format: 'pt' });
  if (signals.size) writeSafetensors(path.join(dir, 'specexit', 'signals.safetensors'), signals);
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(draftConfigJson(config), null, 2));
}

export const repoRoot = fileURLToPath(new URL('..', import.meta.url));
export const specforgeBin = path.join(repoRoot, 'bin', 'specforge.js');

/**
 * The longest a child process of a test may run before it counts as hung: it is killed and the test fails
 * with its output. Generous, so that a loaded machine never fails a correct run; it only turns a hang into
 * a failure (SPECFORGE_TEST_CHILD_TIMEOUT_S overrides it).
 */
/**
 * Every child's environment: specforge as one process (the pid it writes into locks is the pid the test
 * started and kills), not started again with malloc settings; tests/cli.test.ts tests that path alone.
 */
export const CHILD_ENV: Record<string, string> = { SPECFORGE_MALLOC: '0' };

export const CHILD_TIMEOUT_MS = Number(process.env.SPECFORGE_TEST_CHILD_TIMEOUT_S ?? 900) * 1000;

export interface ChildRun {
  status: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** `args`: node's arguments, or a whole command line that starts with 'mpirun'. */
function childFailure(args: string[], why: string, out: { stdout?: string | null; stderr?: string | null }): Error {
  const tail = (s: string | null | undefined) => (s ?? '').slice(-20_000);
  return new Error(
    `${args[0] === 'mpirun' ? '' : 'node '}${args.join(' ')}: ${why}\n--- stdout ---\n${tail(out.stdout)}\n--- stderr ---\n${tail(out.stderr)}`,
  );
}

/**
 * Runs `node <args>` to its end, with its output kept. Throws (with the output) when it runs past
 * CHILD_TIMEOUT_MS or dies by a signal; a non-zero status is returned for the test to check.
 */
export function runNode(args: string[], env: Record<string, string> = {}): ChildRun {
  return runCommand(process.execPath, args, env, 'SIGKILL');
}

/** `command <args>` as runNode, stopped on a hang by `killSignal`. */
function runCommand(command: string, args: string[], env: Record<string, string>, killSignal: NodeJS.Signals): ChildRun {
  const r = spawnSync(command, args, {
    encoding: 'utf8',
    env: { ...process.env, ...CHILD_ENV, ...env },
    timeout: CHILD_TIMEOUT_MS,
    killSignal,
    maxBuffer: 1 << 30,
  });
  const shown = command === process.execPath ? args : [command, ...args];
  if (r.error) throw childFailure(shown, `did not finish (${r.error.message})`, r);
  if (r.signal) throw childFailure(shown, `killed by ${r.signal}`, r);
  return { status: r.status, signal: r.signal, stdout: r.stdout, stderr: r.stderr };
}

/** What mpirun needs in the tests: CI runs as root, where Open MPI refuses to start without these. */
export const MPI_ENV = { OMPI_ALLOW_RUN_AS_ROOT: '1', OMPI_ALLOW_RUN_AS_ROOT_CONFIRM: '1' };

/** Why this machine cannot run the MPI tests (the reason of a visible skip), or false when it can. */
export function mpiMissing(): string | false {
  const how = 'apt-get install libopenmpi-dev openmpi-bin, then npm rebuild specforge-mpi';
  if (spawnSync('mpirun', ['--version']).status !== 0) return `Open MPI is not installed (no mpirun): ${how}`;
  try {
    createRequire(import.meta.url)('specforge-mpi');
  } catch (e) {
    return `the MPI binding specforge-mpi is not built (${(e as Error).message.split('\n')[0]})`;
  }
  return false;
}

/** mpirun's options for `np` processes (more than the cores allowed); `tcp`: shared memory off, the transport between machines. */
export function mpirunOptions(np: number, tcp = false): string[] {
  return ['-np', String(np), '--oversubscribe', ...(tcp ? ['--mca', 'btl', 'tcp,self'] : [])];
}

/** `mpirun <options> node <args>` as runNode; a hang is stopped with SIGTERM, on which mpirun takes its ranks down. */
export function mpirunNode(options: string[], args: string[], env: Record<string, string> = {}): ChildRun {
  return runCommand('mpirun', [...options, process.execPath, ...args], { ...MPI_ENV, ...env }, 'SIGTERM');
}

/** `mpirun <options> specforge <args>` to its end, as runNode. */
export function mpirunSpecforge(options: string[], args: string[], env: Record<string, string> = {}): ChildRun {
  return mpirunNode(options, [specforgeBin, ...args], env);
}

/** `specforge <args>` (bin/specforge.js) to its end, as runNode. */
export function specforge(args: string[], env: Record<string, string> = {}): ChildRun {
  return runNode([specforgeBin, ...args], env);
}

/**
 * Starts `specforge <args>`, waits until its output (stdout or stderr) matches `marker`, then kills it with
 * SIGKILL. Throws, with the child's output, when it ends before the marker, or the marker does not come
 * within CHILD_TIMEOUT_MS, or it ended by itself after the marker before the kill reached it: whatever the
 * test asserts next was done by a process that really passed the marker and was really killed. Pair it with
 * a marker after which the child stops (SPECFORGE_INJECT_FAULT=<rank>:<step>:hang, tests/jobs/hang-after-shards.mjs)
 * so that what it wrote when killed does not depend on timing.
 */
export async function killAtMarker(
  args: string[],
  marker: RegExp,
  o: { env?: Record<string, string>; node?: string[] } = {},
): Promise<ChildRun> {
  return withChildAtMarker(args, marker, o, async () => {});
}

/**
 * As killAtMarker, but runs `whileAlive(pid)` once the marker has come, before the kill (which follows
 * whatever it does or throws).
 */
export async function withChildAtMarker(
  args: string[],
  marker: RegExp,
  o: { env?: Record<string, string>; node?: string[] },
  whileAlive: (pid: number) => Promise<void>,
): Promise<ChildRun> {
  const full = [...(o.node ?? []), specforgeBin, ...args];
  const { seen, end, out } = await watchChild(process.execPath, full, o.env ?? {}, marker, whileAlive, 'SIGKILL');
  if (seen === 'timeout') throw childFailure(full, `no ${marker} in its output within ${CHILD_TIMEOUT_MS / 1000} s`, out);
  if (seen === 'ended') throw childFailure(full, `ended (status ${end.status}, signal ${end.signal}) before ${marker}`, out);
  if (end.signal !== 'SIGKILL')
    throw childFailure(full, `passed ${marker} but ended by itself (status ${end.status}) before the kill`, out);
  return { ...end, ...out };
}

/**
 * `mpirun <options> specforge <args>`: once its output matches `marker`, runs `atMarker(output so far)`
 * (which kills a rank, say), then waits for the job to end by itself. Throws, with the output, when it ends
 * before the marker, or the marker does not come, or the job does not end, within CHILD_TIMEOUT_MS each
 * (then it is stopped with SIGTERM, which mpirun passes to its ranks).
 */
export async function mpirunAtMarker(
  options: string[],
  args: string[],
  marker: RegExp,
  env: Record<string, string>,
  atMarker: (output: string) => void,
): Promise<ChildRun> {
  const full = ['mpirun', ...options, process.execPath, specforgeBin, ...args];
  const { seen, end, out } = await watchChild(
    full[0],
    full.slice(1),
    { ...MPI_ENV, ...env },
    marker,
    async (_pid, closed, out) => {
      atMarker(out.stdout + out.stderr);
      let timer: NodeJS.Timeout | undefined;
      const hung = new Promise<'hung'>((resolve) => (timer = setTimeout(() => resolve('hung'), CHILD_TIMEOUT_MS)));
      const ended = await Promise.race([closed, hung]);
      clearTimeout(timer);
      if (ended === 'hung') throw childFailure(full, `did not end within ${CHILD_TIMEOUT_MS / 1000} s of the marker`, out);
    },
    'SIGTERM',
  );
  if (seen === 'timeout') throw childFailure(full, `no ${marker} in its output within ${CHILD_TIMEOUT_MS / 1000} s`, out);
  if (seen === 'ended') throw childFailure(full, `ended (status ${end.status}, signal ${end.signal}) before ${marker}`, out);
  return { ...end, ...out };
}

/**
 * Starts `command <args>`, waits until its output (stdout or stderr) matches `marker` (or it ends, or
 * CHILD_TIMEOUT_MS passes), runs `whileAlive(pid)` after the marker, then stops it with `stop`.
 */
async function watchChild(
  command: string,
  args: string[],
  env: Record<string, string>,
  marker: RegExp,
  whileAlive: (pid: number, closed: Promise<unknown>, out: { stdout: string; stderr: string }) => Promise<void>,
  stop: NodeJS.Signals,
): Promise<{
  seen: 'marker' | 'ended' | 'timeout';
  end: { status: number | null; signal: NodeJS.Signals | null };
  out: { stdout: string; stderr: string };
}> {
  const child = spawn(command, args, { env: { ...process.env, ...CHILD_ENV, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  const out = { stdout: '', stderr: '' };
  const closed = new Promise<{ status: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once('close', (status, signal) => resolve({ status, signal })),
  );
  const seen = await new Promise<'marker' | 'ended' | 'timeout'>((resolve) => {
    const timer = setTimeout(() => resolve('timeout'), CHILD_TIMEOUT_MS);
    const check = () => {
      if (marker.test(out.stdout) || marker.test(out.stderr)) {
        clearTimeout(timer);
        resolve('marker');
      }
    };
    child.stdout.setEncoding('utf8').on('data', (d: string) => {
      out.stdout += d;
      check();
    });
    child.stderr.setEncoding('utf8').on('data', (d: string) => {
      out.stderr += d;
      check();
    });
    void closed.then(() => {
      clearTimeout(timer);
      resolve('ended');
    });
  });
  try {
    if (seen === 'marker') await whileAlive(child.pid!, closed, out);
  } finally {
    if (child.exitCode === null && child.signalCode === null) child.kill(stop);
  }
  return { seen, end: await closed, out };
}

/** f() on first call, its result ever after: a run several tests read, made by whichever test needs it first. */
export function once<T>(f: () => T): () => T {
  let done = false;
  let value: T;
  return () => {
    if (!done) {
      value = f();
      done = true;
    }
    return value;
  };
}

/** Two safetensors files hold the same tensors: names, dtypes, shapes and every bit of the data. */
export async function assertSameTensors(a: string, b: string): Promise<void> {
  const { SafetensorsFile } = await import('../src/io/safetensors.ts');
  const fa = new SafetensorsFile(a);
  const fb = new SafetensorsFile(b);
  assert.deepEqual(fb.names().sort(), fa.names().sort(), `${b}: tensor names`);
  for (const n of fa.names()) {
    assert.deepEqual(fb.info(n), fa.info(n), `${b}: ${n} dtype and shape`);
    const x = fa.read(n).data;
    const y = fb.read(n).data;
    const bytes = (t: ArrayBufferView) => Buffer.from(t.buffer, t.byteOffset, t.byteLength);
    assert.ok(
      bytes(x).equals(bytes(y)),
      `${b}: ${n} differs from ${a} (max abs diff ${x instanceof Float32Array ? maxAbsDiff(x, y as Float32Array) : '-'})`,
    );
  }
}

/** The rows of a run's metrics.jsonl. */
export function metricsRows(runDir: string): Record<string, unknown>[] {
  const file = path.join(runDir, 'metrics.jsonl');
  if (!fs.existsSync(file)) return [];
  return fs
    .readFileSync(file, 'utf8')
    .split('\n')
    .filter((l) => l.trim())
    .map((l) => JSON.parse(l));
}

/** A row without what depends on the clock. */
const untimed = ({ time: _t, tokens_per_s: _r, ...row }: Record<string, unknown>) => row;

/** The step-<N> folders of a run, in step order. */
export function stepDirs(runDir: string): string[] {
  return fs
    .readdirSync(runDir)
    .filter((d) => /^step-\d+$/.test(d))
    .sort((a, b) => Number(a.slice(5)) - Number(b.slice(5)));
}

/**
 * That `runDir` was really resumed, and exactly. `killedRows`: its metrics rows when it was interrupted;
 * `resumed`: the resuming invocation's output; `reference`: the run dir of an uninterrupted run of the same
 * recipe. Checks that the resuming invocation
 *   - says it resumed from step-`from` at step `from`, and its summary.json names that checkpoint;
 *   - trained only the steps after `from`: the rows up to `from` are the interrupted run's, time stamps and
 *     all, and after it there is one train row per step, equal to the reference's (losses, accuracies,
 *     learning rate, gradient norm, to the bit);
 *   - ended at step `to` bit-identical to the reference: served weights, SpecExit signal rows, AdamW moments,
 *     and the trainer state (step, epoch, sampler position, learning rate).
 */
export async function assertExactResume(o: {
  runDir: string;
  reference: string;
  from: number;
  to: number;
  killedRows: Record<string, unknown>[];
  resumed: ChildRun;
}): Promise<void> {
  const { runDir, reference, from, to } = o;
  const fromDir = path.join(runDir, `step-${from}`);
  assert.equal(o.resumed.status, 0, o.resumed.stderr + o.resumed.stdout);
  assert.ok(
    o.resumed.stdout.includes(`resumed from ${fromDir} at step ${from}\n`),
    `the run says it resumed from ${fromDir} at step ${from}:\n${o.resumed.stdout}`,
  );
  const summary = JSON.parse(fs.readFileSync(path.join(runDir, 'summary.json'), 'utf8'));
  assert.equal(summary.resumed_from, fromDir);
  assert.equal(summary.steps, to);
  const train = (rows: Record<string, unknown>[]) => rows.filter((r) => r.split === 'train');
  const killed = train(o.killedRows).filter((r) => (r.step as number) <= from);
  assert.deepEqual(
    killed.map((r) => r.step),
    Array.from({ length: from }, (_, i) => i + 1),
    'the interrupted run logged every step up to the checkpoint',
  );
  const rows = train(metricsRows(runDir));
  assert.deepEqual(
    rows.map((r) => r.step),
    Array.from({ length: to }, (_, i) => i + 1),
    'one train row per step',
  );
  assert.deepEqual(rows.slice(0, from), killed, 'the rows up to the checkpoint are the interrupted run’s, not trained again');
  assert.deepEqual(rows.map(untimed), train(metricsRows(reference)).map(untimed), 'every row equals the uninterrupted run’s');
  const at = (dir: string) => path.join(dir, `step-${to}`);
  await assertSameTensors(path.join(at(reference), 'model.safetensors'), path.join(at(runDir), 'model.safetensors'));
  await assertSameTensors(
    path.join(at(reference), 'training_state', 'optimizer.safetensors'),
    path.join(at(runDir), 'training_state', 'optimizer.safetensors'),
  );
  const signals = (dir: string) => path.join(at(dir), 'specexit', 'signals.safetensors');
  assert.equal(fs.existsSync(signals(runDir)), fs.existsSync(signals(reference)));
  if (fs.existsSync(signals(reference))) await assertSameTensors(signals(reference), signals(runDir));
  const state = (dir: string) => {
    const { recipeKey: _k, ...s } = JSON.parse(fs.readFileSync(path.join(at(dir), 'training_state', 'trainer_state.json'), 'utf8'));
    return s;
  };
  assert.deepEqual(state(runDir), state(reference));
  assert.equal(state(runDir).step, to);
}

/** x / |x| of row `i` of a row-major [*, H] table. */
function unitRow(t: Float32Array, i: number, H: number): Float32Array {
  const e = t.subarray(i * H, (i + 1) * H);
  const n = Math.hypot(...e);
  return e.map((v) => v / n);
}

/**
 * Weights of a target for `c` (untied lm_head) whose greedy next token is next[x] after token x, nearly
 * whatever came before: random weights whose decoder layers add little (o_proj and down_proj scaled by
 * `layerScale`), a final norm of ones, and lm_head row y the unit embeddings of the tokens x with next[x] = y
 * (next[x] < 0: x has no say; its successor is whichever row its embedding happens to favour).
 */
export function cycleTargetWeights(c: ModelConfig, seed: number, next: ArrayLike<number>, layerScale = 0.05): Map<string, StoredTensor> {
  const w = randomWeights(c, seed);
  for (const [n, t] of w)
    if (/\.(o_proj|down_proj)\.weight$/.test(n)) (t.data as Float32Array).forEach((v, i, a) => (a[i] = v * layerScale));
  const H = c.hiddenSize;
  (w.get('model.norm.weight')!.data as Float32Array).fill(1);
  const embed = w.get('model.embed_tokens.weight')!.data as Float32Array;
  const head = new Float32Array(c.vocabSize * H);
  for (let x = 0; x < c.vocabSize; x++) {
    if (next[x] < 0) continue;
    const u = unitRow(embed, x, H);
    for (let i = 0; i < H; i++) head[next[x] * H + i] += 4 * u[i];
  }
  w.set('lm_head.weight', { dtype: 'F32', shape: [c.vocabSize, H], data: head });
  return w;
}

/**
 * Weights of a draft that guesses well by construction for a cycleTargetWeights target (`next`, `embed`:
 * its map and embedding table), from `base` (a draft's weights, SGLang names, PyTorch layout). fc passes
 * the last aux layer's features (about the current token's embedding e_x) through; the MLP is a lookup
 * that turns e_x into e_next[x] for up to intermediate_size tokens (`tokens`), one unit each; attention adds
 * a little (o_proj scaled by 0.02); lm_head is the target's over the draft vocabulary. A context position
 * with token x thus predicts next[next[x]] (EAGLE-3's token two ahead), and each tree node one step further.
 */
export function cycleDraftWeights(
  base: Map<string, { shape: number[]; data: Float32Array }>,
  embed: Float32Array,
  next: ArrayLike<number>,
  used: Int32Array,
  tokens: number[],
): Map<string, Float32Array> {
  const w = new Map([...base].map(([n, t]) => [n, Float32Array.from(t.data)]));
  const [H, F] = base.get('fc.weight')!.shape;
  const I = base.get('midlayer.mlp.gate_proj.weight')!.shape[0];
  if (tokens.length > I) throw new Error(`cycleDraftWeights: ${tokens.length} tokens, but the MLP has ${I} units`);
  const fc = new Float32Array(H * F);
  for (let i = 0; i < H; i++) fc[i * F + (F - H) + i] = 1;
  w.set('fc.weight', fc);
  w.set(
    'midlayer.self_attn.o_proj.weight',
    w.get('midlayer.self_attn.o_proj.weight')!.map((x) => 0.02 * x),
  );
  const gate = new Float32Array(I * H);
  const up = new Float32Array(I * H);
  const down = new Float32Array(H * I);
  // Unit k fires (silu(3 * 5.7)) for the RMS-normalised e_x of its token, barely for others (silu(3 * ~1)).
  const own = (3 * Math.sqrt(H) * (3 * Math.sqrt(H))) / (1 + Math.exp(-3 * Math.sqrt(H)));
  tokens.forEach((x, k) => {
    const u = unitRow(embed, x, H);
    for (let i = 0; i < H; i++) {
      gate[k * H + i] = 3 * u[i];
      up[k * H + i] = 3 * u[i];
      down[i * I + k] = (embed[next[x] * H + i] - embed[x * H + i]) / own;
    }
  });
  for (const n of ['midlayer.post_attention_layernorm.weight', 'norm.weight']) w.get(n)!.fill(1);
  w.set('midlayer.mlp.gate_proj.weight', gate);
  w.set('midlayer.mlp.up_proj.weight', up);
  w.set('midlayer.mlp.down_proj.weight', down);
  const head = new Float32Array(used.length * H);
  const row = new Map(Array.from(used, (t, j) => [t, j]));
  for (let x = 0; x < next.length; x++) {
    const j = row.get(next[x]);
    if (j === undefined) continue;
    const u = unitRow(embed, x, H);
    for (let i = 0; i < H; i++) head[j * H + i] += 4 * u[i];
  }
  w.set('lm_head.weight', head);
  return w;
}

// Reference float rounding, written out here (independent of src/io/dtypes.ts).
const dv = new DataView(new ArrayBuffer(4));
export function f32Bits(x: number): number {
  dv.setFloat32(0, x, true);
  return dv.getUint32(0, true);
}
export function bitsF32(b: number): number {
  dv.setUint32(0, b >>> 0, true);
  return dv.getFloat32(0, true);
}

/** Reference bf16: round-to-nearest-even on the float32 bit pattern (finite inputs). */
export function refBf16(x: number): number {
  const bits = f32Bits(x);
  let upper = bits >>> 16;
  const lower = bits & 0xffff;
  if (lower > 0x8000 || (lower === 0x8000 && (upper & 1) === 1)) upper += 1;
  return bitsF32(upper << 16);
}

function roundHalfEven(y: number): number {
  const f = Math.floor(y);
  const d = y - f;
  if (d > 0.5) return f + 1;
  if (d < 0.5) return f;
  return f % 2 === 0 ? f : f + 1;
}

/** Reference f16 value (as a number) for a float32 input: scale to integer ulps, round half to even. */
export function refF16(x: number): number {
  if (Number.isNaN(x)) return NaN;
  if (x === 0 || !Number.isFinite(x)) return x;
  const a = Math.abs(x);
  const e = Math.max(Math.floor(Math.log2(a)), -14);
  // log2 can be off by one near powers of two: fix e so that 2^e <= a < 2^(e+1) (or e == -14).
  let ee = e;
  while (ee > -14 && 2 ** ee > a) ee--;
  while (2 ** (ee + 1) <= a) ee++;
  const ulp = 2 ** (Math.max(ee, -14) - 10);
  const r = roundHalfEven(a / ulp) * ulp;
  const v = r > 65504 ? Infinity : r;
  return x < 0 ? -v : v;
}
