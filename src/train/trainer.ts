// `specforge train`: one data-parallel rank of EAGLE-3 draft training (see src/cli/train.ts). Each rank
// reads its share of every epoch's seeded batch order from a FeatureSource (the Arrow store offline, the
// target itself online; sources.ts), runs the TTT loss, all-reduces the gradients and applies the same
// AdamW update (step.ts), so replicas stay identical; rank 0 logs (metrics.ts into run-log.ts: metrics.jsonl,
// TensorBoard, curves.svg), evaluates (evaluate.ts), checkpoints (checkpoint.ts, keeping step-best) and
// writes the run summary (summary.ts). Every rank stops at the same step when training diverges
// (divergence.ts), naming a checkpoint that a healthy step ran from (checkpoint-trail.ts); a failed write
// (a full disk) stops it with one line naming the file and what the run keeps.
import path from 'node:path';
import { type BackendName, initBackend } from '../backend/backend.ts';
import { configureGemm } from '../backend/matmul.ts';
import { checkFits, explainOutOfMemory, peakRssBytes, wasmHeapBytes } from '../backend/memory.ts';
import { draftConfigFor } from '../draft/config.ts';
import { failedFile } from '../io/atomic.ts';
import { loadModelConfig } from '../io/hf-config.ts';
import { loadTokenizer } from '../io/tokenizer.ts';
import type { RankContext } from '../parallel/launch.ts';
import type { Recipe } from '../recipe/recipe.ts';
import { resolveAuxLayers } from '../store/identity.ts';
import { CheckpointError, pruneCheckpoints, restoreBest, saveTraining, startOrResume } from './checkpoint.ts';
import { CheckpointTrail } from './checkpoint-trail.ts';
import type { TrainingModel } from './collate.ts';
import { DivergenceGuard } from './divergence.ts';
import { type EvalMetrics, evaluate } from './evaluate.ts';
import { faultInjector } from './fault.ts';
import { TrainMetrics } from './metrics.ts';
import { AdamW, learningRate } from './optimizer.ts';
import { recipeFields, recipeKey, runDirOf } from './run-dir.ts';
import { CURVES_FILE, METRICS_FILE, RunLog, TENSORBOARD_DIR } from './run-log.ts';
import { openSources } from './sources.ts';
import { OptimizerStep, stepSchedule } from './step.ts';
import { type RunSummary, writeSummary } from './summary.ts';
import { TeacherHead } from './teacher-head.ts';

/** What every rank is launched with: the parsed recipe (plain data, so it crosses to worker threads as is). */
export interface TrainJob {
  recipe: Recipe;
  /** 'latest', a checkpoint folder, or null for a fresh run. */
  resume: string | null;
}

export interface TrainResult {
  runDir: string;
  steps: number;
  lastCheckpoint: string | null;
  eval: EvalMetrics | null;
  seconds: number;
  tokensPerSecond: number;
  /** Rank 0's peak resident memory, and its wasm heap (null on other backends), in bytes. */
  peakRss: number;
  wasmHeap: number | null;
  /** What <run>/summary.json holds (rank 0). */
  summary: RunSummary;
}

const MEMORY_HINT =
  'lower data.max_length, training.batch_size or training.chunk_tokens, or use a native backend (--backend node or node-gpu), which has no such limit';

/** Where a run stands, for the message of a failed write. */
interface Standing {
  step: number;
  checkpoint: string | null;
}

/** One rank of a training run: set up, train, finish. The launch resolves with rank 0's result. */
export async function runRank(ctx: RankContext): Promise<TrainResult> {
  const at: Standing = { step: 0, checkpoint: null };
  try {
    return await train(ctx, at);
  } catch (e) {
    const file = failedFile(e);
    if (!file) throw e;
    // The system's message for a failed write() names no file: one line that does, and what is kept.
    const kept = at.checkpoint ? `its checkpoints up to ${at.checkpoint} (--resume latest continues from it)` : 'no checkpoint';
    throw new Error(`${file}: cannot write (${(e as Error).message}); the run stopped at step ${at.step} and keeps ${kept}`);
  }
}

