// The ONNX Runtime target's on-disk cache: a checkpoint's weights converted once to float32 in the layout
// the graphs read (onnx-decoder.ts), in one data file, plus a manifest; the graphs beside them. The folder
// is keyed by the weights fingerprint, config.json and the graph format, built under a temporary name and
// renamed into place when complete, and checked against its manifest at every load.
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { configSha256, weightsSha256 } from '../store/fingerprint.ts';
import type { ModelConfig } from '../io/hf-config.ts';
import { SafetensorsFolder } from '../io/safetensors.ts';
import { GRAPH_FORMAT_VERSION, type StoredWeight, type WeightTable, requiredWeights, storedLayout } from './onnx-decoder.ts';

export const MANIFEST = 'manifest.json';
export const DATA_FILE = 'weights.bin';
const FORMAT = 'specforge-ort-target';
/** Tensor offsets in the data file are multiples of this (page-aligned: ONNX Runtime maps the file). */
const ALIGN = 4096;

export interface WeightManifest {
  format: typeof FORMAT;
  graphFormat: number;
  key: string;
  weightsSha256: string;
  configSha256: string;
  source: string;
  dataFile: string;
  dataBytes: number;
  /** sha256 of sampled 64 KiB windows of the data file: a cheap check that it is the file written. */
  dataSample: string;
  tensors: Record<string, StoredWeight>;
}

export class WeightCacheError extends Error {}

/** `$SPECFORGE_CACHE`, else ~/.cache/specforge. */
export function defaultCacheRoot(): string {
  return process.env.SPECFORGE_CACHE || path.join(os.homedir(), '.cache', 'specforge');
}

export interface WeightCache {
  dir: string;
  manifest: WeightManifest;
  table: WeightTable;
  /** Whether this call converted the checkpoint (false: an existing cache was reused). */
  built: boolean;
  /** Why an existing folder was rebuilt, when it was. */
  rebuiltBecause?: string;
}

/** The cache key of a checkpoint folder: its weights and config fingerprints and the graph format. */
export function weightCacheKey(modelDir: string): { key: string; weights: string; config: string } {
  const weights = weightsSha256(modelDir);
  const config = configSha256(modelDir);
  const key = crypto.createHash('sha256').update(`${weights}\0${config}\0${GRAPH_FORMAT_VERSION}`).digest('hex').slice(0, 32);
  return { key, weights, config };
}

/**
 * The converted weights of `modelDir`, from `<cacheRoot>/ort-target/<key>/`: reused when its manifest and
 * data file check out, else (re)built. `log` hears about conversions and rebuilds.
 */
export function ensureWeightCache(
  modelDir: string,
  config: ModelConfig,
  opts: { cacheRoot?: string; log?: (msg: string) => void } = {},
): WeightCache {
  const log = opts.log ?? (() => {});
  const root = path.join(opts.cacheRoot ?? defaultCacheRoot(), 'ort-target');
  const id = weightCacheKey(modelDir);
  const dir = path.join(root, id.key);
  let rebuiltBecause: string | undefined;
  if (fs.existsSync(dir)) {
    const problem = checkCache(dir, id.key);
    if (!problem) {
      const manifest = readManifest(dir);
      return { dir, manifest, table: { location: manifest.dataFile, tensors: manifest.tensors }, built: false };
    }
    rebuiltBecause = problem;
    log(`ort target: cache ${dir} is unusable (${problem}); rebuilding it`);
  }
  fs.mkdirSync(root, { recursive: true });
  const tmp = fs.mkdtempSync(path.join(root, `.${id.key}.tmp-`));
  let manifest: WeightManifest;
  try {
    log(`ort target: converting ${modelDir} to float32 ONNX weights in ${dir}`);
    manifest = convertWeights(modelDir, config, tmp, id);
    fs.writeFileSync(path.join(tmp, MANIFEST), JSON.stringify(manifest, null, 1) + '\n');
    install(tmp, dir, id.key);
  } catch (e) {
    fs.rmSync(tmp, { recursive: true, force: true });
    throw e;
  }
  return {
    dir,
    manifest: readManifest(dir),
    table: { location: manifest.dataFile, tensors: manifest.tensors },
    built: true,
    ...(rebuiltBecause ? { rebuiltBecause } : {}),
  };
}

