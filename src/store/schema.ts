// The row schema of the offline hidden-state store: one captured sample per row of an Arrow IPC shard.
//
// | column            | Arrow type                    | length per row | meaning                                                        |
// |-------------------|-------------------------------|----------------|----------------------------------------------------------------|
// | sample_id         | Utf8                          | -              | the sample's id in the source data set                         |
// | input_ids         | List<Int32>                   | T              | token ids (prompt + response, after the chat template)         |
// | loss_mask         | List<Uint8>                   | T              | 1 where the draft is trained to predict the token, else 0      |
// | aux_hidden        | List<Float16 or Float32>      | T * K*Ht       | row-major [T, K*Ht]: the K auxiliary decoder-layer outputs     |
// |                   |                               |                | (K = aux_layer_ids.length, 3 for EAGLE-3) concatenated per token|
// | final_hidden      | List<Float16 or Float32>      | T * Ht         | row-major [T, Ht]: the target's final normed hidden state; the |
// |                   |                               |                | teacher logits are rebuilt at train time with the target lm_head|
// | think_spans       | List<Int32>                   | 2 * spans      | flattened pairs [s0, e0, s1, e1, ...]: position of the first    |
// |                   |                               |                | token after `<think>` and position of `</think>`, per span     |
// | answer_positions  | List<Int32>                   | spans          | per span: position where the final answer first appears in the |
// |                   |                               |                | thinking, -1 if never                                          |
// | answer            | Utf8                          | -              | the extracted final answer, "" if none                         |
//
// T is the sample's token count (<= the manifest's max_length), Ht the target's hidden_size. The float
// columns use the manifest's dtype (float16 by default) for both aux_hidden and final_hidden; readers
// widen them to Float32Array. No column is nullable. Each shard also carries schema metadata:
// `specforge.schema_version`, `specforge.batch_rows` (comma-separated row counts of its record
// batches, so a reader can find a row's batch from the footer alone), `specforge.first_sample`,
// `specforge.tokens` (its token count) and `specforge.sample_ids_sha256` (sha256 of its sample ids joined
// by newlines): a shard describes itself, so ranks that write shards side by side can be merged into
// one manifest from the files alone. Its checksums (CRC-32, 8 lowercase hex digits; see checksum.ts):
// `specforge.row_crc32` (one per row, comma-separated), `specforge.column_crc32` (per record batch, its
// 8 columns' sums comma-separated; batches separated by ';') and `specforge.crc32` (the shard's, over
// those two lists; the manifest lists it too).
import { Field, Float16, Float32, Int32, List, Schema, Uint8, Utf8, type DataType } from 'apache-arrow';

/** 2: the store records what it was captured from (manifest `source`) and checksums (shard metadata, manifest). */
export const SCHEMA_VERSION = 2;

export type StoreDtype = 'float16' | 'float32';

/** One captured sample as the trainer sees it (float columns widened to Float32Array on read). */
export interface FeatureSample {
  id: string;
  /** [T] token ids. */
  inputIds: Int32Array;
  /** [T] 1 where the token is a training target. */
  lossMask: Uint8Array;
  /** [T, K*Ht] row-major: the K auxiliary layer outputs concatenated per token. */
  aux: Float32Array;
  /** [T, Ht] row-major: the final normed hidden state. */
  finalHidden: Float32Array;
  /** Flattened [start, end] pairs of thinking spans. */
  thinkSpans: Int32Array;
  /** Per span: first position of the final answer inside the thinking, -1 if never. */
  answerPositions: Int32Array;
  answer: string;
}

export const COLUMNS = [
  'sample_id',
  'input_ids',
  'loss_mask',
  'aux_hidden',
  'final_hidden',
  'think_spans',
  'answer_positions',
  'answer',
] as const;

export const META_SCHEMA_VERSION = 'specforge.schema_version';
export const META_BATCH_ROWS = 'specforge.batch_rows';
export const META_FIRST_SAMPLE = 'specforge.first_sample';
export const META_TOKENS = 'specforge.tokens';
export const META_IDS_SHA256 = 'specforge.sample_ids_sha256';
export const META_ROW_CRC32 = 'specforge.row_crc32';
export const META_COLUMN_CRC32 = 'specforge.column_crc32';
export const META_CRC32 = 'specforge.crc32';

function list(item: DataType): List {
  return new List(new Field('item', item, false));
}

export function floatType(dtype: StoreDtype): Float16 | Float32 {
  return dtype === 'float16' ? new Float16() : new Float32();
}

