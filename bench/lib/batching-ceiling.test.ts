import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, test } from 'vitest';
import { ThreadExecutor } from '../../src/parallel/thread-executor.ts';
import { BenchModels } from './bench-models.ts';
import { ceilingRatio, executorStepCosts, linearStackStepCosts } from './batching-ceiling.ts';
import { INT4, INT8 } from './quant-variants.ts';

const cacheDir = fs.mkdtempSync(path.join(os.tmpdir(), 'tessera-bench-ceiling-'));
afterAll(() => fs.rmSync(cacheDir, { recursive: true, force: true }));

test('ceiling ratio: sequential cost over batched cost per request', () => {
  // Free batching (a batch-16 step costs what a batch-1 step does): the ratio is bounded by the prefill share.
  const free = { batch: 16, promptTokens: 64, prefillMs: 100, prefillBatchMs: 1600, decode1Ms: 10, decodeBatchMs: 10 };
  expect(ceilingRatio(free, 64)).toBeCloseTo((100 + 640) / (100 + 40), 10);
  // No batching gain at all (cost grows with the batch): 1x.
  expect(ceilingRatio({ ...free, decodeBatchMs: 160 }, 64)).toBeCloseTo(1, 10);
  // Without prefill, the decode scaling alone: 16 / growth.
  expect(ceilingRatio({ ...free, prefillMs: 0, prefillBatchMs: 0, decodeBatchMs: 40 }, 64)).toBeCloseTo(4, 10);
});

describe('step costs on the tiny model (real conversion, real ORT sessions)', async () => {
  const models = new BenchModels({ cacheDir });
  const int4 = await models.converted('tiny', INT4);
  const options = { batch: 4, promptTokens: 16, runs: 2 };

  test('whole-model step costs through the thread executor are positive and finite', async () => {
    const executor = await ThreadExecutor.start({ modelDir: int4.dir, kvCacheBytes: 16 << 20, blockSizeTokens: 8, numAdapterSlots: 1, maxAdapterRank: 8 });
    try {
      const c = await executorStepCosts(executor, options);
      for (const v of [c.prefillMs, c.prefillBatchMs, c.decode1Ms, c.decodeBatchMs]) expect(v > 0 && Number.isFinite(v)).toBe(true);
      expect(ceilingRatio(c, 8)).toBeGreaterThan(0);
    } finally {
      await executor.shutdown();
    }
  });

  test('a KV cache too small for the batch is refused up front', async () => {
    const executor = await ThreadExecutor.start({ modelDir: int4.dir, kvCacheBytes: 64 << 10, blockSizeTokens: 8, numAdapterSlots: 1, maxAdapterRank: 8 });
    try {
      await expect(executorStepCosts(executor, { ...options, batch: 64 })).rejects.toThrow(/cannot hold 64 sequences/);
    } finally {
      await executor.shutdown();
    }
  });

  test('the linear-layers-only graph runs for int4 and int8 storage', async () => {
    for (const variant of [INT4, INT8]) {
      const c = await linearStackStepCosts(int4.manifest.config, variant, options);
      for (const v of [c.prefillMs, c.prefillBatchMs, c.decode1Ms, c.decodeBatchMs]) expect(v > 0 && Number.isFinite(v)).toBe(true);
    }
  });
});
