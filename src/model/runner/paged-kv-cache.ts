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
  blockTable: number[];
  startPosition: number;
  numNewTokens: number;
}

export class PagedKvCache {
  readonly keys: Float32Array[];
  readonly values: Float32Array[];
  readonly blockFloats: number;

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

  /** Copies each row's cached positions [0, startPosition) of one layer into `out` [B, kvHeads, P, D] (rest untouched). */
  gather(layer: number, rows: KvRow[], pastLength: number, outKeys: Float32Array, outValues: Float32Array): void {
    const { numKvHeads, headDim, blockSizeTokens } = this.options;
    const keys = this.keys[layer];
    const values = this.values[layer];
    for (let b = 0; b < rows.length; b++) {
      const row = rows[b];
      for (let pos = 0; pos < row.startPosition; pos += blockSizeTokens) {
        const block = this.blockOf(row, pos);
        const count = Math.min(blockSizeTokens, row.startPosition - pos);
        for (let h = 0; h < numKvHeads; h++) {
          const src = block * this.blockFloats + h * blockSizeTokens * headDim;
          const dst = ((b * numKvHeads + h) * pastLength + pos) * headDim;
          outKeys.set(keys.subarray(src, src + count * headDim), dst);
          outValues.set(values.subarray(src, src + count * headDim), dst);
        }
      }
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
