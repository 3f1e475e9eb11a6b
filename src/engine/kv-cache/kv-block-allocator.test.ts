import { describe, expect, it } from 'vitest';
import { createKvBlockAllocator } from './kv-block-allocator.ts';

describe('KV block allocator', () => {
  it('allocates all-or-nothing, frees, and counts', () => {
    const kv = createKvBlockAllocator({ numKvBlocks: 5, blockSizeTokens: 16 });
    expect(kv.blocksFor(1)).toBe(1);
    expect(kv.blocksFor(16)).toBe(1);
    expect(kv.blocksFor(17)).toBe(2);
    const a = kv.allocate(3)!;
    expect(new Set(a).size).toBe(3);
    expect(kv.numUsed()).toBe(3);
    expect(kv.allocate(3)).toBeNull();
    expect(kv.numFree()).toBe(2);
    const b = kv.allocate(2)!;
    expect([...a, ...b].sort()).toEqual([0, 1, 2, 3, 4]);
    kv.free(a);
    expect(kv.numFree()).toBe(3);
    expect(() => kv.free([a[0]])).toThrow(/freed but not allocated/);
    expect(() => createKvBlockAllocator({ numKvBlocks: 0, blockSizeTokens: 16 })).toThrow(/numKvBlocks/);
  });
});
