// Hugging Face config.json parsing against the four published configs, parameter counts, EAGLE-3
// default auxiliary layers, llama3 RoPE scaling (against an independent implementation) and errors.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import {
  ConfigError,
  defaultAuxLayers,
  loadModelConfig,
  parameterCount,
  parseModelConfig,
  ropeInverseFrequencies,
  SUPPORTED_ARCHITECTURES,
} from '../src/io/hf-config.ts';
import type { ModelConfig } from '../src/io/hf-config.ts';
import { fixture } from './helpers.ts';

const tmpDirs: string[] = [];
function tmpDir(): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'hfc-'));
  tmpDirs.push(d);
  return d;
}
after(() => {
  for (const d of tmpDirs) fs.rmSync(d, { recursive: true, force: true });
});

function rawConfig(name: string): Record<string, unknown> {
  return JSON.parse(fs.readFileSync(fixture(`hf-configs/${name}`), 'utf8'));
}

/** Reads a fixture the way loadModelConfig does: config.json in a folder. */
function load(name: string): ModelConfig {
  const dir = tmpDir();
  fs.copyFileSync(fixture(`hf-configs/${name}`), path.join(dir, 'config.json'));
  const c = loadModelConfig(dir);
  assert.deepEqual(c, parseModelConfig(rawConfig(name), path.join(dir, 'config.json')));
  return c;
}

function expectConfigError(fn: () => unknown, re: RegExp): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof ConfigError, `expected a ConfigError, got ${String(e)}`);
    assert.match(e.message, re);
    return true;
  });
}

