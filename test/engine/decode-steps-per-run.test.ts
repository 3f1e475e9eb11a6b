/**
 * The engine with k decode steps per executor call (LoopDecodeRunner, CPU provider): exactly the greedy output of one
 * step per call, with rows that stop mid-chunk (max tokens, a stop id, EOS); a non-eligible row (penalty) keeps every
 * step single; bad k is rejected at construction.
 */
import { beforeAll, afterAll, describe, expect, test } from 'vitest';
import { createEngine } from '../../src/engine/engine.ts';
import type { Executor, StepPlan } from '../../src/engine/executor.ts';
import type { FinishReason, SamplingParams, ValidGenerateRequest } from '../../src/engine/request.ts';
import { LoopDecodeRunner } from '../../src/model/runner/loop-decode-runner.ts';
import { tinyModel } from '../helpers/tiny-model.ts';

const GREEDY: SamplingParams = { temperature: 0, topK: 0, topP: 1, minP: 0, seed: null, repetitionPenalty: 1, presencePenalty: 0, frequencyPenalty: 0 };
const PROMPTS = Array.from({ length: 8 }, (_, i) => Array.from({ length: 2 + i * 3 }, (_, j) => (i * 37 + j * 11) % 400 + 3));
const MAX_NEW = [12, 9, 14, 11, 13, 6, 10, 7];

interface Row {
  sampling?: SamplingParams;
  stopTokenIds?: number[];
  ignoreEos?: boolean;
}

function request(i: number, row: Row = {}): ValidGenerateRequest {
  return {
    requestId: `r${i}`,
    promptTokenIds: PROMPTS[i],
    adapterId: null,
    tenantId: null,
    sampling: row.sampling ?? GREEDY,
    stopping: { maxNewTokens: MAX_NEW[i], stopSequences: [], stopTokenIds: row.stopTokenIds ?? [], ignoreEos: row.ignoreEos ?? true },
    topNLogprobs: 0,
    deadlineMs: null,
  };
}

async function collect(events: AsyncIterable<{ type: string; tokens?: Array<{ tokenId: number; logprob: number }>; reason?: FinishReason }>) {
  const ids: number[] = [];
  const logprobs: number[] = [];
  let reason: FinishReason | undefined;
  for await (const e of events) {
    if (e.type !== 'tokens') reason = e.reason;
    for (const t of e.tokens ?? []) {
      ids.push(t.tokenId);
      logprobs.push(t.logprob);
    }
  }
  return { ids, logprobs, reason };
}

describe('engine decodeStepsPerRun with the Loop runner (tiny fp32, CPU provider)', () => {
  let runner: LoopDecodeRunner;
  const plans: StepPlan[] = [];
  let executor: Executor;

  beforeAll(async () => {
    const { convertedDir } = await tinyModel({ quant: 'fp32', numAdapters: 0 });
    runner = await LoopDecodeRunner.create({ modelDir: convertedDir, kvCacheBytes: 16 << 20, blockSizeTokens: 8, numAdapterSlots: 1, maxAdapterRank: 8, maxDecodeStepsPerRun: 8 });
    executor = {
      layout: runner.layout,
      execute: (plan) => {
        plans.push(plan);
        return runner.execute(plan);
      },
      shutdown: async () => {},
    };
  });
  afterAll(async () => runner?.release());

  async function run(decodeStepsPerRun: number, rows: (i: number) => Row, eosTokenIds: number[] = []) {
    plans.length = 0;
    const engine = createEngine({ executor, detokenizer: null, eosTokenIds, maxBatchTokens: 64, prefillChunkTokens: 16, maxRunningSequences: 8, decodeStepsPerRun });
    try {
      return await Promise.all(PROMPTS.map((_, i) => collect(engine.submit(request(i, rows(i))))));
    } finally {
      await engine.shutdown();
    }
  }

  test('k = 4 gives exactly the greedy output of k = 1, with rows stopping mid-chunk (max tokens, stop id, EOS)', async () => {
    const free = await run(1, () => ({}));
    // Row 3 stops at a stop id, row 5 at EOS: tokens they produce part-way, not seen earlier in their own output.
    const pick = (ids: number[]) => ids.find((t, j) => j >= 2 && !ids.slice(0, j).includes(t))!;
    const stopId = pick(free[3].ids);
    const eos = pick(free[5].ids);
    const rows = (i: number): Row => (i === 3 ? { stopTokenIds: [stopId] } : i === 5 ? { ignoreEos: false } : {});
    const single = await run(1, rows, [eos]);
    expect(plans.some((p) => p.decodeSteps !== undefined)).toBe(false);
    const multi = await run(4, rows, [eos]);
    const multiPlans = plans.filter((p) => (p.decodeSteps ?? 1) > 1);
    expect(multiPlans.length).toBeGreaterThanOrEqual(2);
    expect(Math.max(...multiPlans.map((p) => p.decodeSteps!))).toBe(4);
    expect(plans.length).toBeLessThan(Math.max(...MAX_NEW)); // fewer executor calls than tokens of the longest row
    expect(multi.map((r) => r.ids)).toEqual(single.map((r) => r.ids));
    expect(multi.map((r) => r.reason)).toEqual(single.map((r) => r.reason));
    expect(single[3].reason).toBe('stop');
    expect(single[5].reason).toBe('eos');
    expect(single[0].reason).toBe('length');
    single.forEach((r, i) => {
      if (i !== 3 && i !== 5) expect(r.ids).toHaveLength(MAX_NEW[i]);
      r.logprobs.forEach((lp, j) => expect(Math.abs(lp - multi[i].logprobs[j])).toBeLessThan(1e-4));
    });
  });

  test('a non-eligible row (repetition penalty) in the batch keeps every step single, and the rest still match', async () => {
    const rows = (i: number): Row => (i === 7 ? { sampling: { ...GREEDY, repetitionPenalty: 1.3 } } : {});
    const single = await run(1, rows);
    // Row 7 has the longest prompt but not the longest output: once it is done, the others go multi-step.
    MAX_NEW[7] = 16;
    try {
      const singleLong = await run(1, rows);
      const multi = await run(4, rows);
      expect(plans.every((p) => (p.decodeSteps ?? 1) === 1)).toBe(true); // row 7 runs to the end: never eligible together
      expect(multi.map((r) => r.ids)).toEqual(singleLong.map((r) => r.ids));
      expect(single[7].ids).not.toEqual([]);
    } finally {
      MAX_NEW[7] = 7;
    }
  });

  test('bad k is rejected when the engine is made', () => {
    const make = (k: number, layout = executor.layout) => () => createEngine({ executor: { ...executor, layout }, detokenizer: null, eosTokenIds: [], decodeStepsPerRun: k });
    expect(make(0)).toThrow(/`decodeStepsPerRun` must be an integer >= 1 and <= 8 .* Given: 0/);
    expect(make(9)).toThrow(/Given: 9/);
    expect(make(2.5)).toThrow(/Given: 2.5/);
    // An executor that does not declare multi-step support takes only 1.
    expect(make(2, { ...executor.layout, maxDecodeStepsPerRun: undefined })).toThrow(/<= 1 .* Given: 2/);
  });
});
