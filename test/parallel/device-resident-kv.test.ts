/**
 * The device-resident KV path (what `--device webgpu` serves through) behind the ordinary shard controller, checked on
 * the CPU provider, where the same rewritten graphs run with the state returned to the host: the same logits as the
 * default path for prefill, decode and rows with different adapters; through the engine, steps sampled in the graph
 * give the default path's greedy tokens, and a row the graph cannot sample makes its steps return logits.
 */
import { expect, test } from 'vitest';
import { readPeftAdapter } from '../../src/adapters/peft/peft-adapter.ts';
import { createEngine } from '../../src/engine/engine.ts';
import type { Executor, StepPlan, StepResult } from '../../src/engine/executor.ts';
import type { SamplingParams, ValidGenerateRequest } from '../../src/engine/request.ts';
import { ThreadExecutor } from '../../src/parallel/thread-executor.ts';
import { tinyModel } from '../helpers/tiny-model.ts';

function rowsOf(result: StepResult, vocab: number): Map<number, Float32Array> {
  return new Map(result.outcomes.filter((o) => o.logitsRow >= 0).map((o) => [o.seqId, result.logits.slice(o.logitsRow * vocab, (o.logitsRow + 1) * vocab)]));
}

test('device-resident KV behind the controller == the default path (prefill, decode, adapters per row)', async () => {
  const { hf, convertedDir } = await tinyModel({ quant: 'fp32', numAdapters: 2 });
  const options = { modelDir: convertedDir, device: 'cpu' as const, kvCacheBytes: 8 << 20, blockSizeTokens: 8, numAdapterSlots: 3, maxAdapterRank: 8 };
  const reference = await ThreadExecutor.start(options);
  const resident = await ThreadExecutor.start({ ...options, deviceResidentKv: true });
  try {
    for (const [slot, dir] of hf.adapterDirs.entries()) {
      const adapter = readPeftAdapter(dir, hf.config);
      await reference.loadAdapterSlot(slot + 1, adapter);
      await resident.loadAdapterSlot(slot + 1, adapter);
    }
    const prompts = [[3, 17, 42, 5], [9, 8, 7, 6, 5, 4, 3], [100, 200]];
    const tables = [[0, 1], [2, 3], [4, 5]];
    const plans: StepPlan[] = [{ stepId: 1, sequences: prompts.map((p, i) => ({ seqId: i, tokenIds: p, startPosition: 0, blockTable: tables[i], adapterSlot: i, sampleNext: true })) }];
    for (let step = 0; step < 3; step++) {
      plans.push({ stepId: 2 + step, sequences: prompts.map((p, i) => ({ seqId: i, tokenIds: [11 + step], startPosition: p.length + step, blockTable: tables[i], adapterSlot: i, sampleNext: true })) });
    }
    for (const plan of plans) {
      const [a, b] = [await reference.execute(plan), await resident.execute(plan)];
      const vocab = a.vocabSize;
      const ra = rowsOf(a, vocab);
      const rb = rowsOf(b, vocab);
      expect([...rb.keys()].sort()).toEqual([...ra.keys()].sort());
      for (const [seqId, row] of ra) {
        const other = rb.get(seqId)!;
        let diff = 0;
        for (let i = 0; i < vocab; i++) diff = Math.max(diff, Math.abs(row[i] - other[i]));
        expect(diff).toBeLessThanOrEqual(1e-4);
      }
    }
  } finally {
    await reference.shutdown();
    await resident.shutdown();
  }
});

const GREEDY: SamplingParams = { temperature: 0, topK: 0, topP: 1, minP: 0, seed: null, repetitionPenalty: 1, presencePenalty: 0, frequencyPenalty: 0 };
const PROMPTS = Array.from({ length: 6 }, (_, i) => Array.from({ length: 3 + i * 5 }, (_, j) => (i * 41 + j * 13) % 400 + 3));
const MAX_NEW = [9, 12, 7, 10, 8, 11];

interface Row {
  sampling?: SamplingParams;
  topNLogprobs?: number;
}

function request(i: number, row: Row): ValidGenerateRequest {
  return {
    requestId: `r${i}`,
    promptTokenIds: PROMPTS[i],
    adapterId: null,
    tenantId: null,
    sampling: row.sampling ?? GREEDY,
    stopping: { maxNewTokens: MAX_NEW[i], stopSequences: [], stopTokenIds: [], ignoreEos: true },
    topNLogprobs: row.topNLogprobs ?? 0,
    deadlineMs: null,
  };
}