async function train(ctx: RankContext, at: Standing): Promise<TrainResult> {
  const { recipe: r, resume } = ctx.payload as TrainJob;
  const t = r.training;
  const { rank, worldSize } = ctx.collective;
  const log = rank === 0 ? ctx.log : () => {};
  await initBackend(r.runtime.backend as BackendName, log);
  await configureGemm(r.runtime.gemm, worldSize, log);

  // Set up: the target's parts the draft learns from, the data, the schedule, the draft and its optimizer.
  const config = loadModelConfig(r.model.target);
  const aux = resolveAuxLayers(r.model.aux_layer_ids, config.numLayers);
  const tok = loadTokenizer(r.model.target);
  const head = TeacherHead.load(r.model.target, config);
  const data = await openSources(r, { config, aux, tok }, ctx.collective, log);
  const draftConfig = draftConfigFor(config, aux, data.vocab.used.length, t.specexit);
  const schedule = stepSchedule(r, data.train.size, worldSize);
  const runDir = runDirOf(r);
  const opt = new AdamW({ beta1: t.beta1, beta2: t.beta2, weightDecay: t.weight_decay });
  const start = startOrResume({
    runDir,
    resume,
    config: draftConfig,
    opt,
    recipeKey: recipeKey(r),
    recipe: recipeFields(r),
    seed: r.runtime.seed,
    totalSteps: schedule.totalSteps,
    log,
  });
  const { draft, state } = start;
  const model: TrainingModel = {
    draft,
    head,
    vocab: { used: data.vocab.used, t2d: data.vocab.t2d },
    auxWidth: aux.length * config.hiddenSize,
    hidden: config.hiddenSize,
  };
  // What stays held for the whole run: the teacher, and the draft's weights, gradients and two AdamW moments.
  const trainable = draft.variables().reduce((n, v) => n + (v.trainable ? v.size : 0), 0);
  checkFits(
    `training's fixed part (target embedding and lm_head ${head.bytes} bytes; ${trainable} draft parameters x 4 copies)`,
    head.bytes + 16 * trainable,
    MEMORY_HINT,
  );
  const step = new OptimizerStep(model, opt, ctx.collective, r);
  log(
    `TTT loss and gradients: ${step.ortStep ? 'one ONNX Runtime graph per chunk' : 'tfjs ops'} (runtime.train_step ${r.runtime.train_step})`,
  );
  // Rank 0's record of the run, cut back to the step it starts from; the best checkpoint among what is kept.
  const runLog =
    rank === 0
      ? new RunLog(runDir, state.step, {
          tensorboard: t.tensorboard,
          title: `Training: ${path.basename(runDir)}`,
          totalSteps: schedule.totalSteps,
        })
      : null;
  let best = runLog ? restoreBest(runDir, state.step, runLog.evalTaus()) : null;
  if (rank === 0 && data.eval && t.save_interval % t.eval_interval !== 0)
    log(
      `note: training.save_interval ${t.save_interval} is not a multiple of eval_interval ${t.eval_interval}: only checkpoints at evaluated steps (and the last) can become step-best`,
    );
  const metrics = new TrainMetrics(runLog ? (row) => runLog.append(row) : null, t, worldSize);
  const fault = faultInjector(rank);
  let lastCheckpoint = start.resumedFrom;
  let lastEval: (EvalMetrics & { step: number }) | null = null;
  const due = (interval: number) => state.step % interval === 0 || state.step === schedule.totalSteps;
  const guard = new DivergenceGuard(t.divergence_factor);
  const trail = new CheckpointTrail(runDir, start.resumedFrom, t.keep_last, rank === 0);
  at.step = state.step;
  at.checkpoint = lastCheckpoint;
  /** Stops a diverged run at `step`; `everyRank`: every rank saw the same numbers and stops here together. */
  const stop = (step: number, why: string, everyRank: boolean): never => {
    const where = trail.diverged();
    // step-best may have pointed at the checkpoint set aside.
    if (runLog) restoreBest(runDir, state.step, runLog.evalTaus());
    if (everyRank) ctx.collective.barrier(); // the others wait until rank 0 has moved the files
    throw new Error(
      `step ${step}: ${why}; training diverged and stopped: ${where}. Lower training.learning_rate (${t.learning_rate}) or check the data, and start again (--overwrite, or another training.run_id)`,
    );
  };

  // Train: each epoch's batches from where the run stands; a step every accumulation_steps micro-batches.
  while (state.step < schedule.totalSteps) {
    const batches = data.train.batches({
      batchSize: t.batch_size,
      shuffle: true,
      seed: r.runtime.seed,
      epoch: state.epoch,
      rank,
      worldSize,
      startBatch: state.batchInEpoch,
      balance: true,
    });
    for await (const samples of batches) {
      fault.beforeMicroBatch(state.step);
      let micro: ReturnType<typeof step.microBatch>;
      try {
        micro = step.microBatch(samples);
      } catch (e) {
        const T = Math.max(...samples.map((x) => x.inputIds.length));
        throw explainOutOfMemory(e, `step ${state.step}: a micro-batch of ${samples.length} samples up to ${T} tokens`, MEMORY_HINT);
      }
      // Metrics over the whole global batch: mean of the ranks' losses, summed accuracy and token counts.
      const sums = micro.sums.allReduce(ctx.collective);
      // A non-finite loss on any rank stops every rank before anything is applied.
      const bad = guard.microBatch(sums.loss.reduce((a, b) => a + b, 0) + sums.signal.reduce((a, b) => a + b, 0));
      if (bad) stop(state.step + 1, bad, true);
      metrics.add(sums);
      state.batchInEpoch++;
      if (!step.ready) continue;

      state.learningRate = learningRate(state.step, schedule);
      const gradNorm = step.update(state.learningRate);
      state.step++;
      at.step = state.step;
      fault.afterUpdate(state.step, draft.variables());
      const diverged = guard.step(metrics.endStep(), gradNorm);
      if (diverged) {
        metrics.writeTrain(state, gradNorm); // the step that diverged stays in metrics.jsonl for a look
        stop(state.step, diverged, true);
      }
      trail.proven();
      ctx.progress(state.step, { total: schedule.totalSteps, ...metrics.progress() });
      if (due(t.log_interval)) metrics.writeTrain(state, gradNorm);
      if (rank === 0 && data.eval && due(t.eval_interval)) {
        lastEval = { ...(await evaluate(data.eval, model, t)), step: state.step };
        metrics.writeEval(state, lastEval);
        // Judged on rank 0 alone (the others do not evaluate): they stop when the launch sees its error.
        const heldOut = guard.evaluation(lastEval.loss);
        if (heldOut) stop(state.step, heldOut, false);
        runLog!.drawCurves();
        log(
          `eval @ step ${state.step}: acc ${lastEval.acc.map((a) => a.toFixed(3)).join(' ')}; simulated acceptance length ${lastEval.tau.toFixed(3)}`,
        );
      }
      if (due(t.save_interval)) {
        if (rank === 0) {
          // A checkpoint of an evaluated step that beats every earlier one becomes step-best.
          const tau = lastEval?.step === state.step ? lastEval.tau : null;
          const isBest = tau !== null && (best === null || tau > best.tau);
          try {
            // Until a step has run from the new checkpoint, the one before it stays: it is the run's good one.
            saveTraining(runDir, draftConfig, draft, data.vocab, opt, state, t.keep_last, isBest, trail.spare());
          } catch (e) {
            if (!(e instanceof CheckpointError)) throw e;
            // Weights or moments that are not finite: nothing was written; the run stops naming a good checkpoint.
            stop(state.step, e.message, false);
          }
          if (isBest) best = { step: state.step, tau };
        }
        // Every rank keeps the same account of which checkpoint is pending (rank 0 alone writes it).
        trail.written(path.join(runDir, `step-${state.step}`));
        lastCheckpoint = path.join(runDir, `step-${state.step}`);
        at.checkpoint = lastCheckpoint;
        ctx.collective.barrier();
      }
      if (state.step >= schedule.totalSteps) break;
    }
    if (state.step >= schedule.totalSteps) break;
    state.epoch++;
    state.batchInEpoch = 0;
  }

  // Finish: keep_last as set (the last checkpoint has no step after it to prove it; it was checked finite),
  // the picture of the whole run (also for a run without held-out data) and the summary.
  if (rank === 0 && lastCheckpoint && lastCheckpoint !== start.resumedFrom) pruneCheckpoints(runDir, t.keep_last, lastCheckpoint);
  step.dispose();
  const seconds = metrics.seconds();
  head.dispose();
  await data.close();
  runLog?.drawCurves();
  const bestDir = best && path.join(runDir, `step-${best.step}`);
  const summary: RunSummary = {
    run_dir: runDir,
    steps: state.step,
    total_steps: schedule.totalSteps,
    resumed_from: start.resumedFrom,
    checkpoint: bestDir ?? lastCheckpoint,
    best: best && bestDir ? { ...best, checkpoint: bestDir } : null,
    last_checkpoint: lastCheckpoint,
    // A resumed run that evaluates nothing more still reports the last evaluation it kept.
    last_eval: lastEval ?? runLog?.lastEval() ?? null,
    tokens: metrics.totalTokens,
    tokens_per_s: metrics.totalTokens / seconds,
    wall_seconds: seconds,
    peak_rss_bytes: peakRssBytes(),
    wasm_heap_bytes: wasmHeapBytes(),
    files: {
      metrics: path.join(runDir, METRICS_FILE),
      curves: path.join(runDir, CURVES_FILE),
      tensorboard: t.tensorboard ? path.join(runDir, TENSORBOARD_DIR) : null,
    },
  };
  if (rank === 0) writeSummary(summary);
  return {
    runDir,
    steps: state.step,
    lastCheckpoint,
    eval: summary.last_eval,
    seconds,
    tokensPerSecond: summary.tokens_per_s,
    peakRss: summary.peak_rss_bytes,
    wasmHeap: summary.wasm_heap_bytes,
    summary,
  };
}
