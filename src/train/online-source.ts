// The online FeatureSource: the target runs per batch and computes the features that capture would have
// stored. Same sample order and the same seeded batch order as the Arrow store, so a run gives the same
// losses online and offline.
//
// With a store (training.online_store), what the first epoch computes is also written, as capture writes
// it, into per-rank shards merged into one manifest (RankStoreWriter), and later epochs read it back
// instead of running the target. The store's sample order is the first epoch's: rank r's share of the
// epoch-0 permutation (positions r, r+N, ... as rankSlice gives them, including the samples dropLast
// leaves out of training, which are computed for the store only) cut into shards of samples_per_shard,
// rank 0's shards first, then rank 1's, and so on. So a rank writes its shards as it trains, holding
// at most one shard in memory. A resumed run keeps the shards already written and computes the rest; a
// complete store (written online, or captured offline in data-set order) serves every epoch.
import type { AnswerExtractor } from '../data/answers.ts';
import { computeFeatures, type TokenizedSample } from '../capture/features.ts';
import type { Tokenizer } from '../io/tokenizer.ts';
import type { Collective } from '../parallel/collective.ts';
import type { BatchOptions, FeatureSample, FeatureSource } from '../store/feature-source.ts';
import { readManifest, MANIFEST_FILE, StoreError, type StoreExpectation } from '../store/manifest.ts';
import { RankStoreWriter } from '../store/rank-writer.ts';
import { ArrowStore } from '../store/reader.ts';
import { epochPlan, permutation, rankSlice, readAhead } from '../store/sampler.ts';
import { readShardInfo } from '../store/shard-info.ts';
import { type EncodedRow, idsSha256, type StoreMetaInput } from '../store/shard-file.ts';
import type { TargetModel } from '../target/runtime.ts';
import fs from 'node:fs';
import path from 'node:path';

export interface OnlineStoreOptions {
  /** The store folder (<data.store>/train). */
  dir: string;
  meta: StoreMetaInput;
  identity: StoreExpectation;
  collective: Collective;
  /** Seed of the epoch order (the trainer's). */
  seed: number;
  /** Samples per target forward for samples that only the store needs. */
  batchSize: number;
  /** Rank 0, once the store is complete (e.g. to save the draft vocabulary beside it). */
  onComplete?: () => void;
  log: (m: string) => void;
}

/** A shard of a store: where it starts and which samples (indices into the data set) it holds, in order. */
export interface PlannedShard {
  firstSample: number;
  members: Int32Array;
  rank: number;
}

/** The online store's layout (see the file comment): each rank's epoch-0 sequence in shards, rank by rank. */
export function firstEpochPlan(n: number, seed: number, worldSize: number, samplesPerShard: number): PlannedShard[] {
  const order = permutation(n, seed, 0);
  const plan: PlannedShard[] = [];
  let first = 0;
  for (let r = 0; r < worldSize; r++) {
    const seq = rankSlice(order, r, worldSize, false);
    for (let k = 0; k < seq.length; k += samplesPerShard) {
      const members = seq.subarray(k, k + samplesPerShard);
      plan.push({ firstSample: first, members, rank: r });
      first += members.length;
    }
  }
  return plan;
}

/** Capture's layout: shard j holds samples [jS, (j+1)S) of the data set. */
export function dataSetPlan(n: number, samplesPerShard: number): PlannedShard[] {
  const plan: PlannedShard[] = [];
  for (let f = 0; f < n; f += samplesPerShard)
    plan.push({ firstSample: f, members: Int32Array.from({ length: Math.min(samplesPerShard, n - f) }, (_, k) => f + k), rank: 0 });
  return plan;
}

export class OnlineFeatures implements FeatureSource {
  readonly size: number;
  /** The finished store, and where each sample sits in it. */
  private stored: { store: ArrowStore; position: Int32Array } | null = null;

  constructor(
    private readonly model: TargetModel,
    private readonly tok: Tokenizer,
    private readonly samples: TokenizedSample[],
    private readonly auxLayerIds: number[],
    private readonly answerExtractor: AnswerExtractor,
    private readonly storeOptions: OnlineStoreOptions | null = null,
  ) {
    this.size = samples.length;
  }

  /** Runs the target over a set of samples at once (one padded batch). */
  compute(indices: ArrayLike<number>): FeatureSample[] {
    return computeFeatures(
      this.model,
      this.tok,
      Array.from(indices, (i) => this.samples[i]),
      this.auxLayerIds,
      this.answerExtractor,
    );
  }

