// `specforge eval` end to end on a small random-weight target and a random draft checkpoint: the recipe's
// held-out prompts (chain, greedy: identical to plain decoding) and an MT-bench file (tree, sampling);
// report.json and acceptance.svg are written where asked; a draft that guesses well (built so, for a
// target built so) exported to ONNX and run with --draft-onnx accepts exactly what its checkpoint does;
// without --checkpoint eval takes the run's step-best.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { initBackend } from '../src/backend/backend.ts';
import { draftConfigFor } from '../src/draft/config.ts';
import { Eagle3Draft } from '../src/draft/eagle3.ts';
import { parseModelConfig } from '../src/io/hf-config.ts';
import { writeSafetensors } from '../src/io/safetensors.ts';
import { loadTokenizer } from '../src/io/tokenizer.ts';
import { pointBest } from '../src/train/best.ts';
import { saveCheckpoint } from '../src/train/checkpoint.ts';
import { cycleDraftWeights, cycleTargetWeights, randomWeights, removeTempDirs, repoRoot as repo, specforge } from './helpers.ts';
import { tempDir } from './helpers.ts';

const work = tempDir('eval-test-');
const target = path.join(work, 'target');
const recipe = path.join(work, 'evalrun.yaml');
/** A target whose greedy output cycles through 40 tokens nearly whatever came before (thinking first), and a draft run that guesses it. */
const cycleTarget = path.join(work, 'cycle-target');
const cycleRecipe = path.join(work, 'cyclerun.yaml');

after(removeTempDirs);

