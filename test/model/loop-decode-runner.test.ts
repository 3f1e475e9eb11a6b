/**
 * k decode steps per session.run (the `--device cuda` path), on the CPU provider with the same graphs: greedy tokens
 * equal k single steps of ModelRunner (rows with different adapters and lengths in one batch), seeded sampling is
 * reproducible and independent of batch mates and of how steps are grouped into runs, bad k is rejected.
 */
import { beforeAll, afterAll, describe, expect, test } from 'vitest';
import { readPeftAdapter } from '../../src/adapters/peft/peft-adapter.ts';
import type { LoopSampling, SampledTokens, SequenceWork, StepResult } from '../../src/engine/executor.ts';
import { LoopDecodeRunner } from '../../src/model/runner/loop-decode-runner.ts';
import { ModelRunner } from '../../src/model/runner/model-runner.ts';
import { tinyModel } from '../helpers/tiny-model.ts';

const PROMPTS = [[3, 17, 42, 5], [9, 8, 7, 6, 5, 4, 3, 2, 1, 77, 31], [100, 200]];
const TABLES = [[0, 1, 2], [3, 4, 5], [6, 7, 8]];
const GREEDY: LoopSampling = { temperature: 0, topK: 0, seed: 0 };

function argmax(row: Float32Array): number {
  let best = 0;
  for (let i = 1; i < row.length; i++) if (row[i] > row[best]) best = i;
  return best;
}

