import { describe, expect, test } from 'vitest';
import type { ExecutorLayout, SequenceWork, StepPlan } from '../../engine/executor.ts';
import { checkRow, gatherStep, rowResult, splitStep, type BatchOutput } from './step-batches.ts';

const LAYOUT: ExecutorLayout = { vocabSize: 4, maxContextTokens: 64, numKvBlocks: 16, blockSizeTokens: 4, numAdapterSlots: 2 };
const GREEDY = { temperature: 0, topK: 0, seed: 0 };

function row(seqId: number, tokens: number, extra: Partial<SequenceWork> = {}): SequenceWork {
  return { seqId, tokenIds: Array.from({ length: tokens }, (_, i) => i % 4), startPosition: 0, blockTable: [seqId * 2, seqId * 2 + 1], adapterSlot: 0, sampleNext: true, ...extra };
}

/** A batch output whose logits row i holds the value (row's seqId), and sampled tokens = seqId * 10 + step. */
function output(rows: SequenceWork[], steps = 1, withLse = true): BatchOutput {
  const logitsRows = rows.filter((r) => rowResult(r) === 'logits');
  const sampledRows = rows.filter((r) => rowResult(r) === 'sampled');
  const logits = new Float32Array(logitsRows.length * LAYOUT.vocabSize);
  logitsRows.forEach((r, i) => logits.fill(r.seqId, i * LAYOUT.vocabSize, (i + 1) * LAYOUT.vocabSize));
  const tokenIds = Int32Array.from(sampledRows.flatMap((r) => Array.from({ length: steps }, (_, i) => r.seqId * 10 + i)));
  return {
    logits,
    logSumExp: withLse ? Float32Array.from(logitsRows, (r) => -r.seqId) : null,
    sampled: sampledRows.length > 0 ? { steps, tokenIds, logprobs: Float32Array.from(tokenIds, (t) => -t) } : null,
  };
}

describe('rowResult', () => {
  test('none without sampleNext, sampled with loopSampling, else logits', () => {
    expect(rowResult(row(0, 3, { sampleNext: false, loopSampling: GREEDY }))).toBe('none');
    expect(rowResult(row(0, 1, { loopSampling: GREEDY }))).toBe('sampled');
    expect(rowResult(row(0, 1))).toBe('logits');
  });
});

describe('checkRow', () => {
  test('positions, token ids, slots and blocks of the row (a k-step row writes k positions)', () => {
    expect(checkRow(row(0, 8), 1, LAYOUT)).toBeNull();
    expect(checkRow(row(0, 9), 1, LAYOUT)).toMatch(/block table has 2 blocks, positions up to 9 need 3/);
    expect(checkRow(row(0, 1, { startPosition: 6, loopSampling: GREEDY }), 2, { ...LAYOUT, maxDecodeStepsPerRun: 4 })).toBeNull();
    expect(checkRow(row(0, 1, { startPosition: 6, loopSampling: GREEDY }), 3, { ...LAYOUT, maxDecodeStepsPerRun: 4 })).toMatch(/positions up to 9/);
    expect(checkRow(row(0, 1, { tokenIds: [4] }), 1, LAYOUT)).toMatch(/token id 4 outside \[0, 4\)/);
    expect(checkRow(row(0, 1, { adapterSlot: 2 }), 1, LAYOUT)).toMatch(/adapter slot 2/);
    expect(checkRow(row(0, 1, { blockTable: [16] }), 1, LAYOUT)).toMatch(/KV block 16 outside/);
    expect(checkRow(row(0, 0), 1, LAYOUT)).toMatch(/no tokens/);
  });

  test('a row sampled by the executor: k-step rows must carry loopSampling, one-step ones need samplesInGraph, parameters checked', () => {
    const loop = { ...LAYOUT, maxDecodeStepsPerRun: 4 };
    expect(checkRow(row(0, 1), 2, loop)).toMatch(/must feed one token, sample next and carry loopSampling/);
    expect(checkRow(row(0, 1, { loopSampling: GREEDY }), 1, loop)).toMatch(/only in multi-step plans/);
    const inGraph = { ...LAYOUT, samplesInGraph: true };
    expect(checkRow(row(0, 3, { loopSampling: GREEDY }), 1, inGraph)).toBeNull();
    expect(checkRow(row(0, 1, { loopSampling: { ...GREEDY, temperature: -1 } }), 1, inGraph)).toMatch(/`temperature` must be a finite number >= 0. Given: -1/);
    expect(checkRow(row(0, 1, { loopSampling: { ...GREEDY, topK: -1 } }), 1, inGraph)).toMatch(/`topK` must be a safe integer >= 0. Given: -1/);
    expect(checkRow(row(0, 1, { loopSampling: { ...GREEDY, topK: 5 } }), 1, inGraph)).toBeNull(); // > vocabulary: no top-k, as on the host
    expect(checkRow(row(0, 1, { loopSampling: { ...GREEDY, seed: 1.5 } }), 1, inGraph)).toMatch(/`seed` must be a safe integer >= 0. Given: 1.5/);
    // Without sampleNext the row gets nothing back, so its loopSampling is never used.
    expect(checkRow(row(0, 3, { sampleNext: false, loopSampling: GREEDY }), 1, LAYOUT)).toBeNull();
  });
});

