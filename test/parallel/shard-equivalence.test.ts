import { describe, expect, test } from 'vitest';
import { readPeftAdapter } from '../../src/adapters/peft/peft-adapter.ts';
import { ShardController } from '../../src/parallel/controller.ts';
import { tinyModel } from '../helpers/tiny-model.ts';
import { driveGreedy, maxAbsDiff, type DriveResult } from './shard-driver.ts';

const PROMPTS = [
  [3, 17, 42, 5, 99, 7, 250, 11, 64],
  [5, 6, 7],
  [200, 201, 202, 203, 204, 205, 206, 207, 208, 209, 210, 211],
  [9, 8, 7, 6, 5],
];
/** Rows with different adapters in one batch: base, adapter 1, adapter 2, adapter 1. */
const SLOTS = [0, 1, 2, 1];
const DECODE_STEPS = 5;
const BLOCK = 8;

describe('TP/PP shard groups == world size 1 (fp32 tiny model, mixed adapters)', async () => {
  const { hf, convertedDir } = await tinyModel({ quant: 'fp32', numAdapters: 2 });
  const adapters = hf.adapterDirs.map((d) => readPeftAdapter(d, hf.config));

  async function run(tp: number, pp: number): Promise<{ result: DriveResult; controller: ShardController }> {
    const controller = await ShardController.start({ modelDir: convertedDir, tp, pp, kvCacheBytes: 4 << 20, blockSizeTokens: BLOCK, numAdapterSlots: 3, maxAdapterRank: 16, intraOpThreads: 1 });
    try {
      await controller.loadAdapterSlot(1, adapters[0]);
      await controller.loadAdapterSlot(2, adapters[1]);
      return { result: await driveGreedy(controller, PROMPTS, SLOTS, DECODE_STEPS, BLOCK), controller };
    } finally {
      await controller.shutdown();
    }
  }

  const reference = await run(1, 1);

  test('world size 1 produces distinct, adapter-dependent rows (the comparison is not vacuous)', () => {
    const first = reference.result.logits[0];
    expect(maxAbsDiff(first.get(0)!, first.get(1)!)).toBeGreaterThan(1e-2);
    expect(reference.result.tokens.get(0)!.length).toBe(DECODE_STEPS + 1);
  });

  for (const [tp, pp] of [
    [2, 1],
    [1, 2],
    [2, 2],
  ]) {
    test(`TP=${tp} PP=${pp}: identical greedy tokens, logits within 1e-4`, async () => {
      const { result, controller } = await run(tp, pp);
      expect(result.tokens).toEqual(reference.result.tokens);
      let worst = 0;
      result.logits.forEach((rows, step) => {
        expect([...rows.keys()].sort()).toEqual([...reference.result.logits[step].keys()].sort());
        for (const [seqId, row] of rows) worst = Math.max(worst, maxAbsDiff(row, reference.result.logits[step].get(seqId)!));
      });
      expect(worst).toBeLessThanOrEqual(1e-4);
      expect(controller.workerMemory()).toHaveLength(tp * pp);
    });
  }

  test('TP=2: each worker holds about half of the weights', async () => {
    const tp2 = await ShardController.start({ modelDir: convertedDir, tp: 2, kvCacheBytes: 1 << 20, blockSizeTokens: BLOCK, numAdapterSlots: 2, maxAdapterRank: 8, intraOpThreads: 1 });
    const one = await ShardController.start({ modelDir: convertedDir, kvCacheBytes: 1 << 20, blockSizeTokens: BLOCK, numAdapterSlots: 2, maxAdapterRank: 8, intraOpThreads: 1 });
    try {
      const whole = one.memory.weightsBytes;
      for (const w of tp2.workerMemory()) {
        const share = w.memory!.weightsBytes / whole;
        expect(share).toBeGreaterThan(0.4);
        expect(share).toBeLessThan(0.6);
      }
      // Same KV budget per worker, half the KV heads each: twice the blocks.
      expect(tp2.layout.numKvBlocks).toBe(2 * one.layout.numKvBlocks);
    } finally {
      await tp2.shutdown();
      await one.shutdown();
    }
  });
});