/** Moves a complete build into place; a broken folder there is replaced, a valid one (another process's) kept. */
function install(tmp: string, dir: string, key: string): void {
  if (fs.existsSync(dir)) {
    if (!checkCache(dir, key)) {
      fs.rmSync(tmp, { recursive: true, force: true });
      return;
    }
    // Renamed aside first, so that the folder is never half removed under its real name.
    const aside = `${dir}.stale-${process.pid}-${Date.now()}`;
    try {
      fs.renameSync(dir, aside);
    } catch (e) {
      throw new WeightCacheError(`${dir}: cannot move the broken cache aside (${(e as Error).message}); remove it by hand`);
    }
    fs.rmSync(aside, { recursive: true, force: true });
  }
  try {
    fs.renameSync(tmp, dir);
  } catch (e) {
    // Another process may have installed the same key in between.
    if (fs.existsSync(dir) && !checkCache(dir, key)) {
      fs.rmSync(tmp, { recursive: true, force: true });
      return;
    }
    throw new WeightCacheError(`${dir}: cannot install the converted weights (${(e as Error).message})`);
  }
}

function readManifest(dir: string): WeightManifest {
  return JSON.parse(fs.readFileSync(path.join(dir, MANIFEST), 'utf8')) as WeightManifest;
}

/** What is wrong with a cache folder (naming the file), or null when it is usable. */
export function checkCache(dir: string, key: string): string | null {
  const file = path.join(dir, MANIFEST);
  if (!fs.existsSync(file)) return `${file} is missing`;
  let m: WeightManifest;
  try {
    m = readManifest(dir);
  } catch (e) {
    return `${file} is not valid JSON (${(e as Error).message})`;
  }
  if (m.format !== FORMAT) return `${file}: format is ${JSON.stringify(m.format)}, expected "${FORMAT}"`;
  if (m.graphFormat !== GRAPH_FORMAT_VERSION) return `${file}: graph format ${m.graphFormat}, expected ${GRAPH_FORMAT_VERSION}`;
  if (m.key !== key) return `${file}: key ${m.key}, expected ${key}`;
  if (typeof m.dataFile !== 'string' || !m.tensors || typeof m.dataBytes !== 'number')
    return `${file}: missing dataFile, dataBytes or tensors`;
  const data = path.join(dir, m.dataFile);
  if (!fs.existsSync(data)) return `${data} is missing`;
  const size = fs.statSync(data).size;
  if (size !== m.dataBytes) return `${data} has ${size} bytes, the manifest records ${m.dataBytes} (truncated?)`;
  for (const [name, t] of Object.entries(m.tensors)) {
    const want = t.dims.reduce((a, b) => a * b, 1) * 4;
    if (t.length !== want || t.offset + t.length > m.dataBytes)
      return `${file}: tensor '${name}' [${t.dims}] at ${t.offset}+${t.length} does not fit ${m.dataBytes} bytes`;
  }
  if (sampleHash(data, size) !== m.dataSample) return `${data}: contents differ from the manifest's sample hash`;
  return null;
}

function sampleHash(file: string, size: number): string {
  const h = crypto.createHash('sha256');
  const chunk = Buffer.alloc(64 * 1024);
  const fd = fs.openSync(file, 'r');
  try {
    const n = Math.min(16, Math.ceil(size / chunk.length));
    for (let i = 0; i < n; i++) {
      const at = n === 1 ? 0 : Math.floor((i * Math.max(0, size - chunk.length)) / (n - 1));
      const got = fs.readSync(fd, chunk, 0, Math.min(chunk.length, size), at);
      h.update(chunk.subarray(0, got));
    }
  } finally {
    fs.closeSync(fd);
  }
  return h.digest('hex');
}

