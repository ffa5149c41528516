// Safetensors reading/writing, the 16-bit float conversions, corruption handling, atomic writes and
// sharded checkpoints. Expected values come from references written here, not from src/.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { bitsF32, prng, refBf16, refF16, removeTempDirs, tempDir } from './helpers.ts';
import { bf16ToF32, f16ToF32, f32ToBf16, f32ToF16 } from '../src/io/dtypes.ts';
import { SafetensorsFolder, SafetensorsError, SafetensorsFile, writeSafetensorsFolder, writeSafetensors } from '../src/io/safetensors.ts';
import type { TensorToWrite } from '../src/io/safetensors.ts';

const tmpDir = () => tempDir('sf-');
after(removeTempDirs);

/** Float32 values spread over many binades (including f16 subnormals and overflow), both signs. */
function randomF32(n: number, seed: number, minExp: number, maxExp: number): Float32Array {
  const r = prng(seed);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const sign = r() < 0.5 ? -1 : 1;
    out[i] = sign * (1 + r()) * 2 ** Math.floor(minExp + r() * (maxExp - minExp));
  }
  return out;
}

function halfUlpF16(x: number): number {
  const a = Math.abs(x);
  const e = Math.max(Math.floor(Math.log2(a)), -14);
  return 2 ** (e - 10) / 2;
}
function halfUlpBf16(x: number): number {
  const a = Math.abs(x);
  const e = Math.max(Math.floor(Math.log2(a)), -126);
  return 2 ** (e - 7) / 2;
}

function isF16NaN(h: number): boolean {
  return (h & 0x7c00) === 0x7c00 && (h & 0x3ff) !== 0;
}
function isBf16NaN(h: number): boolean {
  return (h & 0x7f80) === 0x7f80 && (h & 0x7f) !== 0;
}

function expectSfError(fn: () => unknown, ...parts: string[]): SafetensorsError {
  let caught: unknown;
  try {
    fn();
  } catch (e) {
    caught = e;
  }
  assert.ok(caught instanceof SafetensorsError, `expected a SafetensorsError, got ${caught === undefined ? 'no error' : String(caught)}`);
  for (const p of parts)
    assert.ok(caught.message.includes(p), `message ${JSON.stringify(caught.message)} should contain ${JSON.stringify(p)}`);
  return caught;
}

/** Writes `u64 header length + header + data` (header as an object or raw text). */
function writeRaw(file: string, header: unknown, data: Buffer = Buffer.alloc(0), headerLen?: bigint): string {
  const json = Buffer.from(typeof header === 'string' ? header : JSON.stringify(header), 'utf8');
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(headerLen ?? BigInt(json.length));
  fs.writeFileSync(file, Buffer.concat([len, json, data]));
  return file;
}

/** Minimal independent parse: header length, header JSON and the data start. */
function rawParse(file: string): { buf: Buffer; header: Record<string, any>; dataStart: number } {
  const buf = fs.readFileSync(file);
  const n = Number(buf.readBigUInt64LE(0));
  const header = JSON.parse(buf.subarray(8, 8 + n).toString('utf8'));
  return { buf, header, dataStart: 8 + n };
}