describe('splitStep', () => {
  test('failing rows apart, then the decode batch and the prefill batch, each cut into micro-batches of near-equal size', () => {
    const plan: StepPlan = { stepId: 1, sequences: [row(0, 3), row(1, 1), row(2, 1, { tokenIds: [9] }), row(3, 2), row(4, 1), row(5, 1), row(6, 4)] };
    const one = splitStep(plan, LAYOUT);
    expect(one.failed).toEqual([{ kind: 'failed', seqId: 2, logitsRow: -1, error: 'token id 9 outside [0, 4)' }]);
    expect(one.batches.map((b) => b.map((r) => r.seqId))).toEqual([[1, 4, 5], [0, 3, 6]]);
    expect(splitStep(plan, LAYOUT, 2).batches.map((b) => b.map((r) => r.seqId))).toEqual([[1, 4], [5], [0, 3], [6]]);
    expect(splitStep({ stepId: 1, sequences: [row(1, 1)] }, LAYOUT, 4).batches).toHaveLength(1);
  });

  test('decodeSteps outside [1, maxDecodeStepsPerRun] is refused for the whole plan', () => {
    expect(() => splitStep({ stepId: 1, sequences: [], decodeSteps: 2 }, LAYOUT)).toThrow(/`decodeSteps` must be an integer in \[1, 1\]. Given: 2/);
    expect(() => splitStep({ stepId: 1, sequences: [], decodeSteps: 0 }, { ...LAYOUT, maxDecodeStepsPerRun: 8 })).toThrow(/Given: 0/);
  });
});

describe('gatherStep', () => {
  test('each outcome names its kind and its row of the array of that kind, counted across batches', () => {
    const layout = { ...LAYOUT, samplesInGraph: true };
    const plan: StepPlan = {
      stepId: 7,
      sequences: [
        row(0, 3, { sampleNext: false }),
        row(1, 1, { loopSampling: GREEDY }),
        row(2, 1),
        row(3, 2, { loopSampling: GREEDY }),
        row(4, 2),
        row(5, 1, { adapterSlot: 9 }),
      ],
    };
    const split = splitStep(plan, layout);
    const result = gatherStep(plan, split, split.batches.map((b) => output(b)), LAYOUT.vocabSize, 3);
    const bySeq = new Map(result.outcomes.map((o) => [o.seqId, o]));
    expect(bySeq.get(0)).toEqual({ kind: 'none', seqId: 0, logitsRow: -1 });
    expect(bySeq.get(5)).toMatchObject({ kind: 'failed', logitsRow: -1 });
    for (const seqId of [2, 4]) {
      const o = bySeq.get(seqId)!;
      expect(o.kind).toBe('logits');
      expect(result.logits[o.logitsRow * LAYOUT.vocabSize]).toBe(seqId);
      expect(result.logSumExp![o.logitsRow]).toBe(-seqId);
    }
    for (const seqId of [1, 3]) {
      const o = bySeq.get(seqId)!;
      if (o.kind !== 'sampled') throw new Error(`sequence ${seqId} came back ${o.kind}`);
      expect(result.sampledTokens!.tokenIds[o.sampledRow]).toBe(seqId * 10);
    }
    expect(result).toMatchObject({ stepId: 7, vocabSize: 4, runtimeMs: 3, sampledTokens: { steps: 1 } });
  });

  test('k-step plans: k tokens per row; the log-sum-exp only when every batch with logits rows has it', () => {
    const layout = { ...LAYOUT, maxDecodeStepsPerRun: 3 };
    const plan: StepPlan = { stepId: 2, decodeSteps: 3, sequences: [row(1, 1, { loopSampling: GREEDY }), row(2, 1, { loopSampling: GREEDY })] };
    const split = splitStep(plan, layout);
    const result = gatherStep(plan, split, split.batches.map((b) => output(b, 3)), LAYOUT.vocabSize, 0);
    expect([...result.sampledTokens!.tokenIds]).toEqual([10, 11, 12, 20, 21, 22]);
    expect(result.logits).toHaveLength(0);

    const mixed: StepPlan = { stepId: 3, sequences: [row(1, 1), row(2, 2)] };
    const s2 = splitStep(mixed, LAYOUT);
    const noLse = gatherStep(mixed, s2, [output(s2.batches[0]), output(s2.batches[1], 1, false)], LAYOUT.vocabSize, 0);
    expect(noLse.logSumExp).toBeUndefined();
    expect(noLse.logits).toHaveLength(2 * LAYOUT.vocabSize);
  });

  test('a batch output of the wrong size is an INTERNAL error, not a misread row', () => {
    const plan: StepPlan = { stepId: 4, sequences: [row(1, 1), row(2, 1)] };
    const split = splitStep(plan, LAYOUT);
    const short = { ...output(split.batches[0]), logits: new Float32Array(LAYOUT.vocabSize), logSumExp: null };
    expect(() => gatherStep(plan, split, [short], LAYOUT.vocabSize, 0)).toThrow(expect.objectContaining({ code: 'INTERNAL' }));
    const sampledPlan: StepPlan = { stepId: 5, sequences: [row(1, 1, { loopSampling: GREEDY })] };
    const s2 = splitStep(sampledPlan, { ...LAYOUT, samplesInGraph: true });
    expect(() => gatherStep(sampledPlan, s2, [{ logits: new Float32Array(0), logSumExp: null, sampled: null }], LAYOUT.vocabSize, 0)).toThrow(/0 sampled tokens/);
  });
});
