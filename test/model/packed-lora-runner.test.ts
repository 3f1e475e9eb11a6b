/**
 * The packed int8 multi-LoRA graph (quantized models) against the exact per-row gather graph, on a real converted tiny
 * int4 model: same greedy tokens, logits within a small fraction of the adapters' effect, base rows unchanged, a slot
 * write or clear between steps is seen by the next step, and the serving shard runner uses it too.
 */
import { cpSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { readPeftAdapter } from '../../src/adapters/peft/peft-adapter.ts';
import type { StepPlan, StepResult } from '../../src/engine/executor.ts';
import type { ModelManifest } from '../../src/model/converted-model.ts';
import type { LoraWeights } from '../../src/model/runner/adapter-slot-stacks.ts';
import { ModelRunner } from '../../src/model/runner/model-runner.ts';
import { ShardRunner } from '../../src/parallel/shard-runner.ts';
import { tempDir, tinyModel } from '../helpers/tiny-model.ts';

const PROMPT_A = [3, 17, 42, 5, 9, 11];
const PROMPT_B = [100, 200, 7];
/** Rows: adapter in slot 1, adapter in slot 3 (slot 2 stays empty: a hole), and the base model on PROMPT_A. */
const ROWS = [
  { prompt: PROMPT_A, slot: 1, table: [0, 1] },
  { prompt: PROMPT_B, slot: 3, table: [2, 3] },
  { prompt: PROMPT_A, slot: 0, table: [4, 5] },
];

function logitsRows(r: StepResult): Float32Array[] {
  const sorted = [...r.outcomes].sort((x, y) => x.seqId - y.seqId);
  return sorted.map((o) => r.logits.subarray(o.logitsRow * r.vocabSize, (o.logitsRow + 1) * r.vocabSize));
}

function argmax(row: Float32Array): number {
  let best = 0;
  for (let i = 1; i < row.length; i++) if (row[i] > row[best]) best = i;
  return best;
}

/**
 * Greedy tokens agree, except where the exact logits have a near tie: the packed graph's token then scores within
 * twice that row's logit error of the exact best (random tiny models have close top logits).
 */
function expectSameOrTiedTokens(packedRows: Float32Array[], exactRows: Float32Array[]): void {
  let same = 0;
  for (let r = 0; r < exactRows.length; r++) {
    const [p, g] = [argmax(packedRows[r]), argmax(exactRows[r])];
    if (p === g) same++;
    else expect(exactRows[r][g] - exactRows[r][p]).toBeLessThanOrEqual(2 * maxAbsDiff(packedRows[r], exactRows[r]));
  }
  expect(same).toBeGreaterThanOrEqual(exactRows.length - 1);
}

function maxAbsDiff(x: Float32Array, y: Float32Array): number {
  let d = 0;
  for (let i = 0; i < x.length; i++) d = Math.max(d, Math.abs(x[i] - y[i]));
  return d;
}

describe('packed int8 multi-LoRA graph (quantized models)', () => {
  let packed: ModelRunner;
  let gather: ModelRunner;
  let adapters: LoraWeights[];
  let shard: ShardRunner;

  beforeAll(async () => {
    const { hf, convertedDir } = await tinyModel({ quant: 'int4', numAdapters: 2 });
    const manifest = JSON.parse(readFileSync(join(convertedDir, 'manifest.json'), 'utf8')) as ModelManifest;
    expect(manifest.graphs.loraPacked).toBeDefined();
    // The same converted model without the packed graph: every LoRA group runs the gather graph.
    const gatherDir = join(tempDir('gather-only'), 'model');
    cpSync(convertedDir, gatherDir, { recursive: true });
    writeFileSync(join(gatherDir, 'manifest.json'), JSON.stringify({ ...manifest, graphs: { base: manifest.graphs.base, lora: manifest.graphs.lora } }));
    const options = { kvCacheBytes: 8 << 20, blockSizeTokens: 8, numAdapterSlots: 4, maxAdapterRank: 8, intraOpThreads: 1 };
    packed = await ModelRunner.create({ ...options, modelDir: convertedDir });
    gather = await ModelRunner.create({ ...options, modelDir: gatherDir });
    adapters = hf.adapterDirs.map((dir) => readPeftAdapter(dir, hf.config));
    expect(new Set(adapters.map((a) => a.rank)).size).toBe(2); // two ranks: packed columns are not padded
    // The serving path's whole-model shard (thread executor) over the same files.
    const position = { stage: 0, numStages: 1, layerStart: 0, layerEnd: hf.config.numLayers, tpRank: 0, tpSize: 1 };
    shard = await ShardRunner.create({ modelDir: convertedDir, position, numKvBlocks: 16, blockSizeTokens: 8, numAdapterSlots: 4, maxAdapterRank: 8, intraOpThreads: 1 });
    for (const runner of [packed, gather, shard]) {
      runner.loadAdapterSlot(1, adapters[0]);
      runner.loadAdapterSlot(3, adapters[1]);
    }
  });
  afterAll(async () => {
    await shard?.release();
    await packed?.release();
    await gather?.release();
  });

  const prefillPlan = (seqBase: number): StepPlan => ({
    stepId: 1,
    sequences: ROWS.map((r, i) => ({ seqId: seqBase + i, tokenIds: r.prompt, startPosition: 0, blockTable: r.table, adapterSlot: r.slot, sampleNext: true })),
  });
  const decodePlan = (seqBase: number, tokens: number[], step: number): StepPlan => ({
    stepId: 2 + step,
    sequences: ROWS.map((r, i) => ({ seqId: seqBase + i, tokenIds: [tokens[i]], startPosition: r.prompt.length + step, blockTable: r.table, adapterSlot: r.slot, sampleNext: true })),
  });

  test('prefill and decode steps: same greedy tokens as the gather graph, logits within 5% / 2% of the adapter effect, base row exact', async () => {
    const [p0, g0] = [logitsRows(await packed.execute(prefillPlan(0))), logitsRows(await gather.execute(prefillPlan(0)))];
    expect(maxAbsDiff(p0[2], g0[2])).toBeLessThan(1e-5);
    // Prefill quantizes x over all of the group's tokens (one range per tensor): a little coarser than decode.
    expect(maxAbsDiff(p0[0], g0[0])).toBeLessThan(0.05 * maxAbsDiff(g0[0], g0[2]));
    expectSameOrTiedTokens(p0, g0);
    let tokens = g0.map(argmax);
    let worst = 0;
    for (let step = 0; step < 6; step++) {
      const p = logitsRows(await packed.execute(decodePlan(0, tokens, step)));
      const g = logitsRows(await gather.execute(decodePlan(0, tokens, step)));
      // The adapter's effect at this step: adapted row vs the base row on the same prompt and token (rows 0 and 2).
      const effect = step === 0 ? maxAbsDiff(g[0], g[2]) : null;
      if (effect !== null) expect(effect).toBeGreaterThan(0.05);
      const error = Math.max(maxAbsDiff(p[0], g[0]), maxAbsDiff(p[1], g[1]));
      if (effect !== null) worst = Math.max(worst, error / effect);
      expect(maxAbsDiff(p[2], g[2])).toBeLessThan(1e-5);
      expectSameOrTiedTokens(p, g);
      tokens = g.map(argmax);
    }
    expect(worst).toBeLessThan(0.02);
  });

  test('a slot cleared or rewritten between decode steps is seen by the next step', async () => {
    const g0 = logitsRows(await gather.execute(prefillPlan(10)));
    await packed.execute(prefillPlan(10));
    const tokens = g0.map(argmax);
    const before = logitsRows(await packed.execute(decodePlan(10, tokens, 0)));
    // Slot 1 now holds adapter 1 and slot 3 is cleared (its row runs as the base model would: the slot is empty).
    for (const runner of [packed, gather]) {
      runner.loadAdapterSlot(1, adapters[1]);
      runner.clearAdapterSlot(3);
    }
    try {
      const p = logitsRows(await packed.execute(decodePlan(10, tokens, 0)));
      const g = logitsRows(await gather.execute(decodePlan(10, tokens, 0)));
      expectSameOrTiedTokens(p, g);
      const effect = maxAbsDiff(g[0], g[2]);
      // Only the prefill (packed vs exact, into the KV cache) separates the graphs now on the cleared row.
      expect(maxAbsDiff(p[1], g[1])).toBeLessThan(0.05 * effect);
      expect(maxAbsDiff(p[0], g[0])).toBeLessThan(0.05 * effect);
      // and the packed graph did change its answer for both rows
      expect(maxAbsDiff(p[0], before[0])).toBeGreaterThan(0.2 * effect);
      expect(maxAbsDiff(p[1], before[1])).toBeGreaterThan(0.01);
    } finally {
      for (const runner of [packed, gather]) {
        runner.loadAdapterSlot(1, adapters[0]);
        runner.loadAdapterSlot(3, adapters[1]);
      }
    }
  });

  test('the serving shard runner runs the packed graph too (== ModelRunner)', async () => {
    const rows = (plan: StepPlan) => plan.sequences;
    const stage = { kind: 'stage' as const, layer: 0 };
    const g0 = logitsRows(await packed.execute(prefillPlan(20)));
    await shard.run({ stepId: 1, segment: stage, rows: rows(prefillPlan(20)), hidden: null });
    await gather.execute(prefillPlan(20));
    const tokens = g0.map(argmax);
    const expected = await packed.execute(decodePlan(20, tokens, 0));
    const reply = await shard.run({ stepId: 2, segment: stage, rows: rows(decodePlan(20, tokens, 0)), hidden: null });
    // The shard returns logits of the sampled rows in row order; ModelRunner's decode group has the same order.
    expect(maxAbsDiff(reply.output, expected.logits)).toBeLessThan(1e-5);
    const exact = logitsRows(await gather.execute(decodePlan(20, tokens, 0)));
    expect(maxAbsDiff(reply.output.subarray(0, exact[0].length), exact[0])).toBeGreaterThan(1e-4); // not the gather graph
  });
});
