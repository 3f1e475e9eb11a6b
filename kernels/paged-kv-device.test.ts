import * as ort from 'onnxruntime-node';
import { describe, expect, test } from 'vitest';
import { serializeModel } from '../src/model/graph/onnx-serialize.ts';
import { OnnxGraph } from './onnx-graph.ts';
import { KV_BOUND, pagedKvIndices, pagedWrite } from './paged-kv-device.ts';

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

describe('pagedWrite', () => {
  test('writes only finite, bounded values: NaN -> 0, +-Inf and huge values clipped, ordinary values exact', async () => {
    const g = new OnnxGraph('paged_write');
    const cache = g.input('cache', 'float32', [2, 1, 2, 3]);
    const writeIndex = g.input('write_index', 'int64', [1, 1, 2, 3]);
    const newKv = g.input('new_kv', 'float32', [1, 1, 2, 3]);
    g.output(pagedWrite(g, cache, writeIndex, newKv, 'w'), 'float32', [2, 1, 2, 3]);
    const session = await ort.InferenceSession.create(serializeModel(g, null));
    const written = [Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY, 1e30, 1.5, -0.25];
    const out = await session.run({
      cache: new ort.Tensor('float32', new Float32Array(12).fill(7), [2, 1, 2, 3]),
      write_index: new ort.Tensor('int64', BigInt64Array.from([1n, 0n, 0n, 1n, 0n, 1n]), [1, 1, 2, 3]),
      new_kv: new ort.Tensor('float32', Float32Array.from(written), [1, 1, 2, 3]),
    });
    const present = Array.from(out[g.outputs[0].name].data as Float32Array);
    expect(present.slice(0, 6)).toEqual(new Array(6).fill(7));
    expect(present.slice(6)).toEqual([0, KV_BOUND, -KV_BOUND, KV_BOUND, 1.5, -0.25]);
  });
});