describe('published configs', () => {
  test('Llama-3.1-8B-Instruct', () => {
    const c = load('llama-3.1-8b-instruct.json');
    assert.equal(c.architecture, 'LlamaForCausalLM');
    assert.equal(c.modelType, 'llama');
    assert.equal(c.hiddenSize, 4096);
    assert.equal(c.intermediateSize, 14336);
    assert.equal(c.numLayers, 32);
    assert.equal(c.numHeads, 32);
    assert.equal(c.numKvHeads, 8);
    assert.equal(c.headDim, 128);
    assert.equal(c.vocabSize, 128256);
    assert.equal(c.rmsNormEps, 1e-5);
    assert.equal(c.ropeTheta, 500000);
    assert.equal(c.maxPositionEmbeddings, 131072);
    assert.deepEqual(c.ropeScaling, {
      type: 'llama3',
      factor: 8,
      lowFreqFactor: 1,
      highFreqFactor: 4,
      originalMaxPositionEmbeddings: 8192,
    });
    assert.equal(c.tieWordEmbeddings, false);
    assert.equal(c.qkvBias, false);
    assert.equal(c.oBias, false);
    assert.equal(c.mlpBias, false);
    assert.equal(c.qkNorm, false);
    assert.equal(c.embedScale, 1);
    assert.equal(c.residualScale, 1);
    assert.equal(c.logitDivisor, 1);
    assert.equal(c.bosTokenId, 128000);
    assert.deepEqual(c.eosTokenIds, [128001, 128008, 128009]);
    assert.equal(c.torchDtype, 'bfloat16');
    assert.equal(c.raw.pretraining_tp, 1, 'raw JSON kept');
  });

  test('Qwen2.5-0.5B-Instruct', () => {
    const c = load('qwen2.5-0.5b-instruct.json');
    assert.equal(c.architecture, 'Qwen2ForCausalLM');
    assert.equal(c.modelType, 'qwen2');
    assert.equal(c.hiddenSize, 896);
    assert.equal(c.intermediateSize, 4864);
    assert.equal(c.numLayers, 24);
    assert.equal(c.numHeads, 14);
    assert.equal(c.numKvHeads, 2);
    assert.equal(c.headDim, 64);
    assert.equal(c.vocabSize, 151936);
    assert.equal(c.ropeTheta, 1000000);
    assert.equal(c.ropeScaling, null);
    assert.equal(c.tieWordEmbeddings, true);
    assert.equal(c.qkvBias, true);
    assert.equal(c.oBias, false);
    assert.equal(c.qkNorm, false);
    assert.equal(c.embedScale, 1);
    assert.equal(c.residualScale, 1);
    assert.equal(c.logitDivisor, 1);
    assert.equal(c.bosTokenId, 151643);
    assert.deepEqual(c.eosTokenIds, [151645]);
  });

  test('Qwen3-8B', () => {
    const c = load('qwen3-8b.json');
    assert.equal(c.architecture, 'Qwen3ForCausalLM');
    assert.equal(c.modelType, 'qwen3');
    assert.equal(c.hiddenSize, 4096);
    assert.equal(c.intermediateSize, 12288);
    assert.equal(c.numLayers, 36);
    assert.equal(c.numHeads, 32);
    assert.equal(c.numKvHeads, 8);
    assert.equal(c.headDim, 128);
    assert.equal(c.vocabSize, 151936);
    assert.equal(c.ropeTheta, 1000000);
    assert.equal(c.ropeScaling, null);
    assert.equal(c.maxPositionEmbeddings, 40960);
    assert.equal(c.tieWordEmbeddings, false);
    assert.equal(c.qkvBias, false);
    assert.equal(c.oBias, false);
    assert.equal(c.qkNorm, true);
    assert.equal(c.embedScale, 1);
    assert.equal(c.residualScale, 1);
    assert.equal(c.logitDivisor, 1);
    assert.deepEqual(c.eosTokenIds, [151645]);
  });

  test('Qwen3 head_dim is taken from the config, not hidden_size / heads', () => {
    const raw = { ...rawConfig('qwen3-8b.json'), hidden_size: 2048, num_attention_heads: 32 };
    assert.equal(parseModelConfig(raw).headDim, 128);
  });

  test('MiniCPM4-0.5B', () => {
    const c = load('minicpm4-0.5b.json');
    assert.equal(c.architecture, 'MiniCPMForCausalLM');
    assert.equal(c.modelType, 'minicpm');
    assert.equal(c.hiddenSize, 1024);
    assert.equal(c.intermediateSize, 4096);
    assert.equal(c.numLayers, 24);
    assert.equal(c.numHeads, 16);
    assert.equal(c.numKvHeads, 2);
    assert.equal(c.headDim, 64);
    assert.equal(c.vocabSize, 73448);
    assert.equal(c.tieWordEmbeddings, true, 'no tie flag in the file: the MiniCPM default (true) applies');
    assert.equal(c.qkvBias, false);
    assert.equal(c.oBias, false);
    assert.equal(c.qkNorm, false);
    assert.equal(c.embedScale, 12);
    assert.ok(Math.abs(c.residualScale - 1.4 / Math.sqrt(24)) < 1e-15, `residualScale ${c.residualScale}`);
    assert.equal(c.logitDivisor, 1024 / 256);
    assert.equal(c.bosTokenId, 1);
    assert.deepEqual(c.eosTokenIds, [2, 73440]);
  });

  test('MiniCPM with an explicit tie_word_embeddings: false', () => {
    const raw = { ...rawConfig('minicpm4-0.5b.json'), tie_word_embeddings: false };
    assert.equal(parseModelConfig(raw).tieWordEmbeddings, false);
  });

  test('num_key_value_heads defaults to num_attention_heads; head_dim to hidden / heads', () => {
    const raw = rawConfig('llama-3.1-8b-instruct.json');
    delete raw.num_key_value_heads;
    const c = parseModelConfig(raw);
    assert.equal(c.numKvHeads, 32);
    assert.equal(c.headDim, 128);
  });

  test('Llama/Qwen3 attention_bias adds q/k/v and o biases', () => {
    for (const name of ['llama-3.1-8b-instruct.json', 'qwen3-8b.json']) {
      const c = parseModelConfig({ ...rawConfig(name), attention_bias: true });
      assert.equal(c.qkvBias, true, name);
      assert.equal(c.oBias, true, name);
    }
  });
});