/** Streams the checkpoint tensor by tensor into `<dir>/weights.bin`; returns the manifest. */
function convertWeights(
  modelDir: string,
  c: ModelConfig,
  dir: string,
  id: { key: string; weights: string; config: string },
): WeightManifest {
  const ckpt = new SafetensorsFolder(modelDir);
  const need = requiredWeights(c, ckpt.has('lm_head.weight'));
  const dataPath = path.join(dir, DATA_FILE);
  const fd = fs.openSync(dataPath, 'w');
  const tensors: Record<string, StoredWeight> = {};
  let offset = 0;
  try {
    for (const [name, shape] of need) {
      if (!ckpt.has(name))
        throw new WeightCacheError(`${modelDir}: missing tensor '${name}' (expected shape [${shape}]) for ${c.architecture}`);
      const t = ckpt.read(name);
      if (!(t.data instanceof Float32Array))
        throw new WeightCacheError(`${modelDir}: tensor '${name}' has dtype ${t.dtype}; expected a float type (F32, F16 or BF16)`);
      if (t.shape.length !== shape.length || t.shape.some((d, i) => d !== shape[i])) {
        throw new WeightCacheError(`${modelDir}: tensor '${name}' has shape [${t.shape}], expected [${shape}] from config.json`);
      }
      const transpose = storedLayout(name) === 'transpose';
      const data = transpose ? transpose2d(t.data, shape[0], shape[1]) : t.data;
      const pad = (ALIGN - (offset % ALIGN)) % ALIGN;
      if (pad) writeAll(fd, Buffer.alloc(pad), dataPath);
      offset += pad;
      writeAll(fd, Buffer.from(data.buffer, data.byteOffset, data.byteLength), dataPath);
      tensors[name] = { dims: transpose ? [shape[1], shape[0]] : [...shape], offset, length: data.byteLength };
      offset += data.byteLength;
    }
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  return {
    format: FORMAT,
    graphFormat: GRAPH_FORMAT_VERSION,
    key: id.key,
    weightsSha256: id.weights,
    configSha256: id.config,
    source: path.resolve(modelDir),
    dataFile: DATA_FILE,
    dataBytes: offset,
    dataSample: sampleHash(dataPath, offset),
    tensors,
  };
}

function writeAll(fd: number, buf: Buffer, file: string): void {
  let done = 0;
  while (done < buf.length) {
    const n = fs.writeSync(fd, buf, done, buf.length - done);
    if (n <= 0) throw new WeightCacheError(`${file}: write failed after ${done} of ${buf.length} bytes`);
    done += n;
  }
}

/** [rows, cols] -> [cols, rows], in tiles so that both sides stay in cache. */
export function transpose2d(a: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(a.length);
  const B = 32;
  for (let r0 = 0; r0 < rows; r0 += B) {
    const r1 = Math.min(rows, r0 + B);
    for (let c0 = 0; c0 < cols; c0 += B) {
      const c1 = Math.min(cols, c0 + B);
      for (let r = r0; r < r1; r++) {
        const src = r * cols;
        for (let j = c0; j < c1; j++) out[j * rows + r] = a[src + j];
      }
    }
  }
  return out;
}

/** One stored tensor read back from the data file (the embedding table, for embeddings()). */
export function readStored(cache: { dir: string; manifest: WeightManifest }, name: string): Float32Array {
  const t = cache.manifest.tensors[name];
  if (!t) throw new WeightCacheError(`${path.join(cache.dir, MANIFEST)}: no tensor '${name}'`);
  const out = new Float32Array(t.length / 4);
  const bytes = new Uint8Array(out.buffer);
  const file = path.join(cache.dir, cache.manifest.dataFile);
  const fd = fs.openSync(file, 'r');
  try {
    let got = 0;
    while (got < bytes.length) {
      const n = fs.readSync(fd, bytes, got, bytes.length - got, t.offset + got);
      if (n === 0) throw new WeightCacheError(`${file}: tensor '${name}': read ${got} of ${bytes.length} bytes (truncated?)`);
      got += n;
    }
  } finally {
    fs.closeSync(fd);
  }
  return out;
}
