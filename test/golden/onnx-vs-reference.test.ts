import { describe, expect, test } from 'vitest';
import { ReferenceModel } from '../../kernels/reference/llama-reference.ts';
import { openCheckpointTensors } from '../../src/model/checkpoint/safetensors-reader.ts';
import { readPeftAdapter } from '../../src/adapters/peft/peft-adapter.ts';
import { ModelRunner } from '../../src/model/runner/model-runner.ts';
import { ThreadExecutor } from '../../src/parallel/thread-executor.ts';
import type { SequenceWork } from '../../src/engine/executor.ts';
import { logSumExp } from '../../src/engine/sampler/sampler.ts';
import { tinyModel } from '../helpers/tiny-model.ts';

/** Max |a - b| over all elements. */
function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  expect(a.length).toBe(b.length);
  let d = 0;
  for (let i = 0; i < a.length; i++) d = Math.max(d, Math.abs(a[i] - b[i]));
  return d;
}

function spread(logits: Float32Array): number {
  let lo = Infinity;
  let hi = -Infinity;
  for (const x of logits) {
    lo = Math.min(lo, x);
    hi = Math.max(hi, x);
  }
  return hi - lo;
}

describe('fp32 ONNX graph == plain-TS reference forward pass (tiny checkpoint)', async () => {
  const { hf, convertedDir } = await tinyModel({ quant: 'fp32', numAdapters: 1 });
  const tensors = openCheckpointTensors(hf.outDir);
  const vocab = hf.config.vocabSize;
  const prompt = [3, 17, 42, 5, 99, 7, 250, 11, 64];
  const decodeTokens = [8, 120, 33, 2];
  const blockTable = [0, 1];

  for (const withAdapter of [false, true]) {
    test(`prefill and ${decodeTokens.length} decode steps ${withAdapter ? 'with' : 'without'} a LoRA adapter: max logit diff <= 1e-4`, async () => {
      const adapter = withAdapter ? readPeftAdapter(hf.adapterDirs[0], hf.config) : undefined;
      const reference = new ReferenceModel(hf.config, (name) => tensors.readFloat32(name), adapter);
      const runner = await ModelRunner.create({ modelDir: convertedDir, kvCacheBytes: 8 << 20, blockSizeTokens: 8, numAdapterSlots: 3, maxAdapterRank: 16 });
      if (adapter) runner.loadAdapterSlot(2, adapter);
      const slot = adapter ? 2 : 0;
      const work = (tokenIds: number[], startPosition: number): SequenceWork => ({ seqId: 1, tokenIds, startPosition, blockTable, adapterSlot: slot, sampleNext: true });

      const refPrefill = reference.prefill(prompt);
      const lastRow = refPrefill.subarray((prompt.length - 1) * vocab, prompt.length * vocab);
      const prefill = await runner.execute({ stepId: 1, sequences: [work(prompt, 0)] });
      expect(spread(lastRow)).toBeGreaterThan(1); // the random model is not near-uniform, so the comparison means something
      expect(maxAbsDiff(prefill.logits, Float32Array.from(lastRow))).toBeLessThanOrEqual(1e-4);
      // The in-graph log-sum-exp the sampler uses for logprobs equals the one computed from the logits.
      expect(prefill.logSumExp?.[0]).toBeCloseTo(logSumExp(prefill.logits, vocab), 4);

      let position = prompt.length;
      for (const token of decodeTokens) {
        const expected = reference.decode(token);
        const step = await runner.execute({ stepId: 2 + position, sequences: [work([token], position)] });
        expect(maxAbsDiff(step.logits, expected)).toBeLessThanOrEqual(1e-4);
        position++;
      }
      await runner.release();
    });
  }

  test("the serving executor (shard controller, worker thread) returns the runner's logits and their log-sum-exp", async () => {
    const options = { modelDir: convertedDir, kvCacheBytes: 8 << 20, blockSizeTokens: 8, numAdapterSlots: 2, maxAdapterRank: 16 };
    const runner = await ModelRunner.create(options);
    const executor = await ThreadExecutor.start(options);
    try {
      const plan = { stepId: 1, sequences: [{ seqId: 7, tokenIds: prompt, startPosition: 0, blockTable, adapterSlot: 0, sampleNext: true }] };
      const [a, b] = [await runner.execute(plan), await executor.execute(plan)];
      expect(maxAbsDiff(a.logits, b.logits)).toBeLessThanOrEqual(1e-5);
      expect(b.logSumExp?.[0]).toBeCloseTo(logSumExp(b.logits, vocab), 4);
    } finally {
      await runner.release();
      await executor.shutdown();
    }
  });

  test('the adapter changes the logits (so the adapter comparison is not vacuous)', async () => {
    const adapter = readPeftAdapter(hf.adapterDirs[0], hf.config);
    const base = new ReferenceModel(hf.config, (name) => tensors.readFloat32(name)).prefill(prompt);
    const adapted = new ReferenceModel(hf.config, (name) => tensors.readFloat32(name), adapter).prefill(prompt);
    expect(maxAbsDiff(base, adapted)).toBeGreaterThan(1e-2);
  });

  test('a batch mixing prefill rows of different lengths, decode rows and adapters gives each row its alone-result', async () => {
    const adapter = readPeftAdapter(hf.adapterDirs[0], hf.config);
    const runner = await ModelRunner.create({ modelDir: convertedDir, kvCacheBytes: 8 << 20, blockSizeTokens: 8, numAdapterSlots: 2, maxAdapterRank: 16 });
    runner.loadAdapterSlot(1, adapter);
    const prompts = [prompt, [5, 6, 7], [200, 201, 202, 203, 204, 205, 206, 207, 208, 209, 210, 211]];
    const slots = [0, 1, 0];
    const alone: Float32Array[] = [];
    for (let i = 0; i < prompts.length; i++) {
      const ref = new ReferenceModel(hf.config, (name) => tensors.readFloat32(name), slots[i] ? adapter : undefined);
      const logits = ref.prefill(prompts[i]);
      alone.push(logits.slice((prompts[i].length - 1) * vocab));
    }
    const tables = [[0, 1], [2, 3], [4, 5]];
    const result = await runner.execute({
      stepId: 1,
      sequences: prompts.map((p, i) => ({ seqId: i, tokenIds: p, startPosition: 0, blockTable: tables[i], adapterSlot: slots[i], sampleNext: true })),
    });
    for (const outcome of result.outcomes) {
      const row = result.logits.subarray(outcome.logitsRow * vocab, (outcome.logitsRow + 1) * vocab);
      expect(maxAbsDiff(row, alone[outcome.seqId])).toBeLessThanOrEqual(1e-4);
    }
    // One decode step for all three (each at its own position) plus a bad sequence that fails alone.
    const next = await runner.execute({
      stepId: 2,
      sequences: [
        ...prompts.map((p, i) => ({ seqId: i, tokenIds: [9], startPosition: p.length, blockTable: tables[i], adapterSlot: slots[i], sampleNext: true })),
        { seqId: 99, tokenIds: [vocab + 5], startPosition: 0, blockTable: [6], adapterSlot: 0, sampleNext: true },
      ],
    });
    for (let i = 0; i < prompts.length; i++) {
      const ref = new ReferenceModel(hf.config, (name) => tensors.readFloat32(name), slots[i] ? adapter : undefined);
      ref.prefill(prompts[i]);
      const expected = ref.decode(9);
      const outcome = next.outcomes.find((o) => o.seqId === i)!;
      expect(maxAbsDiff(next.logits.subarray(outcome.logitsRow * vocab, (outcome.logitsRow + 1) * vocab), expected)).toBeLessThanOrEqual(1e-4);
    }
    expect(next.outcomes.find((o) => o.seqId === 99)?.error).toMatch(/token id/);
    await runner.release();
  });
});
