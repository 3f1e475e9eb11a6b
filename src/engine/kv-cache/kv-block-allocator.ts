/**
 * KV cache block accounting (the engine's view; the executor owns the memory). Blocks hold `blockSizeTokens`
 * positions each; a sequence's block table covers positions [0, numTokens). Allocation is all-or-nothing.
 */
import { TesseraError } from '../../errors.ts';

export interface KvBlockAllocatorOptions {
  numKvBlocks: number;
  blockSizeTokens: number;
}

export interface KvBlockAllocator {
  readonly numKvBlocks: number;
  readonly blockSizeTokens: number;
  numFree(): number;
  numUsed(): number;
  /** Blocks needed to hold `numTokens` positions. */
  blocksFor(numTokens: number): number;
  /** `count` blocks, or null (nothing taken) when fewer are free. */
  allocate(count: number): number[] | null;
  /** Returns blocks; freeing a block that is not allocated is a bug and throws INTERNAL. */
  free(blockIds: readonly number[]): void;
}

export function createKvBlockAllocator(opts: KvBlockAllocatorOptions): KvBlockAllocator {
  const { numKvBlocks, blockSizeTokens } = opts;
  if (!Number.isSafeInteger(numKvBlocks) || numKvBlocks < 1) {
    throw new TesseraError('CONFIG_INVALID', `\`numKvBlocks\` must be an integer >= 1. Given: ${numKvBlocks}`);
  }
  if (!Number.isSafeInteger(blockSizeTokens) || blockSizeTokens < 1) {
    throw new TesseraError('CONFIG_INVALID', `\`blockSizeTokens\` must be an integer >= 1. Given: ${blockSizeTokens}`);
  }
  // Free list as a stack: lowest ids handed out first on a fresh allocator.
  const freeList: number[] = [];
  for (let b = numKvBlocks - 1; b >= 0; b--) freeList.push(b);
  const allocated = new Uint8Array(numKvBlocks);

  return {
    numKvBlocks,
    blockSizeTokens,
    numFree: () => freeList.length,
    numUsed: () => numKvBlocks - freeList.length,
    blocksFor: (numTokens: number) => Math.ceil(numTokens / blockSizeTokens),
    allocate(count: number): number[] | null {
      if (count > freeList.length) return null;
      const out: number[] = [];
      for (let i = 0; i < count; i++) {
        const b = freeList.pop()!;
        allocated[b] = 1;
        out.push(b);
      }
      return out;
    },
    free(blockIds: readonly number[]): void {
      for (const b of blockIds) {
        if (!(b >= 0 && b < numKvBlocks) || allocated[b] !== 1) {
          throw new TesseraError('INTERNAL', `KV block ${b} freed but not allocated`);
        }
        allocated[b] = 0;
        freeList.push(b);
      }
    },
  };
}
