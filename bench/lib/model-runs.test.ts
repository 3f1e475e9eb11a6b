import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, test } from 'vitest';
import { BenchModels } from './bench-models.ts';
import { benchPrompts, blockTableFor, collectTailLogits, decodeStepsMs, openBenchRunner, prefillMs } from './model-runs.ts';
import { FP32, INT4 } from './quant-variants.ts';

const cacheDir = fs.mkdtempSync(path.join(os.tmpdir(), 'tessera-bench-runs-'));
afterAll(() => fs.rmSync(cacheDir, { recursive: true, force: true }));

describe('bench model runs (tiny model, real conversion and ORT)', async () => {
  const models = new BenchModels({ cacheDir });
  const fp32 = await models.converted('tiny', FP32);
  const vocab = fp32.manifest.config.vocabSize;
  const prompts = benchPrompts({ numPrompts: 3, lengthTokens: 20, vocabSize: vocab });

  test('prompts are deterministic, in range, and differ from each other', () => {
    expect(benchPrompts({ numPrompts: 3, lengthTokens: 20, vocabSize: vocab })).toEqual(prompts);
    for (const p of prompts) for (const id of p) expect(id >= 0 && id < vocab && Number.isInteger(id)).toBe(true);
    expect(prompts[0]).not.toEqual(prompts[1]);
    expect(new Set(prompts[0]).size).toBeGreaterThan(10);
  });

  test('block tables of concurrent sequences are disjoint and cover the sequence', () => {
    const a = blockTableFor(0, 40);
    const b = blockTableFor(1, 40);
    expect(a).toEqual([0, 1, 2]);
    expect(b).toEqual([3, 4, 5]);
  });

  test('tail logits from batched decode steps equal the last prefill row of each prefix', async () => {
    const runner = await openBenchRunner(fp32.dir, { maxSequences: prompts.length, maxSequenceTokens: 20 });
    const fromTokens = 12;
    const tail = await collectTailLogits(runner, prompts, fromTokens);
    const rowsPerPrompt = 20 - fromTokens;
    expect(tail.length).toBe(prompts.length * rowsPerPrompt * vocab);
    let maxDiff = 0;
    let spread = 0;
    for (let p = 0; p < prompts.length; p++) {
      for (const r of [0, 3, rowsPerPrompt - 1]) {
        const prefix = prompts[p].slice(0, fromTokens + r);
        const alone = await runner.execute({ stepId: 99, sequences: [{ seqId: 7, tokenIds: prefix, startPosition: 0, blockTable: blockTableFor(0, 20), adapterSlot: 0, sampleNext: true }] });
        const row = tail.subarray((p * rowsPerPrompt + r) * vocab, (p * rowsPerPrompt + r + 1) * vocab);
        for (let v = 0; v < vocab; v++) {
          maxDiff = Math.max(maxDiff, Math.abs(row[v] - alone.logits[v]));
          spread = Math.max(spread, Math.abs(row[v] - row[0]));
        }
      }
    }
    expect(spread).toBeGreaterThan(1); // rows are not flat, so the comparison means something
    expect(maxDiff).toBeLessThanOrEqual(1e-4);
    await runner.release();
  });

  test('prefill and decode timings are positive and decode checks its KV room', async () => {
    const runner = await openBenchRunner(fp32.dir, { maxSequences: 1, maxSequenceTokens: 24 });
    expect(await prefillMs(runner, prompts[0], 24)).toBeGreaterThan(0);
    const steps = await decodeStepsMs(runner, prompts[0], 4, 24);
    expect(steps).toHaveLength(4);
    for (const ms of steps) expect(ms).toBeGreaterThan(0);
    await expect(decodeStepsMs(runner, prompts[0], 5, 24)).rejects.toThrow(/`numSteps` must be <= 4/);
    await runner.release();
  });

  test('a quantized conversion gives different but close logits', async () => {
    const int4 = await models.converted('tiny', INT4);
    const a = await openBenchRunner(fp32.dir, { maxSequences: 1, maxSequenceTokens: 20 });
    const b = await openBenchRunner(int4.dir, { maxSequences: 1, maxSequenceTokens: 20 });
    const la = await collectTailLogits(a, prompts.slice(0, 1), 16);
    const lb = await collectTailLogits(b, prompts.slice(0, 1), 16);
    let diff = 0;
    for (let i = 0; i < la.length; i++) diff = Math.max(diff, Math.abs(la[i] - lb[i]));
    expect(diff).toBeGreaterThan(1e-3);
    expect(diff).toBeLessThan(20);
    await a.release();
    await b.release();
  });
});
