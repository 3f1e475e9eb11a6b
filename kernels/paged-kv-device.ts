import type { OnnxGraph } from './onnx-graph.ts';

/**
 * A paged KV cache that lives on the device as graph state: the runner feeds the cache tensors in, the graph reads the
 * rows' history from them and returns the cache with this step's keys/values written, and the runner feeds that output
 * back at the next step (double-buffered: the old buffer is released after the run). Nothing of the cache crosses to
 * the host; the host sends only small index tensors.
 *
 * Layout per layer, for keys and values alike (the same block layout as the host PagedKvCache):
 *   cache [numBlocks + 1, kvHeads, blockSizeTokens, headDim]; block numBlocks is a scratch block that padding writes to
 *   and padding reads come from (always masked), so no real block is ever touched by padding.
 *
 * Read (pagedPast), blockIndex [B, nb] int64 = the row's blocks for positions [0, nb * bs), padded with the scratch block:
 *   past[b, h, j * bs + t, :] = cache[blockIndex[b, j], h, t, :]          -> past [B, kvHeads, nb * bs, headDim]
 * Write (pagedWrite), writeIndex [B, kvHeads, S, 3] int64 = (block, head, offset in block) of each new position:
 *   clean = clip(newKv, -KV_BOUND, KV_BOUND) with NaN -> 0
 *   present = cache;  present[writeIndex[b, h, s]] = clean[b, h, s, :]  -> present, same shape as cache
 *   Blocks are reused by other sequences and the scratch block is written by every row's padding, so a row's read
 *   gathers values other rows left there; the attention bias masks them by addition, which only works for finite,
 *   bounded values (Inf + -1e9 is Inf, and 0 * NaN is NaN). Cleaning what is written keeps every cached value finite
 *   and bounded, so no row's values, however extreme, reach another row's output.
 * Slot write (slotWrite), for adapter stacks [numSlots, ...]:
 *   present = stack;  present[slot] = value[0]
 *
 * ONNX ops: Gather + Transpose + Reshape for the read, ScatterND for the writes. All ran on the WebGPU execution
 * provider (onnxruntime-node 1.30, Mesa lavapipe). ScatterND allocates its output, so each write copies the whole layer's
 * cache on the device (device bandwidth, never PCIe); see docs/gpu.md.
 */
export function pagedPast(g: OnnxGraph, cache: string, blockIndex: string, headDim: number, hint: string): string {
  const blocks = g.op('Gather', [cache, blockIndex], { attrs: { axis: { i: 0 } }, hint: `${hint}_blocks` }); // [B, nb, Hkv, bs, D]
  const headsFirst = g.op('Transpose', [blocks], { attrs: { perm: { ints: [0, 2, 1, 3, 4] } }, hint: `${hint}_heads_first` }); // [B, Hkv, nb, bs, D]
  return g.op('Reshape', [headsFirst, g.constInt64(`${hint}_shape`, [0, 0, -1, headDim])], { hint }); // [B, Hkv, nb*bs, D]
}

/** The largest |value| the device cache holds (fp16's largest finite value; real keys and values are far below it). */
export const KV_BOUND = 65504;

export function pagedWrite(g: OnnxGraph, cache: string, writeIndex: string, newKv: string, hint: string): string {
  const finite = g.op('Where', [g.op('Equal', [newKv, newKv], { hint: `${hint}_not_nan` }), newKv, g.constFloat(`${hint}_zero`, [0], [])], { hint: `${hint}_nan_to_zero` });
  const bounded = g.op('Clip', [finite, g.constFloat(`${hint}_min`, [-KV_BOUND], []), g.constFloat(`${hint}_max`, [KV_BOUND], [])], { hint: `${hint}_clipped` });
  return g.op('ScatterND', [cache, writeIndex, bounded], { hint });
}

/** `slot` is int64 [1, 1]; `value` is [1, ...stack.shape[1:]]. */
export function slotWrite(g: OnnxGraph, stack: string, slot: string, value: string, hint: string): string {
  return g.op('ScatterND', [stack, slot, value], { hint });
}

/** A row of a step for the device cache: its block table, positions already cached, and new positions. */
export interface DeviceKvRow {
  blockTable: number[];
  startPosition: number;
  numNewTokens: number;
}

/**
 * Host side of pagedPast / pagedWrite: the index tensors for one step (plain TS, the reference the tests check).
 * Returns blockIndex [B, nb] (nb >= 1 so the past is never empty) and writeIndex [B, kvHeads, stepLength, 3].
 */
export function pagedKvIndices(
  rows: DeviceKvRow[],
  o: { numKvHeads: number; blockSizeTokens: number; scratchBlock: number; stepLength: number },
): { blockIndex: BigInt64Array; numPastBlocks: number; writeIndex: BigInt64Array } {
  const { numKvHeads, blockSizeTokens: bs, scratchBlock, stepLength } = o;
  const numPastBlocks = Math.max(1, ...rows.map((r) => Math.ceil(r.startPosition / bs)));
  const blockIndex = new BigInt64Array(rows.length * numPastBlocks).fill(BigInt(scratchBlock));
  const writeIndex = new BigInt64Array(rows.length * numKvHeads * stepLength * 3);
  rows.forEach((row, b) => {
    const usedBlocks = Math.ceil(row.startPosition / bs);
    for (let j = 0; j < usedBlocks; j++) blockIndex[b * numPastBlocks + j] = BigInt(row.blockTable[j]);
    for (let s = 0; s < stepLength; s++) {
      const position = row.startPosition + s;
      const valid = s < row.numNewTokens;
      const block = valid ? row.blockTable[Math.floor(position / bs)] : scratchBlock;
      const offset = valid ? position % bs : s % bs;
      for (let h = 0; h < numKvHeads; h++) {
        const at = ((b * numKvHeads + h) * stepLength + s) * 3;
        writeIndex[at] = BigInt(block);
        writeIndex[at + 1] = BigInt(h);
        writeIndex[at + 2] = BigInt(offset);
      }
    }
  });
  return { blockIndex, numPastBlocks, writeIndex };
}
