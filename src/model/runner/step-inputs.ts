import type { LoopSampling, SequenceWork } from '../../engine/executor.ts';
import { MASKED_SCORE } from '../graph/graph-io.ts';
import type { KvRow } from './paged-kv-cache.ts';
import { rowResult } from './step-batches.ts';

/**
 * The per-run inputs every runner and shard derives from the same rows (so only the rows travel, never these arrays):
 * right-padded ids and positions [B, S], the attention bias [B, 1, S, P + S] (row b's query i sees its cached
 * positions [0, start_b) and the step's positions [0, i]), which flattened rows need logits, and the KV rows.
 */
export interface StepInputs {
  batch: number;
  stepLength: number;
  pastLength: number;
  inputIds: BigInt64Array; // [B, S]
  positionIds: BigInt64Array; // [B, S]
  attentionBias: Float32Array; // [B, 1, S, P + S]
  /** [rows] the last token of each sampleNext row: the 'logits' rows first, then the 'sampled' rows, each in row order */
  logitsIndex: BigInt64Array;
  kvRows: KvRow[];
}

/**
 * The sequence id of a padding row: one token at position 0, no history, no adapter, no logits, and nothing written to
 * the KV cache (its kvRow has 0 new tokens). Never an engine sequence id (those are non-negative).
 */
export const PADDING_SEQ_ID = -1;

/**
 * A group of one row of one token, padded with a padding row (see PADDING_SEQ_ID), so the quantized matmuls never
 * run with M = 1: on CPUs where the one-row kernel path orders its sums differently from the many-row path
 * (kernel-check.ts, singleRowPathDiffers), a request alone would otherwise not compute exactly what it computes
 * in a batch. Other groups are returned as they are.
 */
export function padSingleRow(group: SequenceWork[]): SequenceWork[] {
  if (group.length !== 1 || group[0].tokenIds.length !== 1) return group;
  return [...group, { seqId: PADDING_SEQ_ID, tokenIds: [0], startPosition: 0, blockTable: [], adapterSlot: 0, sampleNext: false }];
}

/**
 * The same for the LM head: a step with one logits row (a request alone, prefill or padded decode) gets that row's
 * index twice, so the head's MatMulNBits also never runs with M = 1. The caller keeps only the unpadded inputs' rows
 * of the outputs.
 */
export function padSingleLogitsRow(inputs: StepInputs): StepInputs {
  if (inputs.logitsIndex.length !== 1) return inputs;
  return { ...inputs, logitsIndex: BigInt64Array.of(inputs.logitsIndex[0], inputs.logitsIndex[0]) };
}

/** The graph's past length is the longest row's history rounded up to this (masked positions cost a little compute). */
export const PAST_ALIGN_TOKENS = 32;

/** Rounded up so that the past inputs keep their shape for many steps (their buffers are then updated in place). */
export function alignedPastLength(rows: ReadonlyArray<{ startPosition: number }>, minimum = 0): number {
  const longest = Math.max(...rows.map((s) => s.startPosition));
  return Math.max(minimum, Math.ceil(longest / PAST_ALIGN_TOKENS) * PAST_ALIGN_TOKENS);
}

export function stepInputs(rows: SequenceWork[], pastLength = alignedPastLength(rows)): StepInputs {
  const batch = rows.length;
  const stepLength = Math.max(...rows.map((s) => s.tokenIds.length));
  const total = pastLength + stepLength;
  const inputIds = new BigInt64Array(batch * stepLength);
  const positionIds = new BigInt64Array(batch * stepLength);
  const attentionBias = new Float32Array(batch * stepLength * total).fill(MASKED_SCORE);
  const logitsLast: bigint[] = [];
  const sampledLast: bigint[] = [];
  const kvRows: KvRow[] = [];
  rows.forEach((seq, b) => {
    const n = seq.tokenIds.length;
    for (let i = 0; i < stepLength; i++) {
      const at = b * stepLength + i;
      const valid = i < n;
      inputIds[at] = BigInt(valid ? seq.tokenIds[i] : 0);
      positionIds[at] = BigInt(seq.startPosition + (valid ? i : 0));
      const biasRow = at * total;
      if (valid) {
        attentionBias.fill(0, biasRow, biasRow + seq.startPosition);
        attentionBias.fill(0, biasRow + pastLength, biasRow + pastLength + i + 1);
      } else {
        attentionBias[biasRow + pastLength + i] = 0; // padding attends to itself only: finite, ignored
      }
    }
    const result = rowResult(seq);
    if (result !== 'none') (result === 'logits' ? logitsLast : sampledLast).push(BigInt(b * stepLength + n - 1));
    kvRows.push({ seqId: seq.seqId, blockTable: seq.blockTable, startPosition: seq.startPosition, numNewTokens: seq.seqId === PADDING_SEQ_ID ? 0 : n });
  });
  return { batch, stepLength, pastLength, inputIds, positionIds, attentionBias, logitsIndex: BigInt64Array.from([...logitsLast, ...sampledLast]), kvRows };
}

/**
 * A row's in-graph sampling as the graphs take it: top-k over the whole vocabulary or more is no top-k (as for the host
 * sampler), and the graph's TopK cannot take k > V.
 */
export function graphSampling(s: LoopSampling, vocabSize: number): LoopSampling {
  return s.topK < vocabSize ? s : { ...s, topK: 0 };
}