describe('dtype conversions (dtypes.ts)', () => {
  test('f32ToF16 on known bit patterns', () => {
    const cases: [number, number][] = [
      [0, 0x0000],
      [1.0, 0x3c00],
      [-2.0, 0xc000],
      [0.5, 0x3800],
      [65504, 0x7bff],
      [65519, 0x7bff], // below the tie point to infinity
      [65520, 0x7c00], // tie between 65504 and 2^16: rounds to even -> infinity
      [70000, 0x7c00],
      [-70000, 0xfc00],
      [Infinity, 0x7c00],
      [-Infinity, 0xfc00],
      [1e-8, 0x0000], // underflow
      [-1e-8, 0x8000], // underflow keeps the sign
      [6.0e-5, 0x03ef], // subnormal: round(6e-5 / 2^-24) = 1007
      [5.96e-8, 0x0001], // smallest subnormal 2^-24 = 5.96046e-8
      [2 ** -24, 0x0001],
      [2 ** -25, 0x0000], // tie between 0 and 2^-24: even is 0
      [1.5 * 2 ** -25, 0x0001],
      [2 ** -14, 0x0400], // smallest normal
      [1023 * 2 ** -24, 0x03ff], // largest subnormal
      [1023.5 * 2 ** -24, 0x0400], // tie, 1023 odd -> carries into the smallest normal
      [1 + 2 ** -11, 0x3c00], // tie -> even (down)
      [1 + 3 * 2 ** -11, 0x3c02], // tie -> even (up)
      [1 + 2 ** -10, 0x3c01],
      [2047.5 * 2 ** -10, 0x4000], // 1.999.. tie with odd mantissa carries into the exponent
    ];
    for (const [x, bits] of cases) {
      assert.equal(f32ToF16(x), bits, `f32ToF16(${x}) = 0x${f32ToF16(x).toString(16)}, expected 0x${bits.toString(16)}`);
    }
    assert.equal(f32ToF16(-0), 0x8000);
    assert.ok(isF16NaN(f32ToF16(NaN)), 'NaN stays NaN');
    assert.ok(isF16NaN(f32ToF16(bitsF32(0x7f800001))), 'NaN with a low payload stays NaN');
    assert.ok(isF16NaN(f32ToF16(bitsF32(0xffc00000))), 'negative NaN stays NaN');
  });

  test('f16ToF32 on known bit patterns', () => {
    const cases: [number, number][] = [
      [0x3c00, 1],
      [0xc000, -2],
      [0x7bff, 65504],
      [0x7c00, Infinity],
      [0xfc00, -Infinity],
      [0x0001, 2 ** -24],
      [0x03ff, 1023 * 2 ** -24],
      [0x03ef, 1007 * 2 ** -24],
      [0x0400, 2 ** -14],
      [0x3c01, 1 + 2 ** -10],
      [0x3555, 0.333251953125],
    ];
    for (const [bits, x] of cases) assert.equal(f16ToF32(bits), x, `f16ToF32(0x${bits.toString(16)})`);
    assert.ok(Object.is(f16ToF32(0x8000), -0));
    assert.ok(Object.is(f16ToF32(0x0000), 0));
    assert.ok(Number.isNaN(f16ToF32(0x7e00)));
    assert.ok(Number.isNaN(f16ToF32(0x7c01)));
    assert.ok(Number.isNaN(f16ToF32(0xfe00)));
  });

  test('f16: every finite half round-trips through f16ToF32 -> f32ToF16', () => {
    for (let h = 0; h < 0x10000; h++) {
      if ((h & 0x7c00) === 0x7c00 && (h & 0x3ff) !== 0) continue; // NaNs
      assert.equal(f32ToF16(f16ToF32(h)), h, `0x${h.toString(16)}`);
    }
  });

  test('f32ToF16 matches the rounding reference on random float32 values', () => {
    const xs = randomF32(20000, 11, -27, 17);
    for (const x of xs) {
      const got = f16ToF32(f32ToF16(x));
      const want = refF16(x);
      assert.equal(got, want, `x=${x}`);
      if (Number.isFinite(want)) assert.ok(Math.abs(got - x) <= halfUlpF16(x), `x=${x} error ${Math.abs(got - x)}`);
    }
  });

  test('f32ToBf16 / bf16ToF32 on known bit patterns', () => {
    const cases: [number, number][] = [
      [0, 0x0000],
      [1.0, 0x3f80],
      [-2.0, 0xc000],
      [0.5, 0x3f00],
      [Infinity, 0x7f80],
      [-Infinity, 0xff80],
      [1 + 2 ** -8, 0x3f80], // tie -> even (down)
      [1 + 3 * 2 ** -8, 0x3f82], // tie -> even (up)
      [1 + 2 ** -7, 0x3f81],
      [bitsF32(0x7f7fffff), 0x7f80], // float32 max rounds to infinity
      [bitsF32(0x00000001), 0x0000], // smallest f32 subnormal rounds to 0
      [bitsF32(0x00008000), 0x0000], // tie to even 0
      [bitsF32(0x00018000), 0x0002], // tie with odd low bit rounds up
    ];
    for (const [x, bits] of cases) {
      assert.equal(f32ToBf16(x), bits, `f32ToBf16(${x}) = 0x${f32ToBf16(x).toString(16)}, expected 0x${bits.toString(16)}`);
    }
    assert.equal(f32ToBf16(-0), 0x8000);
    assert.ok(isBf16NaN(f32ToBf16(NaN)));
    assert.ok(isBf16NaN(f32ToBf16(bitsF32(0x7f800001))), 'NaN with only low payload bits must not become infinity');
    assert.ok(isBf16NaN(f32ToBf16(bitsF32(0xff800001))));

    assert.equal(bf16ToF32(0x3f80), 1);
    assert.equal(bf16ToF32(0xc000), -2);
    assert.equal(bf16ToF32(0x7f80), Infinity);
    assert.equal(bf16ToF32(0xff80), -Infinity);
    assert.equal(bf16ToF32(0x0001), 2 ** -133);
    assert.equal(bf16ToF32(0x7f7f), bitsF32(0x7f7f0000));
    assert.ok(Object.is(bf16ToF32(0x8000), -0));
    assert.ok(Number.isNaN(bf16ToF32(0x7fc0)));
  });

  test('f32ToBf16 matches the bit-pattern rounding reference on random values', () => {
    const xs = randomF32(20000, 12, -130, 127);
    for (const x of xs) {
      const got = bf16ToF32(f32ToBf16(x));
      const want = refBf16(x);
      assert.equal(got, want, `x=${x}`);
      if (Number.isFinite(want)) assert.ok(Math.abs(got - x) <= halfUlpBf16(x), `x=${x}`);
    }
  });
});