describe('parameterCount', () => {
  const published: [string, number][] = [
    ['llama-3.1-8b-instruct.json', 8.03e9],
    ['qwen2.5-0.5b-instruct.json', 0.494e9],
    ['qwen3-8b.json', 8.19e9],
  ];
  for (const [name, want] of published) {
    test(`${name} ~ ${want}`, () => {
      const got = parameterCount(parseModelConfig(rawConfig(name)));
      assert.ok(Math.abs(got - want) / want < 0.005, `${name}: ${got} vs published ${want}`);
    });
  }
  test('MiniCPM4-0.5B (printed only)', (t) => {
    const got = parameterCount(parseModelConfig(rawConfig('minicpm4-0.5b.json')));
    assert.ok(Number.isInteger(got) && got > 0);
    t.diagnostic(`MiniCPM4-0.5B parameterCount = ${got}`);
  });
  test('tied embeddings count the embedding once', () => {
    const raw = rawConfig('qwen2.5-0.5b-instruct.json');
    const tied = parameterCount(parseModelConfig(raw));
    const untied = parameterCount(parseModelConfig({ ...raw, tie_word_embeddings: false }));
    assert.equal(untied - tied, 151936 * 896);
  });
});

describe('defaultAuxLayers', () => {
  test('EAGLE-3 defaults', () => {
    assert.deepEqual(defaultAuxLayers(32), [1, 15, 28]);
    assert.deepEqual(defaultAuxLayers(36), [1, 17, 32]);
    assert.deepEqual(defaultAuxLayers(24), [1, 11, 20]);
  });
});

describe('ropeInverseFrequencies', () => {
  /** HF `_compute_llama3_parameters`, written independently. */
  function llama3Reference(headDim: number, theta: number, factor: number, low: number, high: number, originalMax: number) {
    const bands = { low: 0, medium: 0, high: 0 };
    const out: number[] = [];
    const lowFreqWavelen = originalMax / low;
    const highFreqWavelen = originalMax / high;
    for (let k = 0; k < headDim; k += 2) {
      const inv = 1 / theta ** (k / headDim);
      const wavelen = (2 * Math.PI) / inv;
      if (wavelen > lowFreqWavelen) {
        bands.low++;
        out.push(inv / factor);
      } else if (wavelen < highFreqWavelen) {
        bands.high++;
        out.push(inv);
      } else {
        bands.medium++;
        const smooth = (originalMax / wavelen - low) / (high - low);
        out.push(((1 - smooth) * inv) / factor + smooth * inv);
      }
    }
    return { out, bands };
  }

  test('llama3 scaling on the real Llama-3.1 config matches the HF rule', () => {
    const c = parseModelConfig(rawConfig('llama-3.1-8b-instruct.json'));
    assert.equal(c.headDim, 128);
    const got = ropeInverseFrequencies(c);
    assert.ok(got instanceof Float32Array);
    assert.equal(got.length, 64);
    const { out, bands } = llama3Reference(128, 500000, 8, 1, 4, 8192);
    assert.ok(bands.low > 0 && bands.medium > 0 && bands.high > 0, `bands ${JSON.stringify(bands)}`);
    let maxRel = 0;
    for (let i = 0; i < 64; i++) maxRel = Math.max(maxRel, Math.abs(got[i] - out[i]) / Math.abs(out[i]));
    assert.ok(maxRel < 1e-6, `max relative error ${maxRel}`);
    // Scaling actually changed the low frequencies and left the high ones.
    assert.ok(Math.abs(got[63] - 1 / 500000 ** (126 / 128) / 8) / got[63] < 1e-6);
    assert.equal(got[0], 1);
  });

  test('no scaling and linear scaling', () => {
    const base = ropeInverseFrequencies({ headDim: 64, ropeTheta: 10000, ropeScaling: null });
    const lin = ropeInverseFrequencies({ headDim: 64, ropeTheta: 10000, ropeScaling: { type: 'linear', factor: 4 } });
    for (let i = 0; i < 32; i++) {
      const want = 1 / 10000 ** ((2 * i) / 64);
      assert.ok(Math.abs(base[i] - want) / want < 1e-6, `i=${i}`);
      assert.ok(Math.abs(lin[i] - want / 4) / want < 1e-6, `i=${i}`);
    }
  });

  test('rope_scaling "linear" and "default" parse', () => {
    const raw = rawConfig('qwen2.5-0.5b-instruct.json');
    assert.deepEqual(parseModelConfig({ ...raw, rope_scaling: { type: 'linear', factor: 2 } }).ropeScaling, { type: 'linear', factor: 2 });
    assert.equal(parseModelConfig({ ...raw, rope_scaling: { rope_type: 'default' } }).ropeScaling, null);
  });
});

