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
/** A target whose greedy output cycles through ids 6..45 nearly whatever came before, and a draft run that guesses it. */
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
    saveCheckpoint(
      path.join(work, 'ckpt', run),
      draftConfig,
      weights,
      { d2t: new BigInt64Array(Vd), t2d },
      { m: zeros, v: zeros },
      state,
      3,
    );
  };
  save('evalrun', draft);

  // The cycle target: after a token of S (ids 6..45) comes the next one of S; after another token, whichever
  // token of S the lm_head rows happen to favour.
  const S = Array.from({ length: 40 }, (_, i) => 6 + i);
  const next = Array.from({ length: tok.vocabSize }, (_, x) => (S.includes(x) ? S[(S.indexOf(x) + 1) % S.length] : -1));
  const cw = cycleTargetWeights(config, 9, next);
  fs.mkdirSync(cycleTarget, { recursive: true });
  fs.writeFileSync(path.join(cycleTarget, 'config.json'), JSON.stringify(raw));
  writeSafetensors(path.join(cycleTarget, 'model.safetensors'), cw);
  for (const f of ['tokenizer.json', 'tokenizer_config.json'])
    fs.copyFileSync(path.join(repo, 'data', 'tiny-target', f), path.join(cycleTarget, f));
  // Its MLP knows every fifth token of S but one: chains break there.
  const embed = cw.get('model.embed_tokens.weight')!.data as Float32Array;
  const used = Int32Array.from({ length: Vd }, (_, i) => i);
  const good = new Eagle3Draft(
    draftConfig,
    cycleDraftWeights(
      draft.exportWeights(),
      embed,
      next,
      used,
      S.filter((_, i) => i % 5 !== 4),
    ),
  );
  save('cyclerun', good);
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
  fs.writeFileSync(cycleRecipe, fs.readFileSync(recipe, 'utf8').replace(`target: ${target}\n`, `target: ${cycleTarget}\n`));
});

const run = (...args: string[]) => specforge(['eval', '--recipe', recipe, ...args]);

describe('specforge eval', () => {
  test('recipe prompts, greedy chain: table printed, report and chart written under the run folder', () => {
    const r = run('--limit', '2', '--draft-steps', '3');
    assert.equal(r.status, 0, r.stderr + r.stdout);
    assert.match(r.stdout, /eval: 2 prompts, chain of 3, temperature 0/);
    assert.match(r.stdout, /tau \d+\.\d+ tokens\/pass/);
    assert.match(r.stdout, /speedup\s+\d+\.\d+x/);
    const dir = path.join(work, 'ckpt', 'evalrun', 'eval');
    const report = JSON.parse(fs.readFileSync(path.join(dir, 'report.json'), 'utf8'));
    assert.equal(report.prompts, 2);
    assert.equal(report.settings.mode, 'chain');
    assert.equal(report.settings.checkpoint, path.join(work, 'ckpt', 'evalrun', 'step-5'));
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
    // The draft guesses well, so the accept lengths say something: most passes accept, some the whole chain.
    const h: number[] = ra.acceptLengthHistogram;
    const passes = h.reduce((x, y) => x + y, 0);
    assert.ok(h[0] < passes / 3 && h[4] > 0 && ra.tau > 2, `accept length histogram ${h}, tau ${ra.tau}`);
    const bad = run('--draft-onnx', ckpt);
    assert.equal(bad.status, 1);
    assert.match(bad.stderr, /step-5: not an exported ONNX draft/);
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
