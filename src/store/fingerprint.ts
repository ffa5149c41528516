// Fingerprints that tie a hidden-state store (and the draft-vocabulary and regeneration caches) to the exact
// target, tokenizer and data they came from.
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';

function sha256Files(files: string[]): string {
  const h = crypto.createHash('sha256');
  for (const f of files) {
    h.update(path.basename(f) + '\0');
    h.update(fs.readFileSync(f));
  }
  return h.digest('hex');
}

export function configSha256(modelDir: string): string {
  return sha256Files([path.join(modelDir, 'config.json')]);
}

export function tokenizerSha256(modelDir: string): string {
  return sha256Files(['tokenizer.json', 'tokenizer_config.json'].map((f) => path.join(modelDir, f)).filter((f) => fs.existsSync(f)));
}

/**
 * Weights fingerprint: every safetensors file's size, its header, and 16 evenly spaced 64 KiB samples
 * of its data. Hashing a 16 GB checkpoint whole would cost a minute at every start; a fine-tune changes
 * values everywhere, so the samples catch it while different shapes change the header.
 */
export function weightsSha256(modelDir: string): string {
  const files = fs
    .readdirSync(modelDir)
    .filter((f) => f.endsWith('.safetensors') || f === 'model.safetensors.index.json')
    .sort()
    .map((f) => path.join(modelDir, f));
  if (files.length === 0) throw new Error(`${modelDir}: no safetensors files to fingerprint`);
  const h = crypto.createHash('sha256');
  const chunk = Buffer.alloc(64 * 1024);
  for (const f of files) {
    const size = fs.statSync(f).size;
    h.update(`${path.basename(f)}\0${size}\0`);
    const fd = fs.openSync(f, 'r');
    try {
      const samples = size <= 16 * chunk.length ? [0] : Array.from({ length: 16 }, (_, i) => Math.floor((i * (size - chunk.length)) / 15));
      for (const at of samples) {
        const n = fs.readSync(fd, chunk, 0, Math.min(chunk.length, size), at);
        h.update(chunk.subarray(0, n));
      }
      if (size <= 16 * chunk.length && size > chunk.length) {
        // Small files: hash them whole.
        h.update(fs.readFileSync(f));
      }
    } finally {
      fs.closeSync(fd);
    }
  }
  return h.digest('hex');
}

function hashFile(h: crypto.Hash, f: string): void {
  let fd: number;
  try {
    fd = fs.openSync(f, 'r');
  } catch (e) {
    throw new Error(`${f}: cannot read data file (${(e as Error).message})`);
  }
  const buf = Buffer.alloc(1 << 20);
  try {
    let n: number;
    while ((n = fs.readSync(fd, buf, 0, buf.length, null)) > 0) h.update(buf.subarray(0, n));
  } finally {
    fs.closeSync(fd);
  }
}

/** sha256 of data files' paths and contents (they are read once anyway; a changed line changes the draft vocabulary). */
export function dataSha256(files: string[]): string {
  const h = crypto.createHash('sha256');
  for (const f of files) {
    h.update(path.resolve(f) + '\0');
    hashFile(h, f);
  }
  return h.digest('hex');
}

/**
 * sha256 of data files' contents alone, in order, each after its byte count (so where one file ends
 * counts): what a store records of its data, which stays valid when the data is moved or renamed.
 */
export function contentSha256(files: string[]): string {
  const h = crypto.createHash('sha256');
  for (const f of files) {
    let size: number;
    try {
      size = fs.statSync(f).size;
    } catch (e) {
      throw new Error(`${f}: cannot read data file (${(e as Error).message})`);
    }
    h.update(`${size}\0`);
    hashFile(h, f);
  }
  return h.digest('hex');
}