describe('safetensors round trip', () => {
  test('every dtype, including a scalar [] and an empty [0] tensor', () => {
    const dir = tmpDir();
    const file = path.join(dir, 'all.safetensors');
    const f32 = randomF32(24, 1, -10, 10);
    const exactF16 = new Float32Array([0, 1, -2, 0.5, 65504, -65504, 2 ** -24, 2 ** -14, 1 + 2 ** -10, 1023 * 2 ** -24, 3.25, -0.125]);
    const exactBf16 = new Float32Array([
      0,
      1,
      -2,
      0.5,
      2 ** 100,
      -(2 ** -100),
      1 + 2 ** -7,
      3.25,
      bitsF32(0x7f7f0000),
      255,
      -0.125,
      2 ** -133,
    ]);
    const randF16 = randomF32(60, 2, -26, 16);
    const randBf16 = randomF32(60, 3, -130, 126);
    const i64 = new BigInt64Array([0n, 1n, -1n, 2n ** 63n - 1n, -(2n ** 63n), 123456789012345n]);
    const i32 = new Int32Array([0, 1, -1, 2 ** 31 - 1, -(2 ** 31), 42]);
    const tensors: Record<string, TensorToWrite> = {
      f32: { dtype: 'F32', shape: [2, 3, 4], data: f32 },
      f32_scalar: { dtype: 'F32', shape: [], data: new Float32Array([3.5]) },
      f32_empty: { dtype: 'F32', shape: [0], data: new Float32Array(0) },
      f32_empty2d: { dtype: 'F32', shape: [3, 0], data: new Float32Array(0) },
      f16_exact: { dtype: 'F16', shape: [3, 4], data: exactF16 },
      f16_rand: { dtype: 'F16', shape: [60], data: randF16 },
      f16_scalar: { dtype: 'F16', shape: [], data: [1.5] },
      f16_empty: { dtype: 'F16', shape: [0], data: [] },
      bf16_exact: { dtype: 'BF16', shape: [4, 3], data: exactBf16 },
      bf16_rand: { dtype: 'BF16', shape: [6, 10], data: randBf16 },
      bf16_scalar: { dtype: 'BF16', shape: [], data: [-7] },
      bf16_empty: { dtype: 'BF16', shape: [0], data: new Float32Array(0) },
      i64: { dtype: 'I64', shape: [2, 3], data: i64 },
      i64_from_numbers: { dtype: 'I64', shape: [3], data: [5, -6, 2 ** 40] },
      i64_scalar: { dtype: 'I64', shape: [], data: new BigInt64Array([-9n]) },
      i64_empty: { dtype: 'I64', shape: [0], data: new BigInt64Array(0) },
      i32: { dtype: 'I32', shape: [6], data: i32 },
      i32_scalar: { dtype: 'I32', shape: [], data: [7] },
      i32_empty: { dtype: 'I32', shape: [0, 2], data: new Int32Array(0) },
      bool: { dtype: 'BOOL', shape: [5], data: new Uint8Array([1, 0, 1, 1, 0]) },
      bool_nonzero: { dtype: 'BOOL', shape: [3], data: [0, 7, 255] },
      bool_scalar: { dtype: 'BOOL', shape: [], data: new Uint8Array([1]) },
      bool_empty: { dtype: 'BOOL', shape: [0], data: new Uint8Array(0) },
    };
    writeSafetensors(file, tensors);
    const f = new SafetensorsFile(file);
    assert.deepEqual(f.names().sort(), Object.keys(tensors).sort());
    for (const [name, t] of Object.entries(tensors)) {
      assert.deepEqual(f.info(name), { dtype: t.dtype, shape: t.shape }, name);
      const r = f.read(name);
      assert.equal(r.dtype, t.dtype, name);
      assert.deepEqual(r.shape, t.shape, name);
      assert.equal(
        r.data.length,
        t.shape.reduce((a, b) => a * b, 1),
        name,
      );
    }
    const read = (n: string) => f.read(n).data;
    // F32 exact.
    assert.ok(read('f32') instanceof Float32Array);
    assert.deepEqual(read('f32'), f32);
    assert.deepEqual(read('f32_scalar'), new Float32Array([3.5]));
    assert.deepEqual(read('f32_empty'), new Float32Array(0));
    assert.deepEqual(read('f32_empty2d'), new Float32Array(0));
    // F16/BF16: exactly representable values survive exactly; others match the reference rounding.
    assert.ok(read('f16_exact') instanceof Float32Array);
    assert.deepEqual(read('f16_exact'), exactF16);
    assert.deepEqual(read('bf16_exact'), exactBf16);
    assert.deepEqual(read('f16_scalar'), new Float32Array([1.5]));
    assert.deepEqual(read('bf16_scalar'), new Float32Array([-7]));
    assert.deepEqual(read('f16_empty'), new Float32Array(0));
    assert.deepEqual(read('bf16_empty'), new Float32Array(0));
    const gotF16 = read('f16_rand') as Float32Array;
    randF16.forEach((x, i) => {
      assert.equal(gotF16[i], refF16(x), `f16 x=${x}`);
      if (Math.abs(x) <= 65504) assert.ok(Math.abs(gotF16[i] - x) <= halfUlpF16(x), `f16 x=${x}`);
    });
    const gotBf16 = read('bf16_rand') as Float32Array;
    randBf16.forEach((x, i) => {
      assert.equal(gotBf16[i], refBf16(x), `bf16 x=${x}`);
      assert.ok(Math.abs(gotBf16[i] - x) <= halfUlpBf16(x), `bf16 x=${x}`);
    });
    // Integers and bools keep their width.
    assert.ok(read('i64') instanceof BigInt64Array);
    assert.deepEqual(read('i64'), i64);
    assert.deepEqual(read('i64_from_numbers'), new BigInt64Array([5n, -6n, 2n ** 40n]));
    assert.deepEqual(read('i64_scalar'), new BigInt64Array([-9n]));
    assert.deepEqual(read('i64_empty'), new BigInt64Array(0));
    assert.ok(read('i32') instanceof Int32Array);
    assert.deepEqual(read('i32'), i32);
    assert.deepEqual(read('i32_scalar'), new Int32Array([7]));
    assert.deepEqual(read('i32_empty'), new Int32Array(0));
    assert.ok(read('bool') instanceof Uint8Array);
    assert.deepEqual(read('bool'), new Uint8Array([1, 0, 1, 1, 0]));
    assert.deepEqual(read('bool_nonzero'), new Uint8Array([0, 1, 1]));
    assert.deepEqual(read('bool_scalar'), new Uint8Array([1]));
    assert.deepEqual(read('bool_empty'), new Uint8Array(0));
    // readAll agrees with read.
    const all = f.readAll();
    assert.equal(all.size, Object.keys(tensors).length);
    assert.deepEqual(all.get('i64')!.data, i64);
    // Unknown names are an error naming the file and tensor.
    expectSfError(() => f.read('nope'), file, 'nope');
  });

  test('a Map of tensors and the file stays readable', () => {
    const dir = tmpDir();
    const file = path.join(dir, 'm.safetensors');
    writeSafetensors(file, new Map<string, TensorToWrite>([['w', { dtype: 'F32', shape: [2], data: [1, 2] }]]));
    assert.deepEqual(new SafetensorsFile(file).read('w').data, new Float32Array([1, 2]));
  });

  test('F16 special values through a file', () => {
    const dir = tmpDir();
    const file = path.join(dir, 'f16.safetensors');
    const xs = [1, -2, 65504, 1e-8, 6.0e-5, 5.96e-8, 70000, NaN, 1 + 2 ** -11, 1 + 3 * 2 ** -11];
    const bits = [0x3c00, 0xc000, 0x7bff, 0x0000, 0x03ef, 0x0001, 0x7c00, -1, 0x3c00, 0x3c02];
    writeSafetensors(file, { h: { dtype: 'F16', shape: [xs.length], data: xs } });
    // Independent check of the stored bits.
    const { buf, header, dataStart } = rawParse(file);
    const [begin] = header.h.data_offsets as number[];
    bits.forEach((b, i) => {
      const stored = buf.readUInt16LE(dataStart + begin + 2 * i);
      if (b < 0) assert.ok(isF16NaN(stored), `NaN stored as 0x${stored.toString(16)}`);
      else assert.equal(stored, b, `x=${xs[i]}: stored 0x${stored.toString(16)}`);
    });
    const got = new SafetensorsFile(file).read('h').data as Float32Array;
    bits.forEach((b, i) => {
      if (b < 0) assert.ok(Number.isNaN(got[i]));
      else assert.equal(got[i], f16ToF32(b));
    });
    assert.equal(got[6], Infinity);
  });

  test('BF16 stored bits match the reference rounding', () => {
    const dir = tmpDir();
    const file = path.join(dir, 'bf16.safetensors');
    const xs = randomF32(64, 5, -40, 40);
    writeSafetensors(file, { b: { dtype: 'BF16', shape: [8, 8], data: xs } });
    const { buf, header, dataStart } = rawParse(file);
    const [begin] = header.b.data_offsets as number[];
    xs.forEach((x, i) => {
      const stored = buf.readUInt16LE(dataStart + begin + 2 * i);
      assert.equal(bitsF32(stored << 16), refBf16(x), `x=${x}`);
    });
  });

  test('I64 data given as a subarray view writes only the view', () => {
    const dir = tmpDir();
    const file = path.join(dir, 'view.safetensors');
    const view = new BigInt64Array([1n, 2n, 3n, 4n]).subarray(1, 3);
    writeSafetensors(file, { ids: { dtype: 'I64', shape: [2], data: view } });
    assert.deepEqual(new SafetensorsFile(file).read('ids').data, new BigInt64Array([2n, 3n]));
  });

  test('subarray views of the other dtypes write only the view', () => {
    const dir = tmpDir();
    const file = path.join(dir, 'views.safetensors');
    writeSafetensors(file, {
      f: { dtype: 'F32', shape: [2], data: new Float32Array([1, 2, 3, 4]).subarray(1, 3) },
      h: { dtype: 'F16', shape: [2], data: new Float32Array([1, 2, 3, 4]).subarray(2, 4) },
      i: { dtype: 'I32', shape: [2], data: new Int32Array([1, 2, 3, 4]).subarray(0, 2) },
      b: { dtype: 'BOOL', shape: [2], data: new Uint8Array([0, 1, 0, 1]).subarray(1, 3) },
    });
    const f = new SafetensorsFile(file);
    assert.deepEqual(f.read('f').data, new Float32Array([2, 3]));
    assert.deepEqual(f.read('h').data, new Float32Array([3, 4]));
    assert.deepEqual(f.read('i').data, new Int32Array([1, 2]));
    assert.deepEqual(f.read('b').data, new Uint8Array([1, 0]));
  });
});