/** Runs the six requests through an engine over `executor` (prompts of 3..28 tokens in chunks of 8: mixed steps). */
async function generate(executor: Executor, rows: (i: number) => Row) {
  const engine = createEngine({ executor, detokenizer: null, eosTokenIds: [], maxBatchTokens: 32, prefillChunkTokens: 8, maxRunningSequences: 6 });
  try {
    return await Promise.all(
      PROMPTS.map(async (_, i) => {
        const out = { ids: [] as number[], logprobs: [] as number[], numTop: 0 };
        for await (const e of engine.submit(request(i, rows(i)))) {
          if (e.type !== 'tokens') continue;
          for (const t of e.tokens) {
            out.ids.push(t.tokenId);
            out.logprobs.push(t.logprob);
            out.numTop += t.top.length;
          }
        }
        return out;
      }),
    );
  } finally {
    await engine.shutdown();
  }
}

test('engine over the device-resident KV controller samples in the graph: the default path\'s greedy tokens; penalty and top-n rows fall back to logits', async () => {
  const { convertedDir } = await tinyModel({ quant: 'fp32', numAdapters: 0 });
  const options = { modelDir: convertedDir, device: 'cpu' as const, kvCacheBytes: 8 << 20, blockSizeTokens: 8, numAdapterSlots: 1, maxAdapterRank: 8 };
  const reference = await ThreadExecutor.start(options);
  const resident = await ThreadExecutor.start({ ...options, deviceResidentKv: true });
  const plans: Array<{ plan: StepPlan; result: StepResult }> = [];
  const recording: Executor = {
    layout: resident.layout,
    execute: async (plan) => {
      const result = await resident.execute(plan);
      plans.push({ plan, result });
      return result;
    },
    shutdown: async () => {},
  };
  try {
    expect(reference.layout.samplesInGraph).toBeUndefined();
    expect(resident.layout.samplesInGraph).toBe(true);

    const greedy = await generate(reference, () => ({}));
    const inGraph = await generate(recording, () => ({}));
    expect(inGraph.map((r) => r.ids)).toEqual(greedy.map((r) => r.ids));
    greedy.forEach((r, i) => {
      expect(r.ids).toHaveLength(MAX_NEW[i]);
      r.logprobs.forEach((lp, j) => expect(Math.abs(lp - inGraph[i].logprobs[j])).toBeLessThan(1e-4));
    });
    // Every step sampled in the graph, mixed prefill + decode steps included, and no logits came back.
    expect(plans.every(({ plan }) => plan.sampleInGraph === true || plan.sequences.every((s) => !s.sampleNext))).toBe(true);
    expect(plans.some(({ plan }) => plan.sequences.some((s) => s.tokenIds.length > 1) && plan.sequences.some((s) => s.tokenIds.length === 1))).toBe(true);
    expect(plans.every(({ result }) => result.logits.length === 0)).toBe(true);

    // Row 2 with a repetition penalty, row 4 asking for top-2 logprobs: host-only, so the steps they sample in come
    // back as logits; the others still match the default path, and once both are done the steps go in-graph again.
    const rows = (i: number): Row => (i === 2 ? { sampling: { ...GREEDY, repetitionPenalty: 1.3 } } : i === 4 ? { topNLogprobs: 2 } : {});
    const hostRef = await generate(reference, rows);
    plans.length = 0;
    const mixed = await generate(recording, rows);
    expect(mixed.map((r) => r.ids)).toEqual(hostRef.map((r) => r.ids));
    expect(mixed[4].numTop).toBe(2 * MAX_NEW[4]);
    // Which seqIds are rows 2 and 4: their first chunk is the start of their prompt.
    const hostOnly = new Set<number>();
    for (const { plan } of plans) {
      for (const s of plan.sequences) {
        if (s.startPosition === 0 && [2, 4].some((i) => PROMPTS[i].slice(0, s.tokenIds.length).join() === s.tokenIds.join())) hostOnly.add(s.seqId);
      }
    }
    expect(hostOnly.size).toBe(2);
    const withHostRow = plans.filter(({ plan }) => plan.sequences.some((s) => s.sampleNext && hostOnly.has(s.seqId)));
    expect(withHostRow.length).toBeGreaterThan(0);
    for (const { plan, result } of withHostRow) {
      expect(plan.sampleInGraph).toBeUndefined();
      expect(result.logits.length).toBeGreaterThan(0);
    }
    expect(plans.filter(({ plan }) => plan.sampleInGraph === true).length).toBeGreaterThan(0);
  } finally {
    await reference.shutdown();
    await resident.shutdown();
  }
});
