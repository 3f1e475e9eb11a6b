/**
 * The device-resident KV path (what `--device webgpu` serves through) behind the ordinary shard controller, checked on
 * the CPU provider, where the same rewritten graphs run with the state returned to the host: the same logits as the
 * default path for prefill, decode and rows with different adapters.
 */
import { expect, test } from 'vitest';
import { readPeftAdapter } from '../../src/adapters/peft/peft-adapter.ts';
import type { StepPlan, StepResult } from '../../src/engine/executor.ts';
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