describe('safetensors file layout', () => {
  test('8-byte aligned data, __metadata__, and an independent parse agree', () => {
    const dir = tmpDir();
    // Header lengths vary with the names: try several so that every padding amount is exercised.
    for (let k = 0; k < 9; k++) {
      const file = path.join(dir, `layout${k}.safetensors`);
      const name = 'x'.repeat(k + 1);
      const tensors: Record<string, TensorToWrite> = {
        [`${name}.b`]: { dtype: 'F32', shape: [2, 3], data: [1, 2, 3, 4, 5, 6] },
        [`${name}.a`]: { dtype: 'I64', shape: [3], data: new BigInt64Array([7n, -8n, 9n]) },
        [`${name}.c`]: { dtype: 'BF16', shape: [], data: [0.5] },
        [`${name}.d`]: { dtype: 'BOOL', shape: [0], data: [] },
      };
      const metadata = { format: 'pt', note: `k=${k} ünïcødé` };
      writeSafetensors(file, tensors, metadata);
      const { buf, header, dataStart } = rawParse(file);
      assert.equal(dataStart % 8, 0, `data start ${dataStart} not 8-byte aligned`);
      assert.deepEqual(header.__metadata__, metadata);
      // Offsets: contiguous from 0, covering the whole data buffer, shapes and dtypes as given.
      const entries = Object.entries(header).filter(([n]) => n !== '__metadata__') as [string, any][];
      assert.equal(entries.length, 4);
      entries.sort((a, b) => a[1].data_offsets[0] - b[1].data_offsets[0] || a[1].data_offsets[1] - b[1].data_offsets[1]);
      let pos = 0;
      const width = { F32: 4, I64: 8, BF16: 2, BOOL: 1 } as Record<string, number>;
      for (const [n, e] of entries) {
        assert.equal(e.dtype, tensors[n].dtype);
        assert.deepEqual(e.shape, tensors[n].shape);
        assert.equal(e.data_offsets[0], pos, `${n} starts at ${e.data_offsets[0]}, expected ${pos}`);
        const bytes = e.shape.reduce((a: number, b: number) => a * b, 1) * width[e.dtype];
        assert.equal(e.data_offsets[1] - e.data_offsets[0], bytes);
        pos = e.data_offsets[1];
      }
      assert.equal(pos, buf.length - dataStart, 'data buffer fully used');
      // Spot-check raw bytes.
      const b0 = header[`${name}.b`].data_offsets[0];
      assert.deepEqual(
        [0, 1, 2, 3, 4, 5].map((i) => buf.readFloatLE(dataStart + b0 + 4 * i)),
        [1, 2, 3, 4, 5, 6],
      );
      const a0 = header[`${name}.a`].data_offsets[0];
      assert.deepEqual(
        [0, 1, 2].map((i) => buf.readBigInt64LE(dataStart + a0 + 8 * i)),
        [7n, -8n, 9n],
      );
      assert.equal(buf.readUInt16LE(dataStart + header[`${name}.c`].data_offsets[0]), 0x3f00);
      // And the reader agrees.
      const f = new SafetensorsFile(file);
      assert.deepEqual(f.metadata, metadata);
      assert.ok(!f.names().includes('__metadata__'));
      assert.deepEqual(f.read(`${name}.b`).data, new Float32Array([1, 2, 3, 4, 5, 6]));
    }
  });

  test('no metadata: none in the header, {} when read', () => {
    const dir = tmpDir();
    const file = path.join(dir, 'nometa.safetensors');
    writeSafetensors(file, { t: { dtype: 'F32', shape: [1], data: [1] } });
    assert.equal(rawParse(file).header.__metadata__, undefined);
    assert.deepEqual(new SafetensorsFile(file).metadata, {});
  });

  test('reads a hand-made file with unaligned header, gaps and out-of-order offsets', () => {
    const dir = tmpDir();
    const data = Buffer.alloc(24);
    data.writeFloatLE(1.25, 12);
    data.writeFloatLE(-3, 16);
    data.writeInt32LE(-77, 0);
    const file = writeRaw(
      path.join(dir, 'hand.safetensors'),
      {
        f: { dtype: 'F32', shape: [2], data_offsets: [12, 20] },
        i: { dtype: 'I32', shape: [1, 1], data_offsets: [0, 4] },
      },
      data,
    );
    const f = new SafetensorsFile(file);
    assert.deepEqual(f.read('f').data, new Float32Array([1.25, -3]));
    assert.deepEqual(f.read('i').data, new Int32Array([-77]));
  });
});

