// Measures the shipped tiny target: greedy answer accuracy on held-out reasoning prompts (full thinking),
// the thinking tokens spent after the answer is first derived (what an early exit can save), and greedy
// next-token agreement and perplexity on the held-out chat split. Writes quality.json beside the model.
//
//   npm run tiny:eval -- [--model data/tiny-target] [--reasoning 400] [--chat 400] [--engine ort|tfjs]
import path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import yargs from 'yargs';
import { hideBin } from 'yargs/helpers';
import { BACKENDS, type BackendName, initBackend } from '../backend/backend.ts';
import { renderChatML } from '../data/templates.ts';
import { readAllConversations } from '../data/datasets.ts';
import { writeAtomic } from '../io/atomic.ts';
import { type Tokenizer, loadTokenizer } from '../io/tokenizer.ts';
import { generate } from '../target/generate.ts';
import { loadTarget, TARGET_ENGINES, type TargetEngine } from '../target/load.ts';
import { progress } from '../util/progress.ts';
import { CORPUS_DIR, REPO_ROOT, TINY_TARGET_DIR } from './config.ts';

/** The number after the last "####", or null. */
export function extractGsm8kAnswer(text: string): string | null {
  const m = [...text.matchAll(/####\s*(-?[\d,.]+)/g)].pop();
  return m ? m[1].replace(/,/g, '') : null;
}

/**
 * Thinking tokens after the step where `answer` is first derived ("= answer" in a step), not counting
 * the paragraph break that ends that step nor </think>; null when the thinking never derives it or never ends.
 */
export function tokensAfterDerivation(ids: number[], tok: Tokenizer, answer: string): number | null {
  const close = ids.indexOf(tok.requireId('</think>'));
  if (close < 0) return null;
  const split = tok.requireId('\n\n');
  // Walk the thinking step by step (steps end at a paragraph-break token).
  let stepStart = 0;
  for (let i = 0; i <= close; i++) {
    if (ids[i] === split || i === close) {
      const step = tok.decode(ids.slice(stepStart, i));
      if (new RegExp(`=\\s*${answer}(?!\\d)`).test(step)) return Math.max(0, close - i - 1);
      stepStart = i + 1;
    }
  }
  return null;
}

async function main() {
  const args = await yargs(hideBin(process.argv))
    .option('model', { type: 'string', default: TINY_TARGET_DIR })
    .option('corpus', { type: 'string', default: CORPUS_DIR })
    .option('reasoning', { type: 'number', default: 400, describe: 'held-out reasoning prompts to answer' })
    .option('chat', { type: 'number', default: 400, describe: 'held-out chat conversations to score' })
    .option('batch', { type: 'number', default: 32 })
    .option('backend', { choices: BACKENDS, default: 'auto' as BackendName })
    .option('engine', { choices: TARGET_ENGINES, default: 'ort' as TargetEngine, describe: 'what runs the model' })
    .strict()
    .parseAsync();
  await initBackend(args.backend, console.log);
  const tok = loadTokenizer(args.model);
  const model = await loadTarget(args.model, { engine: args.engine, cacheDir: path.join(REPO_ROOT, '.cache') });
  const eos = tok.requireId('<|im_end|>');

  // Reasoning: greedy answers with full thinking.
  const problems = await readAllConversations(path.join(args.corpus, 'reasoning-eval.jsonl'), {
    format: 'sharegpt',
    limit: args.reasoning,
  });
  let correct = 0;
  let finished = 0;
  const after: number[] = [];
  const afterInData: number[] = [];
  const bar = progress('reasoning eval', problems.length, 'prompt');
  for (let i = 0; i < problems.length; i += args.batch) {
    const chunk = problems.slice(i, i + args.batch);
    const prompts = chunk.map(
      (p) =>
        renderChatML(
          p.messages.filter((m) => m.role !== 'assistant'),
          tok,
          { addGenerationPrompt: true },
        ).ids,
    );
    const outs = generate(model, prompts, { maxNewTokens: 256, stopIds: [eos] });
    chunk.forEach((p, j) => {
      const answer = String(p.extra.answer);
      if (outs[j].includes(eos)) finished++;
      if (extractGsm8kAnswer(tok.decode(outs[j])) === answer) correct++;
      const n = tokensAfterDerivation(outs[j], tok, answer);
      if (n !== null) after.push(n);
      const ref = tokensAfterDerivation(tok.encode(p.messages.find((m) => m.role === 'assistant')!.content), tok, answer);
      if (ref !== null) afterInData.push(ref);
    });
    bar.update(Math.min(i + args.batch, problems.length), { accuracy: correct / Math.min(i + args.batch, problems.length) });
  }
  bar.stop();

  // Chat: teacher-forced next-token agreement and perplexity on assistant tokens.
  const convs = await readAllConversations(path.join(args.corpus, 'chat-eval.jsonl'), { format: 'sharegpt', limit: args.chat });
  let agree = 0;
  let count = 0;
  let nll = 0;
  for (const c of convs) {
    const t = renderChatML(c.messages, tok);
    const out = model.forward({ ids: [t.ids] });
    const logp = tf.tidy(() => tf.logSoftmax(out.logits!)).dataSync() as Float32Array;
    tf.dispose([out.logits!, out.finalNormed]);
    const V = model.config.vocabSize;
    for (let pos = 1; pos < t.ids.length; pos++) {
      if (!t.lossMask[pos]) continue;
      const row = logp.subarray((pos - 1) * V, pos * V);
      let best = 0;
      for (let v = 1; v < V; v++) if (row[v] > row[best]) best = v;
      agree += best === t.ids[pos] ? 1 : 0;
      nll -= row[t.ids[pos]];
      count++;
    }
  }
  const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / Math.max(1, xs.length);
  const quality = {
    reasoning_prompts: problems.length,
    reasoning_accuracy: correct / problems.length,
    reasoning_finished: finished / problems.length,
    thinking_tokens_after_answer_generated: mean(after),
    thinking_tokens_after_answer_in_data: mean(afterInData),
    chat_conversations: convs.length,
    chat_assistant_tokens: count,
    chat_next_token_agreement: agree / count,
    chat_perplexity: Math.exp(nll / count),
  };
  console.table(quality);
  writeAtomic(path.join(args.model, 'quality.json'), [JSON.stringify(quality, null, 2) + '\n']);
  model.dispose();
}

if (import.meta.url === `file://${process.argv[1]}`) await main();
