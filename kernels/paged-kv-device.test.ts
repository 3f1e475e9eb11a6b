import { describe, expect, test } from 'vitest';
import { pagedKvIndices } from './paged-kv-device.ts';

/** [block, head, offset] triples of writeIndex for row b, position s. */
function writeAt(w: BigInt64Array, o: { numKvHeads: number; stepLength: number }, b: number, h: number, s: number): number[] {
  const at = ((b * o.numKvHeads + h) * o.stepLength + s) * 3;
  return [Number(w[at]), Number(w[at + 1]), Number(w[at + 2])];
}

describe('pagedKvIndices (host side of the device KV cache)', () => {
  const o = { numKvHeads: 2, blockSizeTokens: 4, scratchBlock: 99, stepLength: 3 };

  test('past blocks cover each row\'s cached positions, padded with the scratch block', () => {
    const { blockIndex, numPastBlocks } = pagedKvIndices(
      [
        { blockTable: [7, 3, 5], startPosition: 9, numNewTokens: 1 }, // positions 0..8 -> 3 blocks
        { blockTable: [1, 2], startPosition: 4, numNewTokens: 3 }, // exactly one full block
      ],
      o,
    );
    expect(numPastBlocks).toBe(3);
    expect(Array.from(blockIndex, Number)).toEqual([7, 3, 5, 1, 99, 99]);
  });

  test('a step with no history still gathers one (scratch) block, so the past is never empty', () => {
    const { blockIndex, numPastBlocks } = pagedKvIndices([{ blockTable: [4], startPosition: 0, numNewTokens: 3 }], o);
    expect(numPastBlocks).toBe(1);
    expect(Array.from(blockIndex, Number)).toEqual([99]);
  });

  test('new positions are written at (block, head, offset); padding goes to the scratch block', () => {
    const rows = [
      { blockTable: [7, 3, 5], startPosition: 7, numNewTokens: 3 }, // positions 7, 8, 9 cross a block edge
      { blockTable: [1, 2], startPosition: 2, numNewTokens: 1 }, // one token, two padding positions
    ];
    const { writeIndex } = pagedKvIndices(rows, o);
    expect(writeIndex.length).toBe(2 * 2 * 3 * 3);
    expect(writeAt(writeIndex, o, 0, 0, 0)).toEqual([3, 0, 3]);
    expect(writeAt(writeIndex, o, 0, 1, 1)).toEqual([5, 1, 0]);
    expect(writeAt(writeIndex, o, 0, 1, 2)).toEqual([5, 1, 1]);
    expect(writeAt(writeIndex, o, 1, 0, 0)).toEqual([1, 0, 2]);
    expect(writeAt(writeIndex, o, 1, 1, 1)).toEqual([99, 1, 1]);
    expect(writeAt(writeIndex, o, 1, 0, 2)).toEqual([99, 0, 2]);
  });
});
