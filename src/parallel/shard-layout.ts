import { TesseraError } from '../errors.ts';
import type { ModelConfig } from '../model/model-config.ts';

/** A contiguous range [start, start + count). */
export interface Range {
  start: number;
  count: number;
}

/** Where one worker sits in the shard group: its pipeline stage (a layer range) and its tensor-parallel rank. */
export interface ShardPosition {
  stage: number;
  numStages: number;
  /** Layers [layerStart, layerEnd) of this stage. */
  layerStart: number;
  layerEnd: number;
  tpRank: number;
  tpSize: number;
}

/** What a tensor-parallel rank owns: whole KV-head groups (and their query heads), MLP columns and a vocab slice. */
export interface TpSlices {
  kvHeads: Range;
  heads: Range;
  intermediate: Range;
  vocab: Range;
}

/** `total` split into `parts` contiguous ranges whose sizes differ by at most one; range of `index`. */
export function splitEven(total: number, parts: number, index: number): Range {
  const base = Math.floor(total / parts);
  const extra = total % parts;
  const start = index * base + Math.min(index, extra);
  return { start, count: base + (index < extra ? 1 : 0) };
}

/** Multiple-of-`unit` split (int4 blocks need aligned input slices); falls back to splitEven when unit does not divide. */
function splitAligned(total: number, parts: number, index: number, unit: number): Range {
  if (total % unit !== 0) return splitEven(total, parts, index);
  const r = splitEven(total / unit, parts, index);
  return { start: r.start * unit, count: r.count * unit };
}

export function tpSlices(config: ModelConfig, rank: number, size: number, alignUnit = 32): TpSlices {
  const groups = config.numHeads / config.numKvHeads;
  const kvHeads = splitEven(config.numKvHeads, size, rank);
  return {
    kvHeads,
    heads: { start: kvHeads.start * groups, count: kvHeads.count * groups },
    intermediate: splitAligned(config.intermediateSize, size, rank, alignUnit),
    vocab: splitEven(config.vocabSize, size, rank),
  };
}

/** Parameters of one decoder layer (weights only; norms included). */
export function layerParams(config: ModelConfig): number {
  const { hiddenSize: h, numHeads, numKvHeads, headDim, intermediateSize: m } = config;
  return h * (numHeads + 2 * numKvHeads) * headDim + numHeads * headDim * h + 3 * h * m + 2 * h;
}

/**
 * Contiguous layer ranges for `numStages` pipeline stages, balanced by parameter count: stage 0 also holds the
 * embedding and the last stage the LM head, so those stages get fewer layers when the vocabulary is large.
 */
export function stageLayerRanges(config: ModelConfig, numStages: number): Array<{ start: number; end: number }> {
  const L = config.numLayers;
  const perLayer = layerParams(config);
  const vocabParams = config.vocabSize * config.hiddenSize;
  const total = L * perLayer + 2 * vocabParams;
  const ranges: Array<{ start: number; end: number }> = [];
  let start = 0;
  let cumulative = vocabParams;
  for (let s = 0; s < numStages; s++) {
    if (s === numStages - 1) {
      ranges.push({ start, end: L });
      break;
    }
    const target = (total * (s + 1)) / numStages;
    let end = start;
    // Take layers while that brings the cumulative count closer to the target; at least one, and leave one per later stage.
    while (end < L - (numStages - 1 - s) && (end === start || Math.abs(cumulative + perLayer - target) <= Math.abs(cumulative - target))) {
      cumulative += perLayer;
      end++;
    }
    ranges.push({ start, end });
    start = end;
  }
  return ranges;
}

/** Checks that a (tp, pp) layout fits the model; throws CONFIG_INVALID naming the bound otherwise. */
export function checkShardLayout(config: ModelConfig, tp: number, pp: number): void {
  if (!Number.isInteger(tp) || tp < 1 || tp > config.numKvHeads) {
    throw new TesseraError('CONFIG_INVALID', `\`tp\` must be an integer >= 1 and <= ${config.numKvHeads} (the model's KV heads: each rank holds whole KV-head groups). Given: ${tp}`);
  }
  if (!Number.isInteger(pp) || pp < 1 || pp > config.numLayers) {
    throw new TesseraError('CONFIG_INVALID', `\`pp\` must be an integer >= 1 and <= ${config.numLayers} (the model's layers). Given: ${pp}`);
  }
}

/** Positions of all workers of a (tp, pp) group, stage-major: worker index = stage * tp + rank. */
export function shardPositions(config: ModelConfig, tp: number, pp: number): ShardPosition[] {
  checkShardLayout(config, tp, pp);
  const out: ShardPosition[] = [];
  stageLayerRanges(config, pp).forEach((r, stage) => {
    for (let rank = 0; rank < tp; rank++) out.push({ stage, numStages: pp, layerStart: r.start, layerEnd: r.end, tpRank: rank, tpSize: tp });
  });
  return out;
}
