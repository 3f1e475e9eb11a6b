/**
 * The KV cache of one worker: per layer, keys and values in fixed-size blocks that the engine hands out.
 * Block layout [numBlocks, kvHeads, blockSizeTokens, headDim] float32, so a block's positions for one head are contiguous
 * and gathering a row's history into the graph's [B, kvHeads, P, D] past input is one copy per (block, head).
 */
export interface KvCacheOptions {
  numLayers: number;
  numKvHeads: number;
  headDim: number;
  numBlocks: number;
  blockSizeTokens: number;
}

/** A row of a step: its blocks, the positions already cached, and how many new positions the step writes. */
export interface KvRow {
  /** The engine's sequence id (never reused): lets consecutive steps of the same rows reuse their gathered history. */
  seqId: number;
  blockTable: number[];
  startPosition: number;
  numNewTokens: number;
}

/** What a past buffer holds: for each row, which sequence and how many of its positions. */
interface PastBuffer {
  keys: Float32Array;
  values: Float32Array;
  pastLength: number;
  rows: Array<{ seqId: number; cached: number }>;
}

export class PagedKvCache {
  readonly keys: Float32Array[];
  readonly values: Float32Array[];
  readonly blockFloats: number;
  /**
   * Per lane (decode, prefill) and layer, the graph's past inputs of the last step, reused: fresh arrays every step cost
   * page faults, and when a step has the same rows as the previous one (the steady state of decoding) only the
   * positions written since are copied in.
   */
  private readonly pastBuffers = new Map<string, PastBuffer>();

  constructor(readonly options: KvCacheOptions) {
    const { numLayers, numKvHeads, headDim, numBlocks, blockSizeTokens } = options;
    this.blockFloats = numKvHeads * blockSizeTokens * headDim;
    const layerFloats = numBlocks * this.blockFloats;
    this.keys = Array.from({ length: numLayers }, () => new Float32Array(layerFloats));
    this.values = Array.from({ length: numLayers }, () => new Float32Array(layerFloats));
  }

  static bytesPerBlock(o: Omit<KvCacheOptions, 'numBlocks'>): number {
    return 2 * o.numLayers * o.numKvHeads * o.blockSizeTokens * o.headDim * 4;
  }

  get totalBytes(): number {
    return this.keys.length * 2 * this.keys[0].byteLength;
  }

  /**
   * The past inputs [B, kvHeads, P, D] of one layer for a step (P >= every row's startPosition). Views of buffers reused
   * across steps: valid until the next call for the same lane and layer. `lane` keeps runs of different shapes in one
   * step (decode rows, prefill rows) from evicting each other's buffers.
   *
   * Positions past a row's own length are zero, never values another sequence left in the reused buffer: the attention
   * bias masks those positions by addition, and a stale Inf or NaN (from a hostile adapter's row, say) would survive
   * the addition and turn this row's softmax into NaN. Invariant kept between calls: every row's positions
   * [cached, P) are zero.
   */
  past(layer: number, rows: KvRow[], pastLength: number, lane = 'default'): { keys: Float32Array; values: Float32Array } {
    const { numKvHeads, headDim } = this.options;
    const floats = rows.length * numKvHeads * pastLength * headDim;
    const key = `${lane}/${layer}`;
    let buf = this.pastBuffers.get(key);
    const sameLayout = buf !== undefined && buf.pastLength === pastLength && buf.rows.length === rows.length && buf.keys.length >= floats;
    if (!buf || buf.keys.length < floats) {
      const grown = Math.ceil(floats * 1.25);
      buf = { keys: new Float32Array(grown), values: new Float32Array(grown), pastLength: -1, rows: [] };
      this.pastBuffers.set(key, buf);
    }
    const keys = buf.keys.subarray(0, floats);
    const values = buf.values.subarray(0, floats);
    for (let b = 0; b < rows.length; b++) {
      const row = rows[b];
      const continues = sameLayout && buf.rows[b].seqId === row.seqId && buf.rows[b].cached <= row.startPosition;
      const had = continues ? buf.rows[b].cached : 0;
      if (had < row.startPosition) this.gatherRange(layer, row, b, had, row.startPosition, pastLength, keys, values);
      // A continuing row's tail was zero already (the invariant); any other row's tail may hold another row's data.
      if (!continues) this.zeroTail(b, row.startPosition, pastLength, keys, values);
    }
    buf.pastLength = pastLength;
    buf.rows = rows.map((r) => ({ seqId: r.seqId, cached: r.startPosition }));
    return { keys, values };
  }

