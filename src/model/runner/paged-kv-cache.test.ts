import { describe, expect, test } from 'vitest';
import { PagedKvCache, type KvRow } from './paged-kv-cache.ts';

const OPTIONS = { numLayers: 1, numKvHeads: 2, headDim: 3, numBlocks: 8, blockSizeTokens: 4 };

/** Writes `count` positions of `value` (keys and values) for a row starting at position 0. */
function fill(kv: PagedKvCache, row: KvRow, count: number, value: number): void {
  const floats = OPTIONS.numKvHeads * count * OPTIONS.headDim;
  kv.scatter(0, [{ ...row, startPosition: 0, numNewTokens: count }], count, new Float32Array(floats).fill(value), new Float32Array(floats).fill(value));
}

/** Row b's positions [from, P) of a past input, over every head. */
function tail(past: Float32Array, b: number, from: number, pastLength: number): number[] {
  const out: number[] = [];
  for (let h = 0; h < OPTIONS.numKvHeads; h++) {
    const base = (b * OPTIONS.numKvHeads + h) * pastLength * OPTIONS.headDim;
    out.push(...past.subarray(base + from * OPTIONS.headDim, base + pastLength * OPTIONS.headDim));
  }
  return out;
}

describe('PagedKvCache.past', () => {
  test('positions past a row\'s length are zero, whatever another sequence left in the reused buffer (Inf, NaN)', () => {
    const kv = new PagedKvCache(OPTIONS);
    const hostile: KvRow = { seqId: 1, blockTable: [0, 1], startPosition: 7, numNewTokens: 1 };
    const other: KvRow = { seqId: 2, blockTable: [2, 3], startPosition: 2, numNewTokens: 1 };
    const third: KvRow = { seqId: 3, blockTable: [4, 5], startPosition: 7, numNewTokens: 1 };
    fill(kv, hostile, 7, Number.POSITIVE_INFINITY);
    fill(kv, other, 2, 0.5);
    fill(kv, third, 7, 0.25);
    // The hostile sequence decodes in row 0 of the decode lane's buffer (P = 7) ...
    kv.past(0, [hostile, third], 7, 'decode');
    // ... then leaves: another sequence with a shorter history takes row 0 of the same buffer.
    const { keys, values } = kv.past(0, [other, third], 7, 'decode');
    for (const past of [keys, values]) {
      expect(tail(past, 0, 0, 7).slice(0, 2 * OPTIONS.headDim)).toEqual(new Array(2 * OPTIONS.headDim).fill(0.5));
      expect(tail(past, 0, 2, 7)).toEqual(new Array(OPTIONS.numKvHeads * 5 * OPTIONS.headDim).fill(0));
      expect(tail(past, 1, 0, 7)).toEqual(new Array(OPTIONS.numKvHeads * 7 * OPTIONS.headDim).fill(0.25));
    }
  });

  test('a row that continues keeps its tail zero as it grows step by step (only new positions are copied)', () => {
    const kv = new PagedKvCache(OPTIONS);
    const hostile: KvRow = { seqId: 1, blockTable: [0, 1], startPosition: 6, numNewTokens: 1 };
    const long: KvRow = { seqId: 2, blockTable: [2, 3], startPosition: 6, numNewTokens: 1 };
    const short: KvRow = { seqId: 3, blockTable: [4, 5], startPosition: 2, numNewTokens: 1 };
    fill(kv, hostile, 6, Number.NaN);
    fill(kv, long, 8, 2);
    fill(kv, short, 4, 1);
    kv.past(0, [hostile, long], 6, 'decode');
    kv.past(0, [short, long], 6, 'decode');
    const next = kv.past(0, [{ ...short, startPosition: 3 }, long], 6, 'decode');
    expect(tail(next.keys, 0, 0, 6).slice(0, 3 * OPTIONS.headDim)).toEqual(new Array(3 * OPTIONS.headDim).fill(1));
    expect(tail(next.keys, 0, 3, 6)).toEqual(new Array(OPTIONS.numKvHeads * 3 * OPTIONS.headDim).fill(0));
  });
});