describe('safetensors corruption', () => {
  test('a file shorter than 8 bytes', () => {
    const dir = tmpDir();
    const file = path.join(dir, 'short.safetensors');
    fs.writeFileSync(file, Buffer.from([1, 2, 3, 4, 5]));
    expectSfError(() => new SafetensorsFile(file), file);
    const empty = path.join(dir, 'empty.safetensors');
    fs.writeFileSync(empty, Buffer.alloc(0));
    expectSfError(() => new SafetensorsFile(empty), empty);
  });

  test('a missing file', () => {
    const file = path.join(tmpDir(), 'missing.safetensors');
    expectSfError(() => new SafetensorsFile(file), file);
  });

  test('a header length past the end of the file', () => {
    const dir = tmpDir();
    const file = writeRaw(path.join(dir, 'len.safetensors'), '{}', Buffer.alloc(4), 1000n);
    expectSfError(() => new SafetensorsFile(file), file);
    const huge = writeRaw(path.join(dir, 'huge.safetensors'), '{}', Buffer.alloc(0), 2n ** 64n - 1n);
    expectSfError(() => new SafetensorsFile(huge), huge);
  });

  test('a header that is not JSON', () => {
    const dir = tmpDir();
    const file = writeRaw(path.join(dir, 'json.safetensors'), '{"a": {"dtype": "F32",', Buffer.alloc(8));
    expectSfError(() => new SafetensorsFile(file), file);
    const notObj = writeRaw(path.join(dir, 'arr.safetensors'), '[1, 2]');
    expectSfError(() => new SafetensorsFile(notObj), notObj);
    const nul = writeRaw(path.join(dir, 'null.safetensors'), 'null');
    expectSfError(() => new SafetensorsFile(nul), nul);
  });

  test('a truncated file names the tensor that runs past the end', () => {
    const dir = tmpDir();
    const file = path.join(dir, 'trunc.safetensors');
    writeSafetensors(file, {
      'model.a': { dtype: 'F32', shape: [4], data: [1, 2, 3, 4] },
      'model.b': { dtype: 'F32', shape: [4], data: [1, 2, 3, 4] },
      'model.z_last': { dtype: 'F32', shape: [4], data: [1, 2, 3, 4] },
    });
    const size = fs.statSync(file).size;
    fs.truncateSync(file, size - 3);
    const err = expectSfError(() => new SafetensorsFile(file), file, "'model.z_last'");
    assert.ok(!err.message.includes("'model.a'") && !err.message.includes("'model.b'"), err.message);
  });

  test('overlapping offsets between two tensors', () => {
    const dir = tmpDir();
    const file = writeRaw(
      path.join(dir, 'overlap.safetensors'),
      {
        'layer.alpha': { dtype: 'F32', shape: [4], data_offsets: [0, 16] },
        'layer.beta': { dtype: 'F32', shape: [2], data_offsets: [8, 16] },
      },
      Buffer.alloc(16),
    );
    expectSfError(() => new SafetensorsFile(file), file, 'layer.alpha', 'layer.beta');
    const file2 = writeRaw(
      path.join(dir, 'overlap2.safetensors'),
      {
        'w.first': { dtype: 'I32', shape: [3], data_offsets: [4, 16] },
        'w.second': { dtype: 'I32', shape: [3], data_offsets: [0, 12] },
      },
      Buffer.alloc(16),
    );
    expectSfError(() => new SafetensorsFile(file2), file2, 'w.first', 'w.second');
  });

  test('data_offsets whose byte count does not match dtype * shape', () => {
    const dir = tmpDir();
    const file = writeRaw(
      path.join(dir, 'count.safetensors'),
      {
        'ok.weight': { dtype: 'F32', shape: [2], data_offsets: [0, 8] },
        'bad.weight': { dtype: 'F32', shape: [3], data_offsets: [8, 16] },
      },
      Buffer.alloc(16),
    );
    expectSfError(() => new SafetensorsFile(file), file, 'bad.weight');
    const file2 = writeRaw(
      path.join(dir, 'count2.safetensors'),
      {
        'half.weight': { dtype: 'BF16', shape: [2, 2], data_offsets: [0, 16] },
      },
      Buffer.alloc(16),
    );
    expectSfError(() => new SafetensorsFile(file2), file2, 'half.weight');
  });

  test('malformed shape or data_offsets', () => {
    const dir = tmpDir();
    const cases: [string, unknown][] = [
      ['neg_shape', { dtype: 'F32', shape: [-1], data_offsets: [0, 4] }],
      ['str_shape', { dtype: 'F32', shape: '4', data_offsets: [0, 16] }],
      ['rev_offsets', { dtype: 'F32', shape: [1], data_offsets: [8, 4] }],
      ['one_offset', { dtype: 'F32', shape: [1], data_offsets: [4] }],
      ['no_offsets', { dtype: 'F32', shape: [1] }],
    ];
    for (const [name, entry] of cases) {
      const file = writeRaw(path.join(dir, `${name}.safetensors`), { [name]: entry }, Buffer.alloc(16));
      expectSfError(() => new SafetensorsFile(file), file, name);
    }
  });

  test('an unknown dtype names the dtype and the tensor', () => {
    const dir = tmpDir();
    for (const dtype of ['F8_E4M3', 'U16', 'F64']) {
      const file = writeRaw(
        path.join(dir, `${dtype}.safetensors`),
        {
          'proj.weight': { dtype, shape: [2], data_offsets: [0, 4] },
        },
        Buffer.alloc(8),
      );
      expectSfError(() => new SafetensorsFile(file), file, dtype, 'proj.weight');
    }
  });

  test('an Object.prototype key used as dtype ("constructor") is reported as an unknown dtype', () => {
    const dir = tmpDir();
    const file = writeRaw(
      path.join(dir, 'proto.safetensors'),
      {
        'proj.weight': { dtype: 'constructor', shape: [2], data_offsets: [0, 4] },
      },
      Buffer.alloc(8),
    );
    const err = expectSfError(() => new SafetensorsFile(file), file, 'constructor', 'proj.weight');
    assert.match(err.message, /unknown dtype/);
  });
});