  /** Copies each row's cached positions [0, startPosition) of one layer into `out` [B, kvHeads, P, D] (rest untouched). */
  gather(layer: number, rows: KvRow[], pastLength: number, outKeys: Float32Array, outValues: Float32Array): void {
    for (let b = 0; b < rows.length; b++) this.gatherRange(layer, rows[b], b, 0, rows[b].startPosition, pastLength, outKeys, outValues);
  }

  /** Zeroes positions [from, P) of row b of `out` [B, kvHeads, P, D]. */
  private zeroTail(b: number, from: number, pastLength: number, outKeys: Float32Array, outValues: Float32Array): void {
    if (from >= pastLength) return;
    const { numKvHeads, headDim } = this.options;
    for (let h = 0; h < numKvHeads; h++) {
      const start = ((b * numKvHeads + h) * pastLength + from) * headDim;
      const end = ((b * numKvHeads + h) * pastLength + pastLength) * headDim;
      outKeys.fill(0, start, end);
      outValues.fill(0, start, end);
    }
  }

  /** Copies positions [from, to) of one row of one layer into row b of `out` [B, kvHeads, P, D]. */
  private gatherRange(layer: number, row: KvRow, b: number, from: number, to: number, pastLength: number, outKeys: Float32Array, outValues: Float32Array): void {
    const { numKvHeads, headDim, blockSizeTokens } = this.options;
    const keys = this.keys[layer];
    const values = this.values[layer];
    for (let pos = from; pos < to; ) {
      const block = this.blockOf(row, pos);
      const inBlock = pos % blockSizeTokens;
      const count = Math.min(blockSizeTokens - inBlock, to - pos);
      for (let h = 0; h < numKvHeads; h++) {
        const src = block * this.blockFloats + (h * blockSizeTokens + inBlock) * headDim;
        const dst = ((b * numKvHeads + h) * pastLength + pos) * headDim;
        outKeys.set(keys.subarray(src, src + count * headDim), dst);
        outValues.set(values.subarray(src, src + count * headDim), dst);
      }
      pos += count;
    }
  }

  /** Writes the step's new keys/values [B, kvHeads, S, D] of one layer into each row's blocks. */
  scatter(layer: number, rows: KvRow[], stepLength: number, newKeys: Float32Array, newValues: Float32Array): void {
    const { numKvHeads, headDim, blockSizeTokens } = this.options;
    const keys = this.keys[layer];
    const values = this.values[layer];
    for (let b = 0; b < rows.length; b++) {
      const row = rows[b];
      for (let i = 0; i < row.numNewTokens; ) {
        const pos = row.startPosition + i;
        const block = this.blockOf(row, pos);
        const inBlock = pos % blockSizeTokens;
        const count = Math.min(blockSizeTokens - inBlock, row.numNewTokens - i);
        for (let h = 0; h < numKvHeads; h++) {
          const src = ((b * numKvHeads + h) * stepLength + i) * headDim;
          const dst = block * this.blockFloats + (h * blockSizeTokens + inBlock) * headDim;
          keys.set(newKeys.subarray(src, src + count * headDim), dst);
          values.set(newValues.subarray(src, src + count * headDim), dst);
        }
        i += count;
      }
    }
  }

  private blockOf(row: KvRow, position: number): number {
    const block = row.blockTable[Math.floor(position / this.options.blockSizeTokens)];
    if (block === undefined || block < 0 || block >= this.options.numBlocks) {
      throw new Error(`KV block table does not cover position ${position} (table ${JSON.stringify(row.blockTable)})`);
    }
    return block;
  }
}