before(async () => {
  await initBackend('wasm');
  const tok = loadTokenizer(path.join(repo, 'data', 'tiny-target'));
  const eos = tok.requireId('<|im_end|>');
  const raw = {
    architectures: ['LlamaForCausalLM'],
    hidden_size: 32,
    intermediate_size: 48,
    num_hidden_layers: 4,
    num_attention_heads: 4,
    num_key_value_heads: 2,
    vocab_size: tok.vocabSize,
    eos_token_id: eos,
  };
  fs.mkdirSync(target, { recursive: true });
  fs.writeFileSync(path.join(target, 'config.json'), JSON.stringify(raw));
  const config = parseModelConfig(raw);
  writeSafetensors(path.join(target, 'model.safetensors'), randomWeights(config, 8));
  for (const f of ['tokenizer.json', 'tokenizer_config.json'])
    fs.copyFileSync(path.join(repo, 'data', 'tiny-target', f), path.join(target, f));
  // A random draft over the first 64 token ids (eos among them), saved as training would.
  const Vd = 64;
  const draftConfig = draftConfigFor(config, [1, 2, 3], Vd);
  const draft = Eagle3Draft.init(draftConfig, 3);
  const t2d = new Uint8Array(tok.vocabSize);
  for (let i = 0; i < Vd; i++) t2d[i] = 1;
  const state = { step: 5, epoch: 0, batchInEpoch: 5, totalSteps: 5, seed: 1, learningRate: 0, recipeKey: 'test' };
  const save = (run: string, d: Eagle3Draft) => {
    const weights = d.exportWeights();
    const zeros = new Map([...weights].map(([n, w]) => [n, new Float32Array(w.data.length)]));
    saveCheckpoint(path.join(work, 'ckpt', run), d.config, weights, { d2t: new BigInt64Array(Vd), t2d }, { m: zeros, v: zeros }, state, 3);
  };
  save('evalrun', draft);

  // The cycle target: after a token of S comes the next one of S; after the generation prompt's last token
  // ("\n") <think>; after another token, whichever token the lm_head rows happen to favour. S thinks for 10
  // tokens with one paragraph break ("\n\n") after 2, closes thinking and states 13, in words otherwise.
  const [nl, nn, think, endThink, n13] = ['\n', '\n\n', '<think>', '</think>', ' 13'].map((t) => tok.encode(t)[0]);
  const words = [
    12, 13, 19, 22, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 63, 9, 10, 11, 14,
    15, 18,
  ];
  assert.ok(words.every((w) => !/\d|\n|think/.test(tok.decode([w]))));
  const S = [think, ...words.slice(0, 2), nn, ...words.slice(2, 9), endThink, n13, ...words.slice(9)];
  assert.equal(new Set(S).size, 40);
  const next = Array.from({ length: tok.vocabSize }, (_, x) => (S.includes(x) ? S[(S.indexOf(x) + 1) % S.length] : x === nl ? think : -1));
  const cw = cycleTargetWeights(config, 9, next);
  fs.mkdirSync(cycleTarget, { recursive: true });
  fs.writeFileSync(path.join(cycleTarget, 'config.json'), JSON.stringify(raw));
  writeSafetensors(path.join(cycleTarget, 'model.safetensors'), cw);
  for (const f of ['tokenizer.json', 'tokenizer_config.json'])
    fs.copyFileSync(path.join(repo, 'data', 'tiny-target', f), path.join(cycleTarget, f));
  // Its MLP knows every token of S but every fifth one from the paragraph break on (chains break there),
  // and the prompt's last; its SpecExit signal rows are zero: confidence and progress 0.5, 1 token remaining.
  const embed = cw.get('model.embed_tokens.weight')!.data as Float32Array;
  const used = Int32Array.from({ length: Vd }, (_, i) => i);
  const base = Eagle3Draft.init(draftConfigFor(config, [1, 2, 3], Vd, true), 3);
  const weights = cycleDraftWeights(base.exportWeights(), embed, next, used, [nl, ...S.filter((_, i) => i % 5 !== 4)]);
  weights.get('specexit.signals.weight')!.fill(0);
  const good = new Eagle3Draft(base.config, weights);
  save('cyclerun', good);
  base.dispose();
  good.dispose();
  draft.dispose();

  const chat = (q: string, a: string) =>
    JSON.stringify({
      conversations: [
        { from: 'human', value: q },
        { from: 'gpt', value: a },
      ],
    });
  fs.writeFileSync(
    path.join(work, 'eval.jsonl'),
    [
      chat('What does Julia do for a living?', 'She is a pilot.'),
      chat('Where does Mark live?', 'Mark is from Oslo.'),
      chat('Who is Lucy?', 'A friend.'),
    ].join('\n') + '\n',
  );
  fs.writeFileSync(
    path.join(work, 'mtbench.jsonl'),
    [1, 2]
      .map((i) => JSON.stringify({ question_id: 80 + i, category: 'writing', turns: [`Where does Mark live? ${i}`, 'And then?'] }))
      .join('\n') + '\n',
  );
  fs.writeFileSync(
    recipe,
    `model:\n  target: ${target}\n  aux_layer_ids: [1, 2, 3]\n  draft_vocab_size: ${Vd}\n` +
      `data:\n  train: ${path.join(work, 'eval.jsonl')}\n  eval: ${path.join(work, 'eval.jsonl')}\n  format: sharegpt\n  template: chatml\n  store: ${path.join(work, 'store')}\n` +
      `training:\n  output_dir: ${path.join(work, 'ckpt')}\n` +
      `eval:\n  draft_steps: 4\n  max_new_tokens: 10\n` +
      `runtime:\n  backend: wasm\n  seed: 3\n`,
  );
  // Reasoning prompts whose reference answer is 13; exits allowed at signals of 0.5, 0.5 and 1 token.
  fs.writeFileSync(
    path.join(work, 'reasoning.jsonl'),
    ['How many apples?', 'How many pears?', 'How many plums?']
      .map((q) => chat(q, '<think>\nSome thought.\n\nMore.\n</think>\nThe answer is 13.'))
      .join('\n') + '\n',
  );
  fs.writeFileSync(
    cycleRecipe,
    `model:\n  target: ${cycleTarget}\n  aux_layer_ids: [1, 2, 3]\n  draft_vocab_size: ${Vd}\n` +
      `data:\n  train: ${path.join(work, 'reasoning.jsonl')}\n  eval: ${path.join(work, 'reasoning.jsonl')}\n  format: sharegpt\n  template: chatml\n  answer_extractor: last-number\n  store: ${path.join(work, 'store')}\n` +
      `training:\n  output_dir: ${path.join(work, 'ckpt')}\n` +
      `eval:\n  draft_steps: 4\n  max_new_tokens: 24\n  exit_thresholds: [0.4, 0.3, 200]\n` +
      `runtime:\n  backend: wasm\n  seed: 3\n`,
  );
});

