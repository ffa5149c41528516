import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

import { readSafetensorsPlain } from './plain-target.ts';
import { finiteDifference, plainEagle3Forward, type PlainEagle3Config, type PlainEagle3Inputs } from './plain-eagle3.ts';

function fixturePath(file: string): string {
  return fileURLToPath(new URL(`../fixtures/golden/${file}`, import.meta.url));
}

type Tensors = ReturnType<typeof readSafetensorsPlain>;

function floatData(map: Tensors, name: string): Float32Array {
  const t = map.get(name);
  assert.ok(t, `missing tensor ${name}`);
  assert.ok(t.data instanceof Float32Array, `${name} is ${t.dtype}, expected a float tensor`);
  return t.data;
}

function int64Data(map: Tensors, name: string): number[] {
  const t = map.get(name);
  assert.ok(t, `missing tensor ${name}`);
  assert.ok(t.data instanceof BigInt64Array, `${name} is ${t.dtype}, expected I64`);
  return Array.from(t.data, (v) => Number(v));
}

function toRows(flat: number[], B: number, T: number): number[][] {
  assert.equal(flat.length, B * T);
  return Array.from({ length: B }, (_, b) => flat.slice(b * T, (b + 1) * T));
}

function load() {
  const json = JSON.parse(readFileSync(fixturePath('eagle3-ttt.json'), 'utf8')) as Record<string, any>;
  const cfg: PlainEagle3Config = {
    hiddenSize: json.hidden_size,
    targetHiddenSize: json.target_hidden_size,
    numHeads: json.num_attention_heads,
    numKvHeads: json.num_key_value_heads,
    headDim: json.head_dim,
    intermediateSize: json.intermediate_size,
    vocabSize: json.vocab_size,
    draftVocabSize: json.draft_vocab_size,
    rmsNormEps: json.rms_norm_eps,
    ropeTheta: json.rope_theta,
    tttLength: json.ttt_length,
    stepWeight: json.step_weight,
  };
  const B: number = json.B;
  const T: number = json.T;

  const st = readSafetensorsPlain(fixturePath('eagle3-ttt.safetensors'));
  const t2dT = st.get('weight.t2d');
  assert.ok(t2dT && t2dT.dtype === 'BOOL' && t2dT.data instanceof Uint8Array, 'weight.t2d must be BOOL');

  const inputs: PlainEagle3Inputs = {
    embed: floatData(st, 'input.embed_tokens'),
    aux: floatData(st, 'input.aux_hidden_states'),
    inputIds: toRows(int64Data(st, 'input.input_ids'), B, T),
    lossMask: toRows(int64Data(st, 'input.loss_mask'), B, T),
    targetLogits: floatData(st, 'input.target_logits'),
    t2d: t2dT.data,
    d2t: int64Data(st, 'weight.d2t'),
  };

  const weights = new Map<string, Float32Array>();
  const grads = new Map<string, Float32Array>();
  for (const name of st.keys()) {
    if (name === 'weight.t2d' || name === 'weight.d2t') continue;
    if (name.startsWith('weight.')) weights.set(name.slice('weight.'.length), floatData(st, name));
    if (name.startsWith('grad.')) grads.set(name.slice('grad.'.length), floatData(st, name));
  }
  return { cfg, inputs, weights, grads, st, json };
}

test('plainEagle3Forward matches the golden EAGLE-3 TTT losses and accuracies', (t) => {
  const { cfg, inputs, weights, st, json } = load();
  const result = plainEagle3Forward(cfg, weights, inputs);

  const expLosses = floatData(st, 'expect.step_losses');
  const expAccs = floatData(st, 'expect.step_accs');
  const expTotal = floatData(st, 'expect.total_loss')[0]!;
  assert.equal(result.stepLosses.length, cfg.tttLength);
  assert.equal(result.stepAccs.length, cfg.tttLength);
  assert.equal(expLosses.length, cfg.tttLength);

  let maxLoss = 0;
  let maxAcc = 0;
  let maxLossJson = 0;
  for (let i = 0; i < cfg.tttLength; i++) {
    const dl = Math.abs(result.stepLosses[i]! - expLosses[i]!);
    const da = Math.abs(result.stepAccs[i]! - expAccs[i]!);
    maxLoss = Math.max(maxLoss, dl);
    maxAcc = Math.max(maxAcc, da);
    maxLossJson = Math.max(maxLossJson, Math.abs(result.stepLosses[i]! - json.step_losses[i]));
    assert.ok(dl <= 1e-5, `step ${i} loss ${result.stepLosses[i]} vs ${expLosses[i]}`);
    assert.ok(da <= 1e-5, `step ${i} acc ${result.stepAccs[i]} vs ${expAccs[i]}`);
  }
  const dTotal = Math.abs(result.totalLoss - expTotal);
  assert.ok(dTotal <= 1e-5, `total loss ${result.totalLoss} vs ${expTotal}`);
  t.diagnostic(
    `max |dloss| ${maxLoss.toExponential(2)} (vs float64 json ${maxLossJson.toExponential(2)}), ` +
      `max |dacc| ${maxAcc.toExponential(2)}, |dtotal| ${dTotal.toExponential(2)} ` +
      `(vs json ${Math.abs(result.totalLoss - json.total_loss).toExponential(2)})`,
  );
});

test('finiteDifference of the reference matches the golden gradients', (t) => {
  const { cfg, inputs, weights, grads } = load();
  const names = ['fc.weight', 'midlayer.self_attn.q_proj.weight', 'lm_head.weight', 'midlayer.hidden_norm.weight'];
  let maxRel = 0;
  for (const name of names) {
    const g = grads.get(name);
    assert.ok(g, `missing grad.${name}`);
    assert.equal(g.length, weights.get(name)!.length, `grad.${name} shape`);
    // The element with the largest |grad| plus four spread-out elements.
    let top = 0;
    for (let i = 1; i < g.length; i++) if (Math.abs(g[i]!) > Math.abs(g[top]!)) top = i;
    const indices = [top, ...[1, 2, 3, 4].map((k) => Math.floor((k * g.length) / 5) + k)];
    for (const index of indices) {
      const fd = finiteDifference(cfg, weights, inputs, name, index);
      const expected = g[index]!;
      const err = Math.abs(fd - expected);
      maxRel = Math.max(maxRel, err / Math.max(Math.abs(expected), 1e-12));
      assert.ok(err <= 1e-4 * Math.abs(expected) + 1e-6, `${name}[${index}]: finite difference ${fd} vs golden ${expected}`);
    }
  }
  t.diagnostic(`max relative gradient error ${maxRel.toExponential(2)}`);
});
