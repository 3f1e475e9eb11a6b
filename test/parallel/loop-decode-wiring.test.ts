/**
 * The Loop runner behind the shard controller and a worker thread (what `--device cuda` serves through), on the CPU
 * provider: an engine with decodeStepsPerRun 4 over it gives the default path's greedy tokens; `--device cuda` without
 * CUDA fails with DEVICE_UNAVAILABLE; a sharded group cannot take it.
 */
import { expect, test } from 'vitest';
import { createEngine } from '../../src/engine/engine.ts';
import type { Executor, StepPlan } from '../../src/engine/executor.ts';
import type { SamplingParams, ValidGenerateRequest } from '../../src/engine/request.ts';
import { ThreadExecutor } from '../../src/parallel/thread-executor.ts';
import { tinyModel } from '../helpers/tiny-model.ts';

const GREEDY: SamplingParams = { temperature: 0, topK: 0, topP: 1, minP: 0, seed: null, repetitionPenalty: 1, presencePenalty: 0, frequencyPenalty: 0 };

async function generate(executor: Executor, decodeStepsPerRun: number, prompts: number[][]): Promise<number[][]> {
  const engine = createEngine({ executor, detokenizer: null, eosTokenIds: [], maxBatchTokens: 64, maxRunningSequences: 8, decodeStepsPerRun });
  const one = async (prompt: number[], i: number) => {
    const req: ValidGenerateRequest = {
      requestId: `r${i}`,
      promptTokenIds: prompt,
      adapterId: null,
      tenantId: null,
      sampling: GREEDY,
      stopping: { maxNewTokens: 9 + i, stopSequences: [], stopTokenIds: [], ignoreEos: true },
      topNLogprobs: 0,
      deadlineMs: null,
    };
    const ids: number[] = [];
    for await (const e of engine.submit(req)) if (e.type === 'tokens') ids.push(...e.tokens.map((t) => t.tokenId));
    return ids;
  };
  try {
    return await Promise.all(prompts.map(one));
  } finally {
    await engine.shutdown();
  }
}

test('controller + worker thread with the loop-decode runner: engine k = 4 == default path k = 1 (greedy)', async () => {
  const { convertedDir } = await tinyModel({ quant: 'fp32', numAdapters: 0 });
  const options = { modelDir: convertedDir, device: 'cpu' as const, kvCacheBytes: 8 << 20, blockSizeTokens: 8, numAdapterSlots: 1, maxAdapterRank: 8 };
  const reference = await ThreadExecutor.start(options);
  const loop = await ThreadExecutor.start({ ...options, runnerKind: 'loop-decode', maxDecodeStepsPerRun: 8 });
  try {
    expect(loop.layout.maxDecodeStepsPerRun).toBe(8);
    expect(reference.layout.maxDecodeStepsPerRun).toBeUndefined();
    const prompts = [[5, 6, 7], [40, 41, 42, 43, 44, 45, 46], [300]];
    const plans: StepPlan[] = [];
    const counting: Executor = { layout: loop.layout, execute: (p) => (plans.push(p), loop.execute(p)), shutdown: async () => {} };
    const expected = await generate(reference, 1, prompts);
    expect(await generate(counting, 4, prompts)).toEqual(expected);
    expect(plans.filter((p) => (p.decodeSteps ?? 1) > 1).length).toBeGreaterThan(0);
  } finally {
    await reference.shutdown();
    await loop.shutdown();
  }
});

test('--device cuda without CUDA fails with DEVICE_UNAVAILABLE; the loop-decode runner needs world size 1', async () => {
  const { convertedDir } = await tinyModel({ quant: 'fp32', numAdapters: 0 });
  const options = { modelDir: convertedDir, kvCacheBytes: 8 << 20, blockSizeTokens: 8, numAdapterSlots: 1, maxAdapterRank: 8 };
  await expect(ThreadExecutor.start({ ...options, device: 'cuda' })).rejects.toMatchObject({ code: 'DEVICE_UNAVAILABLE' });
  await expect(ThreadExecutor.start({ ...options, runnerKind: 'loop-decode', pp: 2 })).rejects.toThrow(/`tp` x `pp` must be 1 .* Given: 1 x 2/);
});
