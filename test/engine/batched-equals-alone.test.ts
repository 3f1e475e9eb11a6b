import { describe, expect, test } from 'vitest';
import { createEngine, type EngineOptions } from '../../src/engine/engine.ts';
import type { Executor } from '../../src/engine/executor.ts';
import type { SamplingParams, ValidGenerateRequest } from '../../src/engine/request.ts';
import { ModelRunner } from '../../src/model/runner/model-runner.ts';
import { tinyModel } from '../helpers/tiny-model.ts';

/** The real runner (real ORT sessions) as the engine's executor, in-process: this file tests scheduling + model, not threads. */
async function runnerExecutor(modelDir: string): Promise<Executor> {
  const runner = await ModelRunner.create({ modelDir, kvCacheBytes: 16 << 20, blockSizeTokens: 8, numAdapterSlots: 1, maxAdapterRank: 8 });
  return { layout: runner.layout, execute: (plan) => runner.execute(plan), shutdown: () => runner.release() };
}

const GREEDY: SamplingParams = { temperature: 0, topK: 0, topP: 1, minP: 0, seed: null, repetitionPenalty: 1, presencePenalty: 0, frequencyPenalty: 0 };

function request(id: number, prompt: number[], sampling: SamplingParams, maxNewTokens = 12): ValidGenerateRequest {
  return {
    requestId: `r${id}`,
    promptTokenIds: prompt,
    adapterId: null,
    tenantId: null,
    sampling,
    stopping: { maxNewTokens, stopSequences: [], stopTokenIds: [], ignoreEos: true },
    topNLogprobs: 0,
    deadlineMs: null,
  };
}

async function tokensOf(events: AsyncIterable<{ type: string; tokens?: Array<{ tokenId: number }>; reason?: string }>): Promise<number[]> {
  const ids: number[] = [];
  for await (const e of events) {
    if (e.type === 'tokens') ids.push(...e.tokens!.map((t) => t.tokenId));
    else expect(e.reason).toBe('length');
  }
  return ids;
}

describe('engine + real runner (tiny fp32): a request gives the same tokens alone and batched', async () => {
  const { convertedDir } = await tinyModel({ quant: 'fp32', numAdapters: 0 });
  // Prompts of different lengths (3..41 tokens), so the batch mixes chunked prefills and decodes.
  const prompts = Array.from({ length: 8 }, (_, i) => Array.from({ length: 3 + i * 5 + (i % 3) }, (_, j) => (i * 31 + j * 7) % 500 + 1));
  const engineOptions: Omit<EngineOptions, 'executor'> = { detokenizer: null, eosTokenIds: [], maxBatchTokens: 64, prefillChunkTokens: 16, maxRunningSequences: 8 };

  const cases: Array<[string, (i: number) => SamplingParams]> = [
    ['greedy', () => GREEDY],
    ['seeded sampling (temperature 0.9, top-p 0.95, top-k 40)', (i) => ({ ...GREEDY, temperature: 0.9, topP: 0.95, topK: 40, seed: 1000 + i })],
  ];
  for (const [name, sampling] of cases) {
    test(name, async () => {
      const executor = await runnerExecutor(convertedDir);
      const engine = createEngine({ executor, ...engineOptions });
      const alone: number[][] = [];
      for (let i = 0; i < prompts.length; i++) alone.push(await tokensOf(engine.submit(request(i, prompts[i], sampling(i)))));
      const stepsAlone = engine.stats().stepCount;
      const batched = await Promise.all(prompts.map((p, i) => tokensOf(engine.submit(request(i, p, sampling(i))))));
      const stepsBatched = engine.stats().stepCount - stepsAlone;
      expect(batched).toEqual(alone);
      // The batched run really shared steps (continuous batching), rather than running one request after another.
      expect(stepsBatched).toBeLessThan(stepsAlone / 2);
      for (const ids of alone) expect(ids).toHaveLength(12);
      expect(new Set(alone.map((a) => a.join(','))).size).toBeGreaterThan(1);
      await engine.shutdown();
      await executor.shutdown();
    });
  }

  test('same seed, same tokens; another seed, other tokens', async () => {
    const executor = await runnerExecutor(convertedDir);
    const engine = createEngine({ executor, ...engineOptions });
    const sampling = (seed: number): SamplingParams => ({ ...GREEDY, temperature: 1.5, seed });
    const a = await tokensOf(engine.submit(request(1, prompts[2], sampling(7), 24)));
    const b = await tokensOf(engine.submit(request(2, prompts[2], sampling(7), 24)));
    const c = await tokensOf(engine.submit(request(3, prompts[2], sampling(8), 24)));
    expect(b).toEqual(a);
    expect(c).not.toEqual(a);
    await engine.shutdown();
    await executor.shutdown();
  });
});