describe('config errors', () => {
  const llama = () => rawConfig('llama-3.1-8b-instruct.json');

  test('unsupported architecture names it and lists the supported ones', () => {
    const re = new RegExp(`MistralForCausalLM.*${SUPPORTED_ARCHITECTURES.join('.*')}`);
    expectConfigError(() => parseModelConfig({ ...llama(), architectures: ['MistralForCausalLM'] }), re);
    expectConfigError(
      () => parseModelConfig({ ...llama(), architectures: ['MistralForCausalLM'] }),
      /LlamaForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM, MiniCPMForCausalLM/,
    );
    const noArch = llama();
    delete noArch.architectures;
    expectConfigError(() => parseModelConfig(noArch), /architectures/);
  });

  test('a missing "hidden_size" names the field', () => {
    const raw = llama();
    delete raw.hidden_size;
    expectConfigError(() => parseModelConfig(raw, 'my/config.json'), /^my\/config\.json: .*"hidden_size"/);
  });

  test('num_attention_heads not a multiple of num_key_value_heads', () => {
    expectConfigError(
      () => parseModelConfig({ ...llama(), num_key_value_heads: 5 }),
      /num_attention_heads \(32\).*num_key_value_heads \(5\)/,
    );
  });

  test('hidden_act "gelu"', () => {
    expectConfigError(() => parseModelConfig({ ...llama(), hidden_act: 'gelu' }), /hidden_act.*gelu/);
  });

  test('an unknown rope_scaling type names rope_scaling.rope_type', () => {
    expectConfigError(
      () => parseModelConfig({ ...llama(), rope_scaling: { rope_type: 'yarn', factor: 4, original_max_position_embeddings: 32768 } }),
      /rope_scaling\.rope_type.*yarn/,
    );
    expectConfigError(
      () => parseModelConfig({ ...llama(), rope_scaling: { type: 'dynamic', factor: 2 } }),
      /rope_scaling\.rope_type.*dynamic/,
    );
  });

  test('bad field types', () => {
    expectConfigError(() => parseModelConfig({ ...llama(), hidden_size: 4096.5 }), /"hidden_size"/);
    expectConfigError(() => parseModelConfig({ ...llama(), num_hidden_layers: 0 }), /"num_hidden_layers"/);
    expectConfigError(() => parseModelConfig({ ...llama(), tie_word_embeddings: 'yes' }), /"tie_word_embeddings"/);
    expectConfigError(() => parseModelConfig({ ...llama(), eos_token_id: ['x'] }), /"eos_token_id"/);
  });

  test('loadModelConfig on a non-JSON config.json names the file', () => {
    const dir = tmpDir();
    const file = path.join(dir, 'config.json');
    fs.writeFileSync(file, '{ "architectures": [LlamaForCausalLM] }');
    const escaped = file.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');
    expectConfigError(() => loadModelConfig(dir), new RegExp(escaped));
  });

  test('loadModelConfig on a folder without config.json names the file', () => {
    const dir = tmpDir();
    const escaped = path.join(dir, 'config.json').replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');
    expectConfigError(() => loadModelConfig(dir), new RegExp(escaped));
  });
});