describe('LoopDecodeRunner on the CPU provider', () => {
  let loop: LoopDecodeRunner;
  let reference: ModelRunner;
  /** The first sampled token of each prompt (greedy), after both runners prefilled the prompts. */
  let first: number[];

  beforeAll(async () => {
    const { hf, convertedDir } = await tinyModel({ quant: 'fp32', numAdapters: 2 });
    const options = { modelDir: convertedDir, kvCacheBytes: 8 << 20, blockSizeTokens: 8, numAdapterSlots: 3, maxAdapterRank: 8, maxDecodeStepsPerRun: 16 };
    loop = await LoopDecodeRunner.create(options);
    reference = await ModelRunner.create(options);
    for (const [slot, dir] of hf.adapterDirs.entries()) {
      const adapter = readPeftAdapter(dir, hf.config);
      loop.loadAdapterSlot(slot + 1, adapter);
      reference.loadAdapterSlot(slot + 1, adapter);
    }
  });
  afterAll(async () => {
    await loop?.release();
    await reference?.release();
  });

  async function prefill(seqBase: number): Promise<void> {
    const plan = { stepId: 1, sequences: PROMPTS.map((p, i) => ({ seqId: seqBase + i, tokenIds: p, startPosition: 0, blockTable: TABLES[i], adapterSlot: i, sampleNext: true })) };
    const [a, b] = [await reference.execute(plan), await loop.execute(plan)];
    const vocab = a.vocabSize;
    first = a.outcomes.map((o) => argmax(a.logits.subarray(o.logitsRow * vocab, (o.logitsRow + 1) * vocab)));
    expect(b.outcomes.map((o) => argmax(b.logits.subarray(o.logitsRow * vocab, (o.logitsRow + 1) * vocab)))).toEqual(first);
  }

  const rows = (seqBase: number, tokens: number[], starts: number[], sampling: LoopSampling[] = [GREEDY, GREEDY, GREEDY]): SequenceWork[] =>
    PROMPTS.map((_, i) => ({ seqId: seqBase + i, tokenIds: [tokens[i]], startPosition: starts[i], blockTable: TABLES[i], adapterSlot: i, sampleNext: true, loopSampling: sampling[i] }));
  const alone = (tokenId: number, start: number, sampling: LoopSampling): SequenceWork[] => [
    { seqId: 10, tokenIds: [tokenId], startPosition: start, blockTable: TABLES[0], adapterSlot: 0, sampleNext: true, loopSampling: sampling },
  ];

  /** A k-step plan of `sequences`: their tokens, [rows, k] in plan order (every row must come back 'sampled'). */
  async function decodeSteps(sequences: SequenceWork[], k: number): Promise<SampledTokens> {
    const result = await loop.execute({ stepId: 3, decodeSteps: k, sequences });
    return inPlanOrder(result, sequences, k);
  }

  test('k greedy steps in one run == k single steps of ModelRunner (3 rows, adapters 0/1/2, lengths 4/11/2)', async () => {
    await prefill(0);
    const k = 7;
    const loopOut = await decodeSteps(rows(0, first, PROMPTS.map((p) => p.length)), k);
    const expected: number[][] = PROMPTS.map(() => []);
    const expectedLogprobs: number[][] = PROMPTS.map(() => []);
    let tokens = first;
    for (let step = 0; step < k; step++) {
      const r = await reference.execute({
        stepId: 2 + step,
        sequences: PROMPTS.map((p, i) => ({ seqId: i, tokenIds: [tokens[i]], startPosition: p.length + step, blockTable: TABLES[i], adapterSlot: i, sampleNext: true })),
      });
      tokens = r.outcomes.map((o) => {
        const row = r.logits.subarray(o.logitsRow * r.vocabSize, (o.logitsRow + 1) * r.vocabSize);
        const t = argmax(row);
        expectedLogprobs[o.seqId].push(row[t] - r.logSumExp![o.logitsRow]);
        return t;
      });
      tokens.forEach((t, i) => expected[i].push(t));
    }
    const got = PROMPTS.map((_, b) => [...loopOut.tokenIds.subarray(b * k, (b + 1) * k)]);
    expect(got).toEqual(expected);
    expect(new Set(got.flat()).size).toBeGreaterThan(3); // the rows do not all repeat one token
    PROMPTS.forEach((_, b) => {
      for (let i = 0; i < k; i++) expect(Math.abs(loopOut.logprobs[b * k + i] - expectedLogprobs[b][i])).toBeLessThan(1e-4);
    });
    // The cache the loop wrote is the one single steps write: one more step from both agrees.
    const next = PROMPTS.map((p, i) => ({ seqId: i, tokenIds: [expected[i][k - 1]], startPosition: p.length + k, blockTable: TABLES[i], adapterSlot: i, sampleNext: true }));
    const [a, b] = [await reference.execute({ stepId: 50, sequences: next }), await loop.execute({ stepId: 50, sequences: next })];
    let diff = 0;
    for (let i = 0; i < a.logits.length; i++) diff = Math.max(diff, Math.abs(a.logits[i] - b.logits[i]));
    expect(diff).toBeLessThan(1e-4);
  });

  test('seeded sampling: reproducible, independent of batch mates and of how steps are grouped into runs', async () => {
    await prefill(10);
    const starts = PROMPTS.map((p) => p.length);
    const sampled: LoopSampling = { temperature: 1.5, topK: 0, seed: 1234 };
    const mates: LoopSampling[] = [sampled, { temperature: 0.7, topK: 5, seed: 99 }, GREEDY];
    const all = await decodeSteps(rows(10, first, starts, mates), 8);
    const row0 = [...all.tokenIds.subarray(0, 8)];
    // Row 0 alone, in runs of 3 + 5 (its cache is rewritten with the same keys/values: same tokens fed at the same positions).
    const part1 = await decodeSteps(alone(first[0], starts[0], sampled), 3);
    const part2 = await decodeSteps(alone(part1.tokenIds[2], starts[0] + 3, sampled), 5);
    expect([...part1.tokenIds, ...part2.tokenIds]).toEqual(row0);
    // Another seed gives another stream; temperature 1.5 on the tiny model's logits is far from greedy.
    const otherSeed = await decodeSteps(alone(first[0], starts[0], { ...sampled, seed: 4321 }), 8);
    expect([...otherSeed.tokenIds]).not.toEqual(row0);
    // Top-k 1 is greedy whatever the temperature; greedy rows' logprobs are those of the raw logits.
    const topOne = await decodeSteps(alone(first[0], starts[0], { temperature: 2, topK: 1, seed: 5 }), 8);
    const greedy = await decodeSteps(alone(first[0], starts[0], GREEDY), 8);
    expect([...topOne.tokenIds]).toEqual([...greedy.tokenIds]);
    // Top-k over more than the vocabulary is no top-k, as on the host (the graph's TopK could not take it).
    const vocab = loop.layout.vocabSize;
    const wide = await decodeSteps(alone(first[0], starts[0], { ...sampled, topK: vocab + 5 }), 8);
    expect([...wide.tokenIds]).toEqual([...(await decodeSteps(alone(first[0], starts[0], sampled), 8)).tokenIds]);
    for (const lp of [...all.logprobs, ...greedy.logprobs]) expect(lp).toBeLessThanOrEqual(1e-6);
  });

  test('bad k is rejected; rows that do not fit fail alone', async () => {
    const row = rows(20, [1, 2, 3], [4, 11, 2]);
    const plan = (k: number, sequences = row) => loop.execute({ stepId: 9, decodeSteps: k, sequences });
    await expect(plan(0)).rejects.toThrow(/`decodeSteps` must be an integer in \[1, 16\]. Given: 0/);
    await expect(plan(17)).rejects.toThrow(/Given: 17/);
    await expect(plan(1.5)).rejects.toThrow(/Given: 1.5/);
    // Row 1 starts at 11 with 3 blocks of 8: 14 steps would write position 24, past its table.
    const errors = async (k: number, sequences: SequenceWork[]) => new Map((await plan(k, sequences)).outcomes.map((o) => [o.seqId, o.error]));
    expect((await errors(14, row)).get(21)).toMatch(/block table has 3 blocks/);
    expect((await errors(2, [{ ...row[0], loopSampling: { temperature: -1, topK: 0, seed: 0 } }])).get(20)).toMatch(/`temperature` must be a finite number >= 0. Given: -1/);
    // A multi-step plan row without loopSampling fails alone; the others run.
    const result = await loop.execute({
      stepId: 9,
      decodeSteps: 2,
      sequences: [
        { seqId: 30, tokenIds: [5], startPosition: 4, blockTable: TABLES[0], adapterSlot: 0, sampleNext: true, loopSampling: GREEDY },
        { seqId: 31, tokenIds: [5], startPosition: 4, blockTable: TABLES[1], adapterSlot: 0, sampleNext: true },
      ],
    });
    expect(result.outcomes.find((o) => o.seqId === 31)).toMatchObject({ kind: 'failed', error: expect.stringMatching(/loopSampling/) });
    expect(result.outcomes.find((o) => o.seqId === 30)).toMatchObject({ kind: 'sampled', sampledRow: 0 });
    expect(result.sampledTokens!.tokenIds.length).toBe(2);
  });
});

/** The sampled tokens of a k-step result, reordered to the plan's rows (each outcome names its row of sampledTokens). */
function inPlanOrder(result: StepResult, sequences: SequenceWork[], k: number): SampledTokens {
  const tokenIds = new Int32Array(sequences.length * k);
  const logprobs = new Float32Array(sequences.length * k);
  sequences.forEach((seq, i) => {
    const o = result.outcomes.find((x) => x.seqId === seq.seqId);
    if (o?.kind !== 'sampled') throw new Error(`sequence ${seq.seqId}: ${o?.error ?? o?.kind ?? 'no outcome'}`);
    tokenIds.set(result.sampledTokens!.tokenIds.subarray(o.sampledRow * k, (o.sampledRow + 1) * k), i * k);
    logprobs.set(result.sampledTokens!.logprobs.subarray(o.sampledRow * k, (o.sampledRow + 1) * k), i * k);
  });
  return { steps: k, tokenIds, logprobs };
}