  async get(index: number): Promise<FeatureSample> {
    return this.stored ? this.stored.store.get(this.stored.position[index]) : this.compute([index])[0];
  }

  async *batches(opts: BatchOptions): AsyncGenerator<FeatureSample[]> {
    const s = this.storeOptions;
    if (s && !this.stored) await this.openComplete(s);
    if (s && !this.stored && opts.epoch === 0) {
      yield* this.firstEpoch(s, opts);
      return;
    }
    if (s && !this.stored) await this.finishStore(s, 0, null); // resumed past epoch 0 with an unfinished store
    const { mine, batches } = epochPlan(this.size, opts);
    const B = opts.batchSize;
    const first = opts.startBatch ?? 0;
    const stored = this.stored;
    // Computed on this thread batch by batch (nothing to read ahead), or read from the store as ArrowStore reads.
    if (!stored) {
      for (let b = first; b < batches; b++) yield this.compute(mine.subarray(b * B, (b + 1) * B));
      return;
    }
    const read = (b: number) => Promise.all(Array.from(mine.subarray(b * B, (b + 1) * B), (i) => stored.store.get(stored.position[i])));
    yield* readAhead(first, batches, read);
  }

  async close(): Promise<void> {
    await this.stored?.store.close();
  }

  /** Epoch 0 while the store is being written: train on computed features, keep them shard by shard. */
  private async *firstEpoch(s: OnlineStoreOptions, opts: BatchOptions): AsyncGenerator<FeatureSample[]> {
    const { rank, worldSize } = s.collective;
    if (
      opts.seed !== s.seed ||
      (opts.worldSize ?? 1) !== worldSize ||
      (opts.rank ?? 0) !== rank ||
      !opts.shuffle ||
      (opts.dropLast ?? true) !== true
    )
      throw new Error("online store: the first epoch must be read shuffled with the store's seed, ranks and dropLast");
    const writer = await this.openWriter(s);
    const B = opts.batchSize;
    const train = rankSlice(permutation(this.size, s.seed, 0), rank, worldSize, true);
    const nBatches = Math.floor(train.length / B);
    const start = Math.min(opts.startBatch ?? 0, nBatches);
    // Samples trained on before a resume whose shard was not written yet.
    await this.fill(writer, 0, start * B);
    if (start >= nBatches) await this.finishStore(s, nBatches * B, writer);
    for (let b = start; b < nBatches; b++) {
      const feats = this.compute(train.subarray(b * B, (b + 1) * B));
      for (let k = 0; k < feats.length; k++) await writer.keep(b * B + k, feats[k]);
      // The store is finished before the last batch is handed over: every rank reaches this point together
      // (equal batch counts), and a trainer that stops at its last step does not skip it.
      if (b === nBatches - 1) await this.finishStore(s, nBatches * B, writer);
      yield feats;
    }
  }

  /** Computes and keeps the positions [from, to) of this rank's sequence whose shard is not written yet. */
  private async fill(writer: ShardKeeper, from: number, to: number): Promise<void> {
    const todo: number[] = [];
    for (let p = from; p < to; p++) if (writer.wanted(p)) todo.push(p);
    const B = this.storeOptions!.batchSize;
    for (let i = 0; i < todo.length; i += B) {
      const pos = todo.slice(i, i + B);
      const feats = this.compute(pos.map((p) => writer.sampleAt(p)));
      for (let k = 0; k < pos.length; k++) await writer.keep(pos[k], feats[k]);
    }
  }

  /** Computes the rest of this rank's shards, then rank 0 completes the manifest; every rank opens the store. */
  private async finishStore(s: OnlineStoreOptions, from: number, open: ShardKeeper | null): Promise<void> {
    const writer = open ?? (await this.openWriter(s));
    await this.fill(writer, from, writer.length);
    s.collective.barrier(); // every rank's shards are on disk
    if (s.collective.rank === 0) {
      const m = await writer.writer.finish(writer.plan.length, this.size);
      s.log(
        `online store ${s.dir}: complete, ${m.total_samples} samples, ${m.total_tokens} tokens in ${m.shards.length} shards; later epochs read it`,
      );
      s.onComplete?.();
    }
    s.collective.barrier();
    this.stored = { store: await ArrowStore.open(s.dir, s.identity), position: positions(writer.plan, this.size) };
  }

