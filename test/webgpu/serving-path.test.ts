/**
 * `--device webgpu` through the serving path: the shard controller hands the whole model to a WholeModelShardRunner
 * (kind device-kv) in a worker thread (KV cache and adapter stacks on the device). Same logits as the CPU provider's default path for
 * prefill, decode and rows with different adapters. Runs under `npm run test:webgpu`; skipped where WebGPU is absent.
 */
import * as ort from 'onnxruntime-node';
import { describe, expect, test } from 'vitest';
import { readPeftAdapter } from '../../src/adapters/peft/peft-adapter.ts';
import type { StepPlan, StepResult } from '../../src/engine/executor.ts';
import { ThreadExecutor } from '../../src/parallel/thread-executor.ts';
import { tinyModel } from '../helpers/tiny-model.ts';

const wanted = process.env.TESSERA_TEST_DEVICE === 'webgpu';
const available = ort.listSupportedBackends().some((b) => b.name === 'webgpu');

function rowsOf(result: StepResult): Map<number, Float32Array> {
  const v = result.vocabSize;
  return new Map(result.outcomes.filter((o) => o.logitsRow >= 0).map((o) => [o.seqId, result.logits.slice(o.logitsRow * v, (o.logitsRow + 1) * v)]));
}

describe.runIf(wanted && available)('serving on webgpu (device-resident KV) == cpu default path (tiny fp32)', () => {
  test('prefill, 3 decode steps, three rows with different adapters', async () => {
    const { hf, convertedDir } = await tinyModel({ quant: 'fp32', numAdapters: 2 });
    const options = { modelDir: convertedDir, kvCacheBytes: 4 << 20, blockSizeTokens: 8, numAdapterSlots: 3, maxAdapterRank: 16 };
    const cpu = await ThreadExecutor.start({ ...options, device: 'cpu' });
    const gpu = await ThreadExecutor.start({ ...options, device: 'webgpu' });
    try {
      for (const [i, dir] of hf.adapterDirs.entries()) {
        const adapter = readPeftAdapter(dir, hf.config);
        await cpu.loadAdapterSlot(i + 1, adapter);
        await gpu.loadAdapterSlot(i + 1, adapter);
      }
      const prompts = [[3, 17, 42, 5], [9, 8, 7, 6, 5, 4, 3], [100, 200]];
      const tables = [[0, 1], [2, 3], [4, 5]];
      const plans: StepPlan[] = [{ stepId: 1, sequences: prompts.map((p, i) => ({ seqId: i, tokenIds: p, startPosition: 0, blockTable: tables[i], adapterSlot: i, sampleNext: true })) }];
      for (let s = 0; s < 3; s++) plans.push({ stepId: 2 + s, sequences: prompts.map((p, i) => ({ seqId: i, tokenIds: [11 + s], startPosition: p.length + s, blockTable: tables[i], adapterSlot: i, sampleNext: true })) });
      for (const plan of plans) {
        const [a, b] = [rowsOf(await cpu.execute(plan)), rowsOf(await gpu.execute(plan))];
        for (const [seqId, row] of a) {
          const other = b.get(seqId)!;
          let diff = 0;
          for (let i = 0; i < row.length; i++) diff = Math.max(diff, Math.abs(row[i] - other[i]));
          expect(diff).toBeLessThanOrEqual(1e-4);
        }
      }
    } finally {
      await cpu.shutdown();
      await gpu.shutdown();
    }
  });
});
