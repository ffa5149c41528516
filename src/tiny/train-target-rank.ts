// One data-parallel rank of the tiny-target training (see train-target.ts for the command).
// Every rank holds the whole model and optimizer; each step it takes its rows of the global batch,
// all-reduces the gradients and applies the same update, so the replicas stay identical.
import fs from 'node:fs';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { type BackendName, initBackend } from '../backend/backend.ts';
import type { Tokenized } from '../data/chat.ts';
import { renderChatML } from '../data/templates.ts';
import { readAllConversations } from '../data/datasets.ts';
import { parseModelConfig } from '../io/hf-config.ts';
import { SafetensorsFile, SafetensorsFolder, type StoredTensor, writeSafetensors } from '../io/safetensors.ts';
import { writeAtomic } from '../io/atomic.ts';
import { loadTokenizer } from '../io/tokenizer.ts';
import type { RankContext } from '../parallel/launch.ts';
import { initTargetWeights } from './init-weights.ts';
import { TfjsTarget } from '../target/tfjs-target.ts';
import { lengthBucketedBatches, lmLoss, type LmBatch, shardBatch } from './lm.ts';
import { AdamW, clipByGlobalNorm, learningRate } from '../train/optimizer.ts';
import { Rng } from '../util/random.ts';
import { type TargetSize, targetConfig } from './config.ts';
import { OrtLmStep } from './ort-lm.ts';
import { ortWorker, stopOrtGemm, useOrtGemm } from '../backend/matmul.ts';

export interface TrainTargetArgs {
  model: TargetSize;
  /** ort: the loss and gradients as one ONNX Runtime graph (lm-graph.ts); tfjs: taped tfjs ops. */
  engine: 'ort' | 'tfjs';
  /** ONNX Runtime intra-op threads per rank. */
  threads: number;
  steps: number;
  /** Start from this model folder's weights instead of a fresh initialisation (a later training stage). */
  init?: string;
  /** Global batches already trained on by earlier stages: this run's step s takes batch stepOffset + s. */
  stepOffset?: number;
  batch: number;
  /** Corpus files trained on (default both train splits). */
  splits?: string[];
  lr: number;
  warmup: number;
  clip: number;
  maxLength: number;
  seed: number;
  backend: BackendName;
  corpus: string;
  tokenizer: string;
  out: string;
  state: string;
  saveEvery: number;
  fresh: boolean;
}

export interface TrainTargetResult {
  backend: string;
  stepsRun: number;
  startStep: number;
  minutes: number;
  finalLoss: number;
  tokensPerSecond: number;
}