  private async openWriter(s: OnlineStoreOptions): Promise<ShardKeeper> {
    const { rank, worldSize } = s.collective;
    // Rank 0 creates (or reopens) the store before the others look at it.
    const first = rank === 0 ? await RankStoreWriter.open(s.dir, s.meta, 0) : null;
    s.collective.barrier();
    const writer = first ?? (await RankStoreWriter.open(s.dir, s.meta, rank));
    const plan = firstEpochPlan(this.size, s.seed, worldSize, s.meta.samples_per_shard);
    const keeper = new ShardKeeper(
      writer,
      plan,
      rank,
      this.samples.map((x) => x.id),
    );
    await keeper.init();
    if (rank === 0 && writer.current.total_samples > 0)
      s.log(`online store ${s.dir}: resuming; ${writer.current.total_samples} samples are in finished shards`);
    return keeper;
  }

  /** Opens the store when it is complete, in either layout (written online, or captured in data-set order). */
  private async openComplete(s: OnlineStoreOptions): Promise<void> {
    if (!fs.existsSync(path.join(s.dir, MANIFEST_FILE)) || !readManifest(s.dir).complete) return;
    const store = await ArrowStore.open(s.dir, s.identity);
    const ids = this.samples.map((x) => x.id);
    const S = store.manifest.samples_per_shard;
    for (const plan of [firstEpochPlan(this.size, s.seed, s.collective.worldSize, S), dataSetPlan(this.size, S)]) {
      if (await holds(store, plan, ids)) {
        this.stored = { store, position: positions(plan, this.size) };
        s.log(`online store ${s.dir}: complete; every epoch reads it`);
        return;
      }
    }
    await store.close();
    throw new StoreError(
      `${s.dir}: a complete store of other samples (other data, limit, seed or workers); delete it or set another data.store`,
    );
  }
}

/** Where each sample of the data set sits in a store laid out by `plan`. */
function positions(plan: PlannedShard[], n: number): Int32Array {
  const pos = new Int32Array(n).fill(-1);
  for (const sh of plan) sh.members.forEach((m, k) => (pos[m] = sh.firstSample + k));
  return pos;
}

/** Whether a store's shards hold exactly the planned samples (shard sizes and sample-id hashes). */
async function holds(store: ArrowStore, plan: PlannedShard[], ids: string[]): Promise<boolean> {
  const m = store.manifest;
  if (m.shards.length !== plan.length || m.total_samples !== ids.length) return false;
  for (let j = 0; j < plan.length; j++) {
    const e = m.shards[j];
    if (e.first_sample !== plan[j].firstSample || e.samples !== plan[j].members.length) return false;
    const info = await readShardInfo(path.join(store.dir, e.file));
    if (info.idsSha256 !== idsSha256(Array.from(plan[j].members, (i) => ids[i]))) return false;
  }
  return true;
}

/**
 * One rank's shards of the first-epoch plan: position p of the rank's sequence goes to its shard
 * floor(p / S); features arrive in increasing position order and a shard is written when it is full.
 */
class ShardKeeper {
  private readonly shards: { index: number; shard: PlannedShard; done: boolean }[];
  private buffer: EncodedRow[] = [];
  private readonly S: number;
  readonly length: number;

  constructor(
    readonly writer: RankStoreWriter,
    readonly plan: PlannedShard[],
    rank: number,
    private readonly ids: string[],
  ) {
    this.S = writer.current.samples_per_shard;
    this.shards = plan.map((shard, index) => ({ index, shard, done: false })).filter((x) => x.shard.rank === rank);
    this.length = this.shards.reduce((a, x) => a + x.shard.members.length, 0);
  }

  async init(): Promise<void> {
    for (const x of this.shards) {
      const ids = Array.from(x.shard.members, (i) => this.ids[i]);
      x.done = (await this.writer.finished(x.index, x.shard.firstSample, x.shard.members.length, ids)) !== null;
    }
  }

  wanted(p: number): boolean {
    return !this.shards[Math.floor(p / this.S)].done;
  }

  sampleAt(p: number): number {
    return this.shards[Math.floor(p / this.S)].shard.members[p % this.S];
  }

  async keep(p: number, f: FeatureSample): Promise<void> {
    const x = this.shards[Math.floor(p / this.S)];
    if (x.done) return;
    if (p % this.S !== this.buffer.length) throw new Error(`online store: position ${p} arrived out of order`);
    this.buffer.push(this.writer.encode(f, x.shard.firstSample + this.buffer.length));
    if (this.buffer.length === x.shard.members.length) {
      await this.writer.write(x.index, x.shard.firstSample, this.buffer);
      this.buffer = [];
      x.done = true;
    }
  }
}