/** The Arrow schema of a shard, with the given record-batch layout in its metadata. */
export function storeSchema(dtype: StoreDtype, metadata?: Map<string, string>): Schema {
  return new Schema(
    [
      new Field('sample_id', new Utf8(), false),
      new Field('input_ids', list(new Int32()), false),
      new Field('loss_mask', list(new Uint8()), false),
      new Field('aux_hidden', list(floatType(dtype)), false),
      new Field('final_hidden', list(floatType(dtype)), false),
      new Field('think_spans', list(new Int32()), false),
      new Field('answer_positions', list(new Int32()), false),
      new Field('answer', new Utf8(), false),
    ],
    metadata,
  );
}

/** Checks a shard's schema against the expected one; returns a description of the first difference, or null. */
export function schemaDifference(actual: Schema, dtype: StoreDtype): string | null {
  const expected = storeSchema(dtype);
  const names = actual.fields.map((f) => f.name);
  if (names.join(',') !== expected.fields.map((f) => f.name).join(','))
    return `columns are [${names.join(', ')}], expected [${COLUMNS.join(', ')}]`;
  for (let i = 0; i < expected.fields.length; i++) {
    const a = actual.fields[i].type;
    const e = expected.fields[i].type;
    if (String(a) !== String(e)) return `column ${expected.fields[i].name} has type ${a}, expected ${e}`;
  }
  return null;
}

/** Validates a sample's lengths against the store's shape; returns an error message or null. */
export function sampleShapeError(s: FeatureSample, hiddenSize: number, auxLayers: number, maxLength: number): string | null {
  const T = s.inputIds.length;
  if (typeof s.id !== 'string') return `id must be a string`;
  if (T < 1) return `has no tokens`;
  if (T > maxLength) return `has ${T} tokens, more than max_length ${maxLength}`;
  if (s.lossMask.length !== T) return `loss_mask has ${s.lossMask.length} entries for ${T} tokens`;
  if (s.aux.length !== T * auxLayers * hiddenSize)
    return `aux has ${s.aux.length} values, expected T*${auxLayers}*Ht = ${T}*${auxLayers}*${hiddenSize} = ${T * auxLayers * hiddenSize}`;
  if (s.finalHidden.length !== T * hiddenSize)
    return `finalHidden has ${s.finalHidden.length} values, expected T*Ht = ${T}*${hiddenSize} = ${T * hiddenSize}`;
  if (s.thinkSpans.length % 2 !== 0) return `thinkSpans has odd length ${s.thinkSpans.length} (must be [start, end] pairs)`;
  if (s.answerPositions.length !== s.thinkSpans.length / 2)
    return `answerPositions has ${s.answerPositions.length} entries for ${s.thinkSpans.length / 2} thinking spans`;
  if (typeof s.answer !== 'string') return `answer must be a string`;
  return null;
}

/** Token ids outside the target's vocabulary or loss-mask values other than 0 and 1; an error message or null. */
export function sampleValueError(s: Pick<FeatureSample, 'inputIds' | 'lossMask'>, vocabSize: number): string | null {
  const ids = s.inputIds;
  for (let t = 0; t < ids.length; t++)
    if (ids[t] < 0 || ids[t] >= vocabSize)
      return `token id ${ids[t]} at position ${t} is outside the target's vocabulary [0, ${vocabSize})`;
  const mask = s.lossMask;
  for (let t = 0; t < mask.length; t++) if (mask[t] > 1) return `loss_mask value ${mask[t]} at position ${t} (must be 0 or 1)`;
  return null;
}

/** The first NaN or infinite feature, named by column, token and (aux) layer; an error message or null. */
export function featureFiniteError(s: Pick<FeatureSample, 'aux' | 'finalHidden' | 'inputIds'>, auxLayerIds: number[]): string | null {
  const T = s.inputIds.length;
  for (const [column, x, layers] of [
    ['aux_hidden', s.aux, auxLayerIds],
    ['final_hidden', s.finalHidden, null],
  ] as const) {
    for (let i = 0; i < x.length; i++) {
      if (Number.isFinite(x[i])) continue;
      const width = x.length / T;
      const t = Math.floor(i / width);
      const where = layers ? ` (layer ${layers[Math.floor(((i % width) * layers.length) / width)]})` : '';
      return `${column}${where} is ${x[i]} at token ${t}`;
    }
  }
  return null;
}