export async function runRank(ctx: RankContext): Promise<TrainTargetResult> {
  const a = ctx.payload as TrainTargetArgs;
  const { rank, worldSize } = ctx.collective;
  const backend = await initBackend(a.backend, rank === 0 ? ctx.log : undefined);
  const tok = loadTokenizer(a.tokenizer);
  const eos = tok.requireId('<|im_end|>');
  const pad = tok.requireId('<|endoftext|>');
  const rawConfig = targetConfig(a.model, tok.vocabSize, { eos, pad });
  const config = parseModelConfig(rawConfig);

  // Both train splits, rendered with the chat template; loss on assistant tokens.
  const samples: Tokenized[] = [];
  for (const split of a.splits ?? ['chat-train.jsonl', 'reasoning-train.jsonl']) {
    for (const rec of await readAllConversations(path.join(a.corpus, split), { format: 'sharegpt' })) {
      const t = renderChatML(rec.messages, tok);
      samples.push({ ids: t.ids.slice(0, a.maxLength), lossMask: t.lossMask.slice(0, a.maxLength) });
    }
  }
  const epochBatches = Math.floor(samples.length / a.batch);
  if (rank === 0)
    ctx.log(
      `${samples.length} conversations; ${a.steps} steps of ${a.batch} = ${(a.steps / epochBatches).toFixed(2)} epochs on ${worldSize} rank(s)`,
    );

  // Global step s's batch is fixed by the seed (epoch e shuffles with its own Rng), so a resumed run and
  // every rank see exactly the batches of an uninterrupted single-rank run.
  let cachedEpoch = -1;
  let epochOrder: LmBatch[] = [];
  const batchAt = (step: number): LmBatch => {
    const epoch = Math.floor(step / epochBatches);
    if (epoch !== cachedEpoch) {
      epochOrder = lengthBucketedBatches(samples, a.batch, pad, new Rng(a.seed * 7919 + epoch));
      cachedEpoch = epoch;
    }
    return epochOrder[step % epochBatches];
  };

  const stateFile = path.join(a.state, 'state.safetensors');
  let start = 0;
  let weights: Map<string, StoredTensor>;
  if (a.init) {
    const src = new SafetensorsFolder(a.init);
    weights = new Map(src.names().map((n) => [n, src.read(n)]));
  } else weights = initTargetWeights(config, a.seed);
  let moments: { m: Map<string, Float32Array>; v: Map<string, Float32Array> } | null = null;
  if (!a.fresh && fs.existsSync(stateFile)) {
    const f = new SafetensorsFile(stateFile);
    if (
      f.metadata.config !== JSON.stringify(rawConfig) ||
      Number(f.metadata.total_steps) !== a.steps ||
      Number(f.metadata.seed) !== a.seed ||
      Number(f.metadata.batch) !== a.batch
    ) {
      throw new Error(`${stateFile}: saved by a run with another config, steps, batch or seed; pass --fresh to start over`);
    }
    start = Number(f.metadata.step);
    weights = new Map();
    moments = { m: new Map(), v: new Map() };
    for (const n of f.names()) {
      const t = f.read(n);
      if (n.startsWith('adam_m.')) moments.m.set(n.slice(7), t.data as Float32Array);
      else if (n.startsWith('adam_v.')) moments.v.set(n.slice(7), t.data as Float32Array);
      else weights.set(n, t);
    }
    if (rank === 0) ctx.log(`resuming at step ${start} from ${stateFile}`);
  }
  const model = TfjsTarget.fromWeights(config, { has: (n) => weights.has(n), read: (n) => weights.get(n)! }, a.state, { trainable: true });
  weights = new Map();
  const vars = model.variables();
  const hfName = (v: tf.Variable) => v.name.split('#')[0];
  const opt = new AdamW({ beta1: 0.9, beta2: 0.95, weightDecay: 0.01 });
  if (moments) {
    const byVar = (src: Map<string, Float32Array>) => new Map(vars.map((v) => [v.name, src.get(hfName(v))!]));
    opt.load({ step: start, m: byVar(moments.m), v: byVar(moments.v) }, vars);
  }
  const schedule = { lr: a.lr, warmupSteps: a.warmup, totalSteps: a.steps, minLrRatio: 0.1 };

  const saveState = (step: number) => {
    const tensors = new Map<string, StoredTensor>();
    for (const [n, w] of model.exportWeights()) tensors.set(n, { dtype: 'F32', ...w });
    const { m, v } = opt.state();
    for (const p of vars) {
      tensors.set(`adam_m.${hfName(p)}`, { dtype: 'F32', shape: p.shape, data: m.get(p.name)! });
      tensors.set(`adam_v.${hfName(p)}`, { dtype: 'F32', shape: p.shape, data: v.get(p.name)! });
    }
    writeSafetensors(stateFile, tensors, {
      step: String(step),
      total_steps: String(a.steps),
      seed: String(a.seed),
      batch: String(a.batch),
      config: JSON.stringify(rawConfig),
    });
  };

  let ortStep: OrtLmStep | null = null;
  if (a.engine === 'ort') {
    await useOrtGemm(a.threads);
    ortStep = new OrtLmStep(ortWorker()!, model);
  }
  /** This rank's loss (divided by the global count) and its gradients by variable name. */
  const gradients = (mine: LmBatch, denominator: number): { loss: number; grads: Record<string, tf.Tensor> } => {
    if (ortStep) return ortStep.gradients(mine, denominator);
    const { value, grads } = tf.variableGrads(() => lmLoss(model, mine, denominator), vars);
    const loss = value.dataSync()[0];
    value.dispose();
    return { loss, grads };
  };

  const sizes = vars.map((v) => v.size);
  const flat = new Float32Array(sizes.reduce((x, y) => x + y, 0));
  let emaLoss = NaN;
  let tokensSeen = 0;
  const t0 = Date.now();
  for (let step = start; step < a.steps; step++) {
    const global = batchAt((a.stepOffset ?? 0) + step);
    const mine = shardBatch(global, rank, worldSize);
    const { loss: myLoss, grads } = gradients(mine, Math.max(global.tokens, 1));
    // Sum gradients (and the loss) over ranks: each rank's loss is already divided by the global count.
    let off = 0;
    vars.forEach((v) => {
      flat.set(grads[v.name].dataSync() as Float32Array, off);
      off += v.size;
    });
    const lossBuf = Float32Array.of(myLoss);
    tf.dispose(Object.values(grads));
    ctx.collective.allReduceSum(flat);
    ctx.collective.allReduceSum(lossBuf);
    const summed: Record<string, tf.Tensor> = {};
    off = 0;
    vars.forEach((v) => {
      summed[v.name] = tf.tensor(flat.subarray(off, off + v.size), v.shape);
      off += v.size;
    });
    const clipped = clipByGlobalNorm(summed, a.clip);
    const lr = learningRate(step, schedule);
    opt.apply(vars, clipped.grads, lr);
    tf.dispose(Object.values(clipped.grads));
    const loss = lossBuf[0];
    if (!Number.isFinite(loss)) throw new Error(`step ${step}: loss is ${loss}; lower --lr`);
    emaLoss = Number.isNaN(emaLoss) ? loss : 0.98 * emaLoss + 0.02 * loss;
    tokensSeen += global.ids.length * global.ids[0].length;
    const tokPerS = Math.round(tokensSeen / ((Date.now() - t0) / 1000));
    if (rank === 0) {
      ctx.progress(step + 1, { loss: emaLoss, lr, 'tok/s': tokPerS, 'grad-norm': clipped.norm });
      if ((step + 1) % a.saveEvery === 0 && step + 1 < a.steps) saveState(step + 1);
    }
  }
  const minutes = (Date.now() - t0) / 60000;
  if (ortStep) stopOrtGemm();

  if (rank === 0) {
    // The model folder: bf16 weights, config, generation config and the tokenizer files.
    fs.mkdirSync(a.out, { recursive: true });
    if (path.resolve(a.out) !== path.resolve(a.tokenizer)) {
      for (const f of ['tokenizer.json', 'tokenizer_config.json']) fs.copyFileSync(path.join(a.tokenizer, f), path.join(a.out, f));
    }
    const out = new Map<string, StoredTensor>();
    for (const [n, w] of model.exportWeights()) out.set(n, { dtype: 'BF16', ...w });
    writeSafetensors(path.join(a.out, 'model.safetensors'), out, { format: 'pt' });
    writeAtomic(path.join(a.out, 'config.json'), [JSON.stringify(rawConfig, null, 2) + '\n']);
    writeAtomic(path.join(a.out, 'generation_config.json'), [
      JSON.stringify({ eos_token_id: eos, pad_token_id: pad, do_sample: false, max_new_tokens: 256 }, null, 2) + '\n',
    ]);
    fs.rmSync(stateFile, { force: true });
  }
  return {
    backend,
    stepsRun: a.steps - start,
    startStep: start,
    minutes,
    finalLoss: emaLoss,
    tokensPerSecond: Math.round(tokensSeen / (minutes * 60)),
  };
}
