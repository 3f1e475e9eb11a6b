/**
 * The device-resident KV path (what `--device webgpu` serves through) behind the ordinary shard controller, checked on
 * the CPU provider, where the same rewritten graphs run with the state returned to the host: the same logits as the
 * default path for prefill, decode and rows with different adapters; through the engine, steps sampled in the graph
 * give the default path's greedy tokens, a row the graph cannot sample comes back as logits while its batch mates are
 * still sampled in the graph, and a seeded temperature request keeps its tokens whatever its batch mates need.
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
  const resident = await ThreadExecutor.start({ ...options, runnerKind: 'device-kv' });
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

/**
 * Runs the six requests (or those of `only`, results in that order) through an engine over `executor` (prompts of
 * 3..28 tokens in chunks of 8: mixed steps).
 */
async function generate(executor: Executor, rows: (i: number) => Row, only = PROMPTS.map((_, i) => i)) {
  const engine = createEngine({ executor, detokenizer: null, eosTokenIds: [], maxBatchTokens: 32, prefillChunkTokens: 8, maxRunningSequences: 6 });
  try {
    return await Promise.all(
      only.map(async (i) => {
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

test('engine over the device-resident KV controller samples in the graph: the default path\'s greedy tokens; penalty and top-n rows alone come back as logits', async () => {
  const { convertedDir } = await tinyModel({ quant: 'fp32', numAdapters: 0 });
  const options = { modelDir: convertedDir, device: 'cpu' as const, kvCacheBytes: 8 << 20, blockSizeTokens: 8, numAdapterSlots: 1, maxAdapterRank: 8 };
  const reference = await ThreadExecutor.start(options);
  const resident = await ThreadExecutor.start({ ...options, runnerKind: 'device-kv' });
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
    expect(plans.every(({ plan }) => plan.sequences.every((s) => !s.sampleNext || s.loopSampling !== undefined))).toBe(true);
    expect(plans.every(({ result }) => result.outcomes.every((o) => o.kind === 'sampled' || o.kind === 'none'))).toBe(true);
    expect(plans.some(({ plan }) => plan.sequences.some((s) => s.tokenIds.length > 1) && plan.sequences.some((s) => s.tokenIds.length === 1))).toBe(true);
    expect(plans.every(({ result }) => result.logits.length === 0)).toBe(true);

    // Row 2 with a repetition penalty, row 4 asking for top-2 logprobs: host-only, so their rows come back as logits;
    // their batch mates are still sampled in the graph, and all match the default path.
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
    let mixedSteps = 0;
    for (const { plan, result } of withHostRow) {
      const hostRows = plan.sequences.filter((s) => s.sampleNext && hostOnly.has(s.seqId));
      const graphRows = plan.sequences.filter((s) => s.sampleNext && !hostOnly.has(s.seqId));
      for (const s of hostRows) expect(s.loopSampling).toBeUndefined();
      for (const s of graphRows) expect(s.loopSampling).toBeDefined();
      for (const s of hostRows) expect(result.outcomes.find((o) => o.seqId === s.seqId)?.kind).toBe('logits');
      for (const s of graphRows) expect(result.outcomes.find((o) => o.seqId === s.seqId)?.kind).toBe('sampled');
      // Only the host rows' logits cross back; the others come as sampled tokens.
      expect(result.logits.length).toBe(hostRows.length * result.vocabSize);
      expect(result.sampledTokens?.tokenIds.length ?? 0).toBe(graphRows.length);
      if (graphRows.length > 0) mixedSteps++;
    }
    expect(mixedSteps).toBeGreaterThan(0);
  } finally {
    await reference.shutdown();
    await resident.shutdown();
  }
});

test('a seeded temperature request gives the same tokens alone, among greedy rows and among host-sampled rows (penalty, top-n)', async () => {
  const { convertedDir } = await tinyModel({ quant: 'fp32', numAdapters: 0 });
  const resident = await ThreadExecutor.start({ modelDir: convertedDir, device: 'cpu', kvCacheBytes: 8 << 20, blockSizeTokens: 8, numAdapterSlots: 1, maxAdapterRank: 8, runnerKind: 'device-kv' });
  const plans: StepPlan[] = [];
  const recording: Executor = {
    layout: resident.layout,
    execute: (plan) => {
      plans.push(plan);
      return resident.execute(plan);
    },
    shutdown: async () => {},
  };
  const SEEDED = 1;
  try {
    for (const topK of [0, 20]) {
      const seeded: SamplingParams = { ...GREEDY, temperature: 0.8, topK, seed: 4242 };
      const withMates = (mates: (i: number) => Row) => (i: number): Row => (i === SEEDED ? { sampling: seeded } : mates(i));
      const [alone] = await generate(recording, withMates(() => ({})), [SEEDED]);
      const amongGreedy = await generate(recording, withMates(() => ({})));
      plans.length = 0;
      const hostMates = (i: number): Row => (i === 2 ? { sampling: { ...GREEDY, repetitionPenalty: 1.3 } } : i === 4 ? { topNLogprobs: 2 } : {});
      const amongHost = await generate(recording, withMates(hostMates));
      const [greedyAlone] = await generate(recording, () => ({}), [SEEDED]);

      expect(alone.ids).toHaveLength(MAX_NEW[SEEDED]);
      expect(alone.ids, 'temperature 0.8 leaves the greedy path on this model').not.toEqual(greedyAlone.ids);
      for (const [what, other] of [['among greedy rows', amongGreedy[SEEDED]], ['among host-sampled rows', amongHost[SEEDED]]] as const) {
        expect(other.ids, `top-k ${topK}, ${what}`).toEqual(alone.ids);
        other.logprobs.forEach((lp, j) => expect(Math.abs(lp - alone.logprobs[j])).toBeLessThan(1e-5));
      }
      expect(amongHost[4].numTop).toBe(2 * MAX_NEW[4]);
      // The case that matters: steps where the seeded row samples next to a row only the host sampler can take.
      const seededIds = new Set(plans.flatMap((p) => p.sequences.filter((s) => s.startPosition === 0 && s.tokenIds.join() === PROMPTS[SEEDED].slice(0, s.tokenIds.length).join()).map((s) => s.seqId)));
      const hostOnly = new Set(plans.flatMap((p) => p.sequences.filter((s) => s.startPosition === 0 && [2, 4].some((i) => PROMPTS[i].slice(0, s.tokenIds.length).join() === s.tokenIds.join())).map((s) => s.seqId)));
      const shared = plans.filter((p) => p.sequences.some((s) => s.sampleNext && seededIds.has(s.seqId)) && p.sequences.some((s) => s.sampleNext && hostOnly.has(s.seqId)));
      expect(shared.length).toBeGreaterThan(0);
    }
  } finally {
    await resident.shutdown();
  }
});