describe('atomic write', () => {
  test('overwriting leaves no temporary files', () => {
    const dir = tmpDir();
    const file = path.join(dir, 'w.safetensors');
    writeSafetensors(file, { a: { dtype: 'F32', shape: [2], data: [1, 2] } });
    writeSafetensors(file, { a: { dtype: 'F32', shape: [3], data: [3, 4, 5] } });
    assert.deepEqual(fs.readdirSync(dir), ['w.safetensors']);
    assert.ok(!fs.readdirSync(dir).some((n) => n.endsWith('.tmp')));
    assert.deepEqual(new SafetensorsFile(file).read('a').data, new Float32Array([3, 4, 5]));
  });

  test('a tensor whose data does not match its shape throws and keeps the old file byte-identical', () => {
    const dir = tmpDir();
    const file = path.join(dir, 'keep.safetensors');
    writeSafetensors(file, { a: { dtype: 'F32', shape: [2], data: [1, 2] } }, { v: '1' });
    const before = fs.readFileSync(file);
    assert.throws(
      () =>
        writeSafetensors(file, {
          a: { dtype: 'F32', shape: [2], data: [9, 9] },
          'bad.tensor': { dtype: 'F32', shape: [2, 2], data: [1, 2, 3] },
        }),
      (e: unknown) => e instanceof SafetensorsError && e.message.includes('bad.tensor'),
    );
    assert.ok(fs.readFileSync(file).equals(before), 'file changed');
    assert.deepEqual(fs.readdirSync(dir), ['keep.safetensors']);
  });

  test('creates missing parent folders', () => {
    const dir = tmpDir();
    const file = path.join(dir, 'x', 'y', 'z.safetensors');
    writeSafetensors(file, { a: { dtype: 'I32', shape: [1], data: [1] } });
    assert.deepEqual(new SafetensorsFile(file).read('a').data, new Int32Array([1]));
  });
});

