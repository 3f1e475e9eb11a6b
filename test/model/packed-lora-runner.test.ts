/**
 * The packed multi-LoRA graph (quantized models) against the per-row gather graph, on a real converted tiny int4 model:
 * both compute the same fp32 delta (only the order of additions differs), so logits agree to fp32 rounding and greedy
 * tokens are the same; base rows get no delta at all; a slot write or clear between steps is seen by the next step;
 * and a model split over workers (tensor-parallel ranks, pipeline stages) runs the packed kernel too, by construction of
 * its graphs from the same layer builders.
 */
import { cpSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { readPeftAdapter } from '../../src/adapters/peft/peft-adapter.ts';
import type { StepPlan, StepResult } from '../../src/engine/executor.ts';
import { logSumExp } from '../../src/engine/sampler/sampler.ts';
import type { ModelManifest } from '../../src/model/converted-model.ts';
import { GRAPH_IO } from '../../src/model/graph/graph-io.ts';
import type { LoraWeights } from '../../src/model/runner/adapter-slot-stacks.ts';
import { ModelRunner } from '../../src/model/runner/model-runner.ts';
import { ShardController } from '../../src/parallel/controller.ts';
import { ConvertedWeights } from '../../src/parallel/converted-weights.ts';
import { TpSegmentBuilder } from '../../src/parallel/shard-graphs.ts';
import { tpSlices } from '../../src/parallel/shard-layout.ts';
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

function maxAbsDiff(x: Float32Array, y: Float32Array): number {
  let d = 0;
  for (let i = 0; i < x.length; i++) d = Math.max(d, Math.abs(x[i] - y[i]));
  return d;
}

describe('packed multi-LoRA graph (quantized models)', () => {
  let packed: ModelRunner;
  let gather: ModelRunner;
  let adapters: LoraWeights[];
  let modelDir: string;
  let manifest: ModelManifest;

  beforeAll(async () => {
    const { hf, convertedDir } = await tinyModel({ quant: 'int4', numAdapters: 2 });
    modelDir = convertedDir;
    manifest = JSON.parse(readFileSync(join(convertedDir, 'manifest.json'), 'utf8')) as ModelManifest;
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
    for (const runner of [packed, gather]) {
      runner.loadAdapterSlot(1, adapters[0]);
      runner.loadAdapterSlot(3, adapters[1]);
    }
  });
  afterAll(async () => {
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

  /** fp32 rounding of the same sums in another order, through two layers and the LM head. */
  const ROUNDING = 1e-4;

  test('prefill and decode steps: logits equal the gather graph\'s to fp32 rounding, the adapters change them, the base row is exact', async () => {
    expect(packed.loraKernel).toBe('packed');
    expect(gather.loraKernel).toBe('gather');
    const [p0, g0] = [logitsRows(await packed.execute(prefillPlan(0))), logitsRows(await gather.execute(prefillPlan(0)))];
    expect(maxAbsDiff(p0[2], g0[2])).toBe(0);
    for (const r of [0, 1]) expect(maxAbsDiff(p0[r], g0[r])).toBeLessThan(ROUNDING);
    expect(p0.map(argmax)).toEqual(g0.map(argmax));
    let tokens = g0.map(argmax);
    for (let step = 0; step < 6; step++) {
      const p = logitsRows(await packed.execute(decodePlan(0, tokens, step)));
      const g = logitsRows(await gather.execute(decodePlan(0, tokens, step)));
      // The adapter's effect: adapted row vs the base row on the same prompt (rows 0 and 2) while their tokens agree.
      if (step === 0) expect(maxAbsDiff(g[0], g[2])).toBeGreaterThan(0.05);
      expect(maxAbsDiff(p[2], g[2])).toBe(0);
      for (const r of [0, 1]) expect(maxAbsDiff(p[r], g[r])).toBeLessThan(ROUNDING);
      expect(p.map(argmax)).toEqual(g.map(argmax));
      tokens = g.map(argmax);
    }
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
      expect(p.map(argmax)).toEqual(g.map(argmax));
      const effect = maxAbsDiff(g[0], g[2]);
      expect(maxAbsDiff(p[1], g[1])).toBeLessThan(ROUNDING);
      expect(maxAbsDiff(p[0], g[0])).toBeLessThan(ROUNDING);
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

  test('a split model runs the packed kernel too: TP = 2 and PP = 2 shard groups == ModelRunner to fp32 rounding, with the log-sum-exp', async () => {
    // The TP segments are built from the whole graph's layer builders: their LoRA graphs take the packed factors.
    const weights = new ConvertedWeights(modelDir, manifest);
    const tpGraph = new TpSegmentBuilder(manifest.config, weights, tpSlices(manifest.config, 1, 2), 1, 'packed').mlp(1, true);
    weights.close();
    expect(tpGraph.inputs.map((i) => i.name)).toContain(GRAPH_IO.loraRowIndex);
    expect(tpGraph.inputs.map((i) => i.name)).not.toContain(GRAPH_IO.loraSlot);

    const g0 = logitsRows(await packed.execute(prefillPlan(30)));
    const tokens = g0.map(argmax);
    const expected = logitsRows(await packed.execute(decodePlan(30, tokens, 0)));
    for (const [tp, pp] of [
      [2, 1],
      [1, 2],
    ]) {
      const controller = await ShardController.start({ modelDir, tp, pp, kvCacheBytes: 8 << 20, blockSizeTokens: 8, numAdapterSlots: 4, maxAdapterRank: 8, intraOpThreads: 1 });
      try {
        await controller.loadAdapterSlot(1, adapters[0]);
        await controller.loadAdapterSlot(3, adapters[1]);
        const prefill = await controller.execute(prefillPlan(30));
        const decode = await controller.execute(decodePlan(30, tokens, 0));
        for (const [got, want] of [
          [logitsRows(prefill), g0],
          [logitsRows(decode), expected],
        ]) {
          for (const r of [0, 1, 2]) expect(maxAbsDiff(got[r], want[r]), `TP ${tp} PP ${pp} row ${r}`).toBeLessThan(ROUNDING);
        }
        // The head's log-sum-exp (a TP group combines its ranks' vocab slices) is that of the gathered logits.
        for (const result of [prefill, decode]) {
          expect(result.logSumExp).toHaveLength(3);
          for (const o of result.outcomes) expect(Math.abs(result.logSumExp![o.logitsRow] - logSumExp(logitsRows(result)[o.seqId - 30], manifest.config.vocabSize))).toBeLessThan(1e-4);
        }
      } finally {
        await controller.shutdown();
      }
    }
  });
});
