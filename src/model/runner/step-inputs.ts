import type { SequenceWork } from '../../engine/executor.ts';
import { MASKED_SCORE } from '../graph/llama-graph.ts';
import type { KvRow } from './paged-kv-cache.ts';

/**
 * The per-run inputs every shard derives from the same rows (so only the rows travel, never these arrays):
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
  logitsIndex: BigInt64Array; // [rows]
  kvRows: KvRow[];
  /** seqIds whose logits are computed, in row order. */
  sampledSeqIds: number[];
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

/** The graph's past length is the longest row's history rounded up to this (masked positions cost a little compute). */
export const PAST_ALIGN_TOKENS = 32;

export function stepInputs(rows: SequenceWork[]): StepInputs {
  const batch = rows.length;
  const stepLength = Math.max(...rows.map((s) => s.tokenIds.length));
  // Rounded up so that the past inputs keep their shape for many steps (their buffers are then updated in place).
  const longest = Math.max(...rows.map((s) => s.startPosition));
  const pastLength = Math.ceil(longest / PAST_ALIGN_TOKENS) * PAST_ALIGN_TOKENS;
  const total = pastLength + stepLength;
  const inputIds = new BigInt64Array(batch * stepLength);
  const positionIds = new BigInt64Array(batch * stepLength);
  const attentionBias = new Float32Array(batch * stepLength * total).fill(MASKED_SCORE);
  const logitsIndex: bigint[] = [];
  const sampledSeqIds: number[] = [];
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
    if (seq.sampleNext) {
      logitsIndex.push(BigInt(b * stepLength + n - 1));
      sampledSeqIds.push(seq.seqId);
    }
    kvRows.push({ seqId: seq.seqId, blockTable: seq.blockTable, startPosition: seq.startPosition, numNewTokens: seq.seqId === PADDING_SEQ_ID ? 0 : n });
  });
  return { batch, stepLength, pastLength, inputIds, positionIds, attentionBias, logitsIndex: BigInt64Array.from(logitsIndex), kvRows, sampledSeqIds };
}

/** Why this sequence cannot run (it then fails alone), or null. */
export function checkSequence(
  seq: SequenceWork,
  limits: { vocabSize: number; maxContextTokens: number; numKvBlocks: number; blockSizeTokens: number; numAdapterSlots: number },
): string | null {
  const end = seq.startPosition + seq.tokenIds.length;
  if (seq.tokenIds.length === 0) return 'no tokens in step';
  if (!Number.isInteger(seq.startPosition) || seq.startPosition < 0) return `start position ${seq.startPosition} is not a non-negative integer`;
  if (end > limits.maxContextTokens) return `position ${end} past the model's ${limits.maxContextTokens}`;
  for (const id of seq.tokenIds) if (!Number.isInteger(id) || id < 0 || id >= limits.vocabSize) return `token id ${id} outside [0, ${limits.vocabSize})`;
  if (!Number.isInteger(seq.adapterSlot) || seq.adapterSlot < 0 || seq.adapterSlot >= limits.numAdapterSlots) {
    return `adapter slot ${seq.adapterSlot} outside [0, ${limits.numAdapterSlots})`;
  }
  const needed = Math.ceil(end / limits.blockSizeTokens);
  if (seq.blockTable.length < needed) return `block table has ${seq.blockTable.length} blocks, positions up to ${end} need ${needed}`;
  for (const block of seq.blockTable) if (!Number.isInteger(block) || block < 0 || block >= limits.numKvBlocks) return `KV block ${block} outside [0, ${limits.numKvBlocks})`;
  return null;
}
