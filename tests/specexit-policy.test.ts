// The stored SpecExit exit policy: its JSON file (round trip, errors naming file and field), which rule
// decoding takes by name, and the round trip of a calibrated policy from a checkpoint through the
// SpecExit export folder and the ONNX draft's draft.json.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { initBackend } from '../src/backend/backend.ts';
import { onnxDraftPolicy, readOnnxDraftInfo } from '../src/decode/onnx-drafter.ts';
import { draftConfigFor } from '../src/draft/config.ts';
import { Eagle3Draft } from '../src/draft/eagle3.ts';
import { exportDraftOnnx } from '../src/export/onnx.ts';
import { writeServingFolder } from '../src/export/serving.ts';
import { parseModelConfig } from '../src/io/hf-config.ts';
import { CHECKPOINT_POLICY_FILE, checkpointPolicy, readPolicyFile, resolvePolicy, writePolicyFile } from '../src/specexit/policy-file.ts';
import { type ExitRule, REFERENCE_EXIT } from '../src/specexit/policy.ts';
import { removeTempDirs, tempDir, writeDraftCheckpoint } from './helpers.ts';

const CALIBRATED: ExitRule = {
  alpha: 0.3,
  seeding: 'debiased',
  minConfidence: 0.5,
  minProgress: null,
  maxRemaining: 20,
  close: 'replace-split',
};

let dir: string;
before(async () => {
  await initBackend('wasm');
  dir = tempDir('specexit-policy-');
});
after(removeTempDirs);

test('policy file: round trip; bad values are refused naming the file and the field', () => {
  const file = path.join(dir, 'p', 'policy.json');
  writePolicyFile(file, CALIBRATED, { note: 'figures' });
  assert.deepEqual(readPolicyFile(file), CALIBRATED);
  const raw = JSON.parse(fs.readFileSync(file, 'utf8'));
  assert.equal(raw.format, 'specforge-specexit-policy');
  assert.deepEqual(raw.calibration, { note: 'figures' });
  assert.deepEqual(fs.readdirSync(path.dirname(file)), ['policy.json'], 'no temporary file left');
  const bad = (patch: Record<string, unknown>, message: RegExp) => {
    fs.writeFileSync(file, JSON.stringify({ ...raw, ...patch }));
    assert.throws(() => readPolicyFile(file), message);
  };
  bad({ alpha: 0 }, /policy\.json: field 'alpha' is 0; expected a number in \(0, 1\]/);
  bad({ seeding: 'last' }, /policy\.json: field 'seeding' is "last"; expected "first" or "debiased"/);
  bad({ close: undefined }, /policy\.json: field 'close' is undefined; expected "after-split" or "replace-split"/);
  bad({ min_confidence: 'high' }, /policy\.json: field 'min_confidence' is "high"; expected a number or null \(not used\)/);
  bad({ format: 'other' }, /policy\.json: format is "other"; expected "specforge-specexit-policy"/);
  fs.writeFileSync(file, '[1]');
  assert.throws(() => readPolicyFile(file), /policy\.json: expected a SpecExit policy \(a JSON object\)/);
});

test('which rule decoding takes: calibrated when stored (auto), the reference and the recipe by name', () => {
  const recipe = { alpha: 0.5, thresholds: [0.6, 0.2, 50] };
  const stored = { rule: CALIBRATED, where: '/ck/specexit/policy.json' };
  const none = { rule: null, where: '/ck/specexit/policy.json' };
  assert.deepEqual(resolvePolicy('auto', stored, recipe).rule, CALIBRATED);
  assert.deepEqual(resolvePolicy('calibrated', stored, recipe).rule, CALIBRATED);
  assert.deepEqual(resolvePolicy('reference', stored, recipe).rule, REFERENCE_EXIT);
  const fromRecipe = { alpha: 0.5, seeding: 'first', minConfidence: 0.6, minProgress: 0.2, maxRemaining: 50, close: 'after-split' };
  assert.deepEqual(resolvePolicy('recipe', stored, recipe).rule, fromRecipe);
  assert.deepEqual(resolvePolicy('auto', none, recipe).rule, fromRecipe);
  assert.throws(() => resolvePolicy('calibrated', none, recipe), /\/ck\/specexit\/policy\.json: no calibrated SpecExit policy/);
});

test('a calibrated policy round-trips from the checkpoint through the SpecExit export and the ONNX draft.json', async () => {
  const target = parseModelConfig({
    architectures: ['LlamaForCausalLM'],
    hidden_size: 32,
    intermediate_size: 48,
    num_hidden_layers: 3,
    num_attention_heads: 4,
    num_key_value_heads: 2,
    head_dim: 8,
    vocab_size: 40,
  });
  const used = Int32Array.from({ length: 40 }, (_, i) => i);
  const config = draftConfigFor(target, [0, 1, 2], 40, true);
  const draft = Eagle3Draft.init(config, 3);
  const ckpt = path.join(dir, 'ckpt');
  try {
    await writeDraftCheckpoint(ckpt, config, draft, used);
  } finally {
    draft.dispose();
  }
  // Before calibration: nothing stored, nothing exported.
  assert.equal(checkpointPolicy(ckpt), null);
  exportDraftOnnx(ckpt, path.join(dir, 'plain-onnx'));
  const plain = readOnnxDraftInfo(path.join(dir, 'plain-onnx'));
  assert.equal(plain.specexit_policy, undefined);
  assert.equal(onnxDraftPolicy(path.join(dir, 'plain-onnx'), plain), null);

  writePolicyFile(path.join(ckpt, CHECKPOINT_POLICY_FILE), CALIBRATED, { test: true });
  assert.deepEqual(checkpointPolicy(ckpt), CALIBRATED);
  const onnxDir = path.join(dir, 'out', 'onnx');
  exportDraftOnnx(ckpt, onnxDir);
  assert.deepEqual(onnxDraftPolicy(onnxDir, readOnnxDraftInfo(onnxDir)), CALIBRATED);
  const specDir = path.join(dir, 'out', 'specexit');
  const files = writeServingFolder(ckpt, specDir, 'specexit');
  assert.ok(files.includes(path.join(specDir, 'policy.json')));
  assert.deepEqual(readPolicyFile(path.join(specDir, 'policy.json')), CALIBRATED);
  const cfg = JSON.parse(fs.readFileSync(path.join(specDir, 'config.json'), 'utf8'));
  assert.equal(cfg.specexit.exit_policy, 'policy.json');
  // The SGLang folder has no SpecExit heads and carries no policy.
  writeServingFolder(ckpt, path.join(dir, 'out', 'sglang'), 'sglang');
  assert.ok(!fs.existsSync(path.join(dir, 'out', 'sglang', 'policy.json')));

  // A bad stored policy in draft.json is named by file and field.
  const info = JSON.parse(fs.readFileSync(path.join(onnxDir, 'draft.json'), 'utf8'));
  info.specexit_policy.alpha = 2;
  fs.writeFileSync(path.join(onnxDir, 'draft.json'), JSON.stringify(info));
  assert.throws(
    () => onnxDraftPolicy(onnxDir, readOnnxDraftInfo(onnxDir)),
    /draft\.json: field 'specexit_policy': field 'alpha' is 2; expected a number in \(0, 1\]/,
  );
});