const run = (...args: string[]) => specforge(['eval', '--recipe', recipe, ...args]);

describe('specforge eval', () => {
  test('recipe prompts, greedy chain: table printed, report and chart written under the run folder', () => {
    // --backend auto: the first backend that loads (wasm where tfjs-node is not installed), and it says which.
    const r = run('--limit', '2', '--draft-steps', '3', '--backend', 'auto');
    assert.equal(r.status, 0, r.stderr + r.stdout);
    const backend = /^backend: (node-gpu|node|wasm) \(tfjs '(?:tensorflow|wasm)'\)$/m.exec(r.stdout)?.[1];
    assert.ok(backend, r.stdout);
    assert.match(r.stdout, /eval: 2 prompts, chain of 3, temperature 0/);
    assert.match(r.stdout, /tau \d+\.\d+ tokens\/pass/);
    assert.match(r.stdout, /speedup\s+\d+\.\d+x/);
    const dir = path.join(work, 'ckpt', 'evalrun', 'eval');
    const report = JSON.parse(fs.readFileSync(path.join(dir, 'report.json'), 'utf8'));
    assert.equal(report.prompts, 2);
    assert.equal(report.settings.mode, 'chain');
    assert.equal(report.settings.checkpoint, path.join(work, 'ckpt', 'evalrun', 'step-5'));
    assert.equal(report.settings.backend, backend);
    assert.equal(report.positions.length, 3);
    assert.deepEqual(report.identicalToPlain, { identical: 2, of: 2 });
    assert.equal(report.verifyTokens, report.generatedTokens - 2);
    // Speeds are what the times and token counts make them (and what the table prints); no timing is judged.
    const sum = (k: string) => report.perPrompt.reduce((a: number, p: Record<string, number>) => a + p[k], 0);
    const { speculative: sp, plain } = report;
    assert.equal(sp.tokens, report.generatedTokens);
    assert.equal(sp.seconds, sum('seconds'));
    assert.equal(plain.tokens, sum('plainTokens'));
    assert.equal(plain.seconds, sum('plainSeconds'));
    assert.ok(sp.seconds > 0 && plain.seconds > 0);
    assert.ok(sp.prefillSeconds + sp.draftSeconds + sp.verifySeconds <= sp.seconds * (1 + 1e-9), 'the parts of the decode fit in it');
    assert.equal(sp.tokensPerSecond, sp.tokens / sp.seconds);
    assert.equal(plain.tokensPerSecond, plain.tokens / plain.seconds);
    assert.equal(report.speedup, sp.tokensPerSecond / plain.tokensPerSecond);
    assert.ok(
      r.stdout.includes(`speculative ${sp.tokensPerSecond.toFixed(1)} tok/s (${sp.tokens} tokens, ${sp.seconds.toFixed(2)} s`),
      r.stdout,
    );
    assert.ok(r.stdout.includes(`plain       ${plain.tokensPerSecond.toFixed(1)} tok/s (${plain.tokens} tokens`), r.stdout);
    assert.ok(r.stdout.includes(`speedup     ${report.speedup.toFixed(2)}x`), r.stdout);
    assert.match(fs.readFileSync(path.join(dir, 'acceptance.svg'), 'utf8'), /<svg[^>]*>[\s\S]*<\/svg>/);
  });

  test('MT-bench input, tree drafting with sampling, explicit checkpoint and output folder', () => {
    const out = path.join(work, 'out-tree');
    const r = run(
      '--input',
      path.join(work, 'mtbench.jsonl'),
      '--tree',
      '2,3,5',
      '--temperature',
      '0.8',
      '--top-p',
      '0.9',
      '--checkpoint',
      path.join(work, 'ckpt', 'evalrun', 'step-5'),
      '--out',
      out,
    );
    assert.equal(r.status, 0, r.stderr + r.stdout);
    const report = JSON.parse(fs.readFileSync(path.join(out, 'report.json'), 'utf8'));
    assert.equal(report.prompts, 2);
    assert.deepEqual(report.settings.tree, { topk: 2, depth: 3, tokens: 5 });
    assert.equal(report.identicalToPlain, null);
    assert.deepEqual(
      report.perPrompt.map((p: { id: string; category: string }) => [p.id, p.category]),
      [
        ['81', 'writing'],
        ['82', 'writing'],
      ],
    );
    assert.ok(fs.existsSync(path.join(out, 'acceptance.svg')));
  });

  test('errors: a bad tree shape names the field; a run without checkpoints says to train first', () => {
    const bad = run('--tree', '2,3');
    assert.equal(bad.status, 1);
    assert.match(bad.stderr, /field 'eval\.tree': tree "2,3": expected "topk,depth,tokens"/);
    const other = path.join(work, 'untrained.yaml');
    fs.writeFileSync(other, fs.readFileSync(recipe, 'utf8'));
    const none = specforge(['eval', '--recipe', other]);
    assert.equal(none.status, 1);
    assert.match(none.stderr, /no checkpoint under .*untrained: train first/);
  });

  test('--draft-onnx: a draft that guesses well, exported to ONNX and run by ONNX Runtime, accepts exactly what its checkpoint does', () => {
    const ckpt = path.join(work, 'ckpt', 'cyclerun', 'step-5');
    const exp = specforge([
      'export-onnx',
      '--checkpoint',
      ckpt,
      '--out',
      path.join(work, 'export'),
      '--format',
      'onnx',
      '--target',
      cycleTarget,
    ]);
    assert.equal(exp.status, 0, exp.stderr);
    const evalArgs = ['eval', '--recipe', cycleRecipe, '--limit', '3', '--draft-steps', '4', '--max-new-tokens', '24'];
    const a = specforge([...evalArgs, '--checkpoint', ckpt, '--out', path.join(work, 'eval-tfjs')]);
    const b = specforge([...evalArgs, '--draft-onnx', path.join(work, 'export', 'onnx'), '--out', path.join(work, 'eval-onnx')]);
    assert.equal(a.status, 0, a.stderr);
    assert.equal(b.status, 0, b.stderr);
    const ra = JSON.parse(fs.readFileSync(path.join(work, 'eval-tfjs', 'report.json'), 'utf8'));
    const rb = JSON.parse(fs.readFileSync(path.join(work, 'eval-onnx', 'report.json'), 'utf8'));
    assert.equal(rb.settings.drafter, 'onnx');
    assert.equal(ra.settings.drafter, 'tfjs');
    // Pass by pass, the same drafts accepted.
    assert.deepEqual(
      rb.perPrompt.map((p: { acceptLengths: number[] }) => p.acceptLengths),
      ra.perPrompt.map((p: { acceptLengths: number[] }) => p.acceptLengths),
    );
    assert.deepEqual(rb.positions, ra.positions);
    assert.deepEqual(rb.acceptLengthHistogram, ra.acceptLengthHistogram);
    assert.equal(rb.tau, ra.tau);
    assert.deepEqual(rb.identicalToPlain, { identical: 3, of: 3 });
    // eval.draft_engine onnx: the checkpoint is exported once beside itself and run by ONNX Runtime.
    const copy = path.join(work, 'ckpt-copy', 'step-5');
    fs.cpSync(ckpt, copy, { recursive: true });
    const onnxRecipe = path.join(work, 'cyclerun-onnx.yaml');
    fs.writeFileSync(
      onnxRecipe,
      fs.readFileSync(cycleRecipe, 'utf8').replace('  draft_steps: 4\n', '  draft_steps: 4\n  draft_engine: onnx\n'),
    );
    const c = specforge([
      ...evalArgs.map((x) => (x === cycleRecipe ? onnxRecipe : x)),
      '--checkpoint',
      copy,
      '--out',
      path.join(work, 'eval-engine'),
    ]);
    assert.equal(c.status, 0, c.stderr);
    assert.match(c.stdout, /eval.draft_engine onnx: exporting/);
    assert.ok(fs.existsSync(path.join(copy, 'onnx', 'draft.json')));
    const rc = JSON.parse(fs.readFileSync(path.join(work, 'eval-engine', 'report.json'), 'utf8'));
    assert.equal(rc.settings.drafter, 'onnx');
    assert.deepEqual(rc.acceptLengthHistogram, ra.acceptLengthHistogram);
    // The draft guesses well, so the accept lengths say something: most passes accept, some the whole chain.
    const h: number[] = ra.acceptLengthHistogram;
    const passes = h.reduce((x, y) => x + y, 0);
    assert.ok(h[0] < passes / 3 && h[4] > 0 && ra.tau > 2, `accept length histogram ${h}, tau ${ra.tau}`);
    const bad = run('--draft-onnx', ckpt);
    assert.equal(bad.status, 1);
    assert.match(bad.stderr, /step-5: not an exported ONNX draft/);
  });

  test('--specexit: exits at the paragraph break save reasoning tokens and keep the answer; a draft without signal heads is refused', () => {
    const out = path.join(work, 'eval-specexit');
    const r = specforge(['eval', '--recipe', cycleRecipe, '--specexit', '--out', out]);
    assert.equal(r.status, 0, r.stderr + r.stdout);
    const report = JSON.parse(fs.readFileSync(path.join(out, 'report.json'), 'utf8'));
    // Without exits each answer thinks for 12 tokens (<think> ... </think>). The first draft chain, all
    // accepted, holds the paragraph break third of 4: the policy exits, keeps the chain through the break and
    // emits </think>: 5 tokens. The answer (13) stays.
    assert.deepEqual(
      { ...report.specexit, tauWithExit: null, secondsPerAnswer: null },
      {
        prompts: 3,
        exits: 3,
        reasoningTokens: { full: 12, exit: 5 },
        reasoningSaved: 1 - 15 / 36,
        accuracy: { full: 1, exit: 1, of: 3 },
        tauWithExit: null,
        secondsPerAnswer: null,
        rule: { alpha: 0.1, seeding: 'first', minConfidence: 0.4, minProgress: 0.3, maxRemaining: 200, close: 'after-split' },
        policy: 'recipe (eval.exit_alpha, eval.exit_thresholds; no calibrated policy stored)',
      },
    );
    const perAnswer = report.specexit.secondsPerAnswer;
    assert.ok(perAnswer.full > 0 && perAnswer.exit > 0);
    assert.match(r.stdout, /time per answer \d+\.\d+ s without exit, \d+\.\d+ s with exit/);
    assert.match(r.stdout, /SpecExit on 3 prompts: 3 early exits; reasoning tokens per answer 12\.0 -> 5\.0 \(58\.3% saved\)/);
    assert.match(r.stdout, /answer accuracy 100\.0% without exit, 100\.0% with exit \(3 prompts with a reference answer\)/);
    const none = run('--specexit', '--limit', '1');
    assert.equal(none.status, 1, none.stdout);
    assert.match(none.stderr, /evalrun\/step-5: this draft has no SpecExit signal heads; train it with training\.specexit: true/);
  });

  test('--specexit --calibrate: chooses the rule on half the prompts, stores it with the draft, reports the other half; eval then takes it', () => {
    const ckpt = path.join(work, 'calibrated', 'step-5');
    fs.cpSync(path.join(work, 'ckpt', 'cyclerun', 'step-5'), ckpt, { recursive: true });
    const out = path.join(work, 'eval-calibrate');
    const r = specforge(['eval', '--recipe', cycleRecipe, '--specexit', '--calibrate', '--checkpoint', ckpt, '--out', out]);
    assert.equal(r.status, 0, r.stderr + r.stdout);
    const report = JSON.parse(fs.readFileSync(path.join(out, 'calibration.json'), 'utf8'));
    assert.deepEqual(report.split.calibration, 2, 'prompts 1 and 3 calibrate');
    assert.deepEqual(report.split.test, 1, 'prompt 2 tests');
    // Every prompt thinks 12 tokens; an exit at the paragraph break (the only split) leaves 5, answer kept.
    // Every rule that exits exits there, so the tie goes to the first in the grid: no signal used.
    assert.deepEqual(report.chosen.rule, {
      alpha: 0.1,
      seeding: 'first',
      minConfidence: null,
      minProgress: null,
      maxRemaining: null,
      close: 'after-split',
    });
    assert.deepEqual(report.chosen.testDecoded, {
      prompts: 1,
      exits: 1,
      reasoningTokens: { full: 12, exit: 5 },
      reasoningSaved: 1 - 5 / 12,
      accuracy: { full: 1, exit: 1, of: 1 },
    });
    assert.deepEqual(report.chosen.testSimulated, report.chosen.testDecoded);
    assert.deepEqual(report.simulationExact, { identical: 1, of: 1 });
    assert.equal(report.compared[0].name, 'reference (SpecExit)');
    assert.equal(report.compared[0].test.exits, 0, 'the reference rule (confidence > 0.8) never exits on signals of 0.5');
    const stored = JSON.parse(fs.readFileSync(path.join(ckpt, 'specexit', 'policy.json'), 'utf8'));
    assert.equal(stored.format, 'specforge-specexit-policy');
    assert.equal(stored.close, 'after-split');
    assert.equal(stored.min_confidence, null);
    assert.deepEqual(stored.calibration.prompts, { calibration: 2, test: 1 });
    const svg = fs.readFileSync(path.join(out, 'tradeoff.svg'), 'utf8');
    assert.match(svg, /<svg[^>]*>[\s\S]*<circle class="chosen"[\s\S]*<rect class="test"[\s\S]*<\/svg>/);
    assert.match(r.stdout, /stored the policy in .*calibrated\/step-5\/specexit\/policy\.json/);

    // Decoding takes the stored rule by default; the reference stays available by name.
    const byDefault = specforge([
      'eval',
      '--recipe',
      cycleRecipe,
      '--specexit',
      '--checkpoint',
      ckpt,
      '--out',
      path.join(work, 'eval-stored'),
    ]);
    assert.equal(byDefault.status, 0, byDefault.stderr);
    assert.match(byDefault.stdout, /SpecExit policy: calibrated \(.*policy\.json\)/);
    const used = JSON.parse(fs.readFileSync(path.join(work, 'eval-stored', 'report.json'), 'utf8')).specexit;
    assert.deepEqual([used.exits, used.reasoningTokens], [3, { full: 12, exit: 5 }]);
    const reference = specforge([
      'eval',
      '--recipe',
      cycleRecipe,
      '--specexit',
      '--exit-policy',
      'reference',
      '--checkpoint',
      ckpt,
      '--out',
      path.join(work, 'eval-ref'),
    ]);
    assert.equal(reference.status, 0, reference.stderr);
    assert.match(reference.stdout, /SpecExit policy: reference/);
    assert.equal(JSON.parse(fs.readFileSync(path.join(work, 'eval-ref', 'report.json'), 'utf8')).specexit.exits, 0);
    const alone = specforge(['eval', '--recipe', cycleRecipe, '--calibrate', '--checkpoint', ckpt]);
    assert.equal(alone.status, 1);
    assert.match(alone.stderr, /--calibrate calibrates the SpecExit exit rule: give --specexit too/);
  });

  test("without --checkpoint, the run's step-best rather than its newest checkpoint", () => {
    const runDir = path.join(work, 'ckpt', 'evalrun');
    fs.cpSync(path.join(runDir, 'step-5'), path.join(runDir, 'step-6'), { recursive: true });
    pointBest(runDir, path.join(runDir, 'step-5'));
    const r = run('--limit', '1', '--draft-steps', '2', '--out', path.join(work, 'eval-best'));
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /checkpoint: the run's best \(step-best\), .*step-5/);
    const report = JSON.parse(fs.readFileSync(path.join(work, 'eval-best', 'report.json'), 'utf8'));
    assert.equal(report.settings.checkpoint, path.join(runDir, 'step-5'));
  });
});