describe('checkpoints', () => {
  function tensorsForCheckpoint(): Map<string, TensorToWrite> {
    const m = new Map<string, TensorToWrite>();
    for (let l = 0; l < 4; l++) {
      m.set(`model.layers.${l}.mlp.weight`, { dtype: 'F32', shape: [4, 4], data: randomF32(16, 100 + l, -3, 3) });
      m.set(`model.layers.${l}.norm.weight`, { dtype: 'BF16', shape: [4], data: [1, 0.5, -2, 3] });
    }
    m.set('model.embed_tokens.weight', { dtype: 'F16', shape: [8, 4], data: randomF32(32, 7, -4, 4) });
    m.set('lm_head.weight', { dtype: 'F32', shape: [8, 4], data: randomF32(32, 8, -4, 4) });
    m.set('ids', { dtype: 'I64', shape: [3], data: new BigInt64Array([1n, 2n, 3n]) });
    m.set('scalar', { dtype: 'F32', shape: [], data: [42] });
    return m;
  }
  function expected(t: TensorToWrite): Float32Array | BigInt64Array {
    if (t.dtype === 'I64') return t.data as BigInt64Array;
    const src = Float32Array.from(t.data as ArrayLike<number>);
    if (t.dtype === 'F16') return src.map((x) => refF16(x));
    if (t.dtype === 'BF16') return src.map((x) => refBf16(x));
    return src;
  }

  test('sharded write with a small shard limit reads back equal', () => {
    const dir = tmpDir();
    const tensors = tensorsForCheckpoint();
    const written = writeSafetensorsFolder(dir, tensors, 150);
    const files = fs.readdirSync(dir).sort();
    const shards = files.filter((n) => /^model-\d{5}-of-\d{5}\.safetensors$/.test(n));
    assert.ok(shards.length >= 3, `expected several shards, got ${files}`);
    const n = shards.length;
    const pad = (i: number) => String(i).padStart(5, '0');
    assert.deepEqual(
      shards,
      Array.from({ length: n }, (_, i) => `model-${pad(i + 1)}-of-${pad(n)}.safetensors`),
    );
    assert.ok(files.includes('model.safetensors.index.json'));
    assert.ok(!files.includes('model.safetensors'));
    assert.ok(!files.some((f) => f.endsWith('.tmp')));
    assert.deepEqual([...written].map((w) => path.basename(w)).sort(), [...shards, 'model.safetensors.index.json'].sort());
    // Each shard respects the limit unless it holds a single tensor.
    for (const s of shards) {
      const { header, buf, dataStart } = rawParse(path.join(dir, s));
      const names = Object.keys(header).filter((k) => k !== '__metadata__');
      assert.ok(names.length >= 1);
      assert.ok(names.length === 1 || buf.length - dataStart <= 150, `${s}: ${buf.length - dataStart} bytes`);
    }
    // The index maps every tensor to the shard that holds it.
    const index = JSON.parse(fs.readFileSync(path.join(dir, 'model.safetensors.index.json'), 'utf8'));
    assert.deepEqual(Object.keys(index.weight_map).sort(), [...tensors.keys()].sort());
    for (const [name, shard] of Object.entries(index.weight_map as Record<string, string>)) {
      assert.ok(new SafetensorsFile(path.join(dir, shard)).has(name), `${name} not in ${shard}`);
    }
    const ck = new SafetensorsFolder(dir);
    assert.deepEqual(ck.names().sort(), [...tensors.keys()].sort());
    for (const [name, t] of tensors) {
      assert.ok(ck.has(name));
      assert.deepEqual(ck.info(name), { dtype: t.dtype, shape: t.shape });
      const r = ck.read(name);
      assert.deepEqual(r.shape, t.shape, name);
      assert.deepEqual(r.data, expected(t), name);
    }
    assert.ok(!ck.has('nope'));
    expectSfError(() => ck.read('nope'), 'nope');
  });

  test('a large limit writes one model.safetensors', () => {
    const dir = tmpDir();
    const tensors = tensorsForCheckpoint();
    const written = writeSafetensorsFolder(dir, tensors);
    assert.deepEqual(fs.readdirSync(dir), ['model.safetensors']);
    assert.deepEqual(written, [path.join(dir, 'model.safetensors')]);
    const f = new SafetensorsFile(path.join(dir, 'model.safetensors'));
    assert.deepEqual(f.metadata, { format: 'pt' });
    const ck = new SafetensorsFolder(dir);
    for (const [name, t] of tensors) assert.deepEqual(ck.read(name).data, expected(t), name);
  });

  test('rewriting a sharded checkpoint folder as a single file reads the new tensors', () => {
    const dir = tmpDir();
    const v = (x: number) =>
      new Map<string, TensorToWrite>([
        ['a', { dtype: 'F32', shape: [4], data: new Float32Array(4).fill(x) }],
        ['b', { dtype: 'F32', shape: [4], data: new Float32Array(4).fill(x) }],
      ]);
    writeSafetensorsFolder(dir, v(1), 20); // two shards + index
    writeSafetensorsFolder(dir, v(2)); // one model.safetensors
    assert.deepEqual(
      new SafetensorsFolder(dir).read('a').data,
      new Float32Array(4).fill(2),
      'stale shards/index were read instead of the new model.safetensors',
    );
  });

  test('an index that maps a tensor to a shard not holding it', () => {
    const dir = tmpDir();
    const tensors = new Map<string, TensorToWrite>([
      ['first.weight', { dtype: 'F32', shape: [4], data: [1, 2, 3, 4] }],
      ['second.weight', { dtype: 'F32', shape: [4], data: [5, 6, 7, 8] }],
    ]);
    writeSafetensorsFolder(dir, tensors, 16);
    const indexFile = path.join(dir, 'model.safetensors.index.json');
    const index = JSON.parse(fs.readFileSync(indexFile, 'utf8'));
    assert.equal(index.weight_map['first.weight'], 'model-00001-of-00002.safetensors');
    index.weight_map['first.weight'] = 'model-00002-of-00002.safetensors';
    fs.writeFileSync(indexFile, JSON.stringify(index));
    expectSfError(() => new SafetensorsFolder(dir), 'first.weight', 'model-00002-of-00002.safetensors');
  });

  test('an index naming a missing shard, and an index that is not JSON', () => {
    const dir = tmpDir();
    const indexFile = path.join(dir, 'model.safetensors.index.json');
    fs.writeFileSync(indexFile, JSON.stringify({ weight_map: { w: 'model-00001-of-00009.safetensors' } }));
    expectSfError(() => new SafetensorsFolder(dir), 'model-00001-of-00009.safetensors');
    fs.writeFileSync(indexFile, '{ nope');
    expectSfError(() => new SafetensorsFolder(dir), indexFile);
    fs.writeFileSync(indexFile, '{}');
    expectSfError(() => new SafetensorsFolder(dir), indexFile, 'weight_map');
  });

  test('a folder with neither model.safetensors nor an index', () => {
    const dir = tmpDir();
    fs.writeFileSync(path.join(dir, 'config.json'), '{}');
    expectSfError(() => new SafetensorsFolder(dir), dir);
  });
});
