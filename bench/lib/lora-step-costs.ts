/**
 * What adapters cost per step, kernel by kernel: decode steps of `batch` rows over `pastTokens` cached positions on
 * the base model alone, with 8 adapters on the packed kernel, the same on the per-row gather kernel, and one adapter
 * for every row on the packed kernel; the variants take turns (round-robin), so load on a shared machine hits all alike.
 */
import { readPeftAdapter } from '../../src/adapters/peft/peft-adapter.ts';
import type { SequenceWork } from '../../src/engine/executor.ts';
import { ModelRunner } from '../../src/model/runner/model-runner.ts';
import { median } from './stats.ts';

export interface LoraStepCosts {
  batch: number;
  pastTokens: number;
  /** Distinct adapters in the "8 adapters" variants (fewer when fewer adapter directories were given). */
  numAdapters: number;
  /** Median decode step ms per variant. */
  baseMs: number;
  packed8Ms: number;
  gather8Ms: number;
  packed1Ms: number;
}

export async function loraStepCosts(modelDir: string, adapterDirs: string[], opts: { batch: number; pastTokens: number; rounds: number; numSlots: number; maxRank: number }): Promise<LoraStepCosts> {
  const options = { modelDir, kvCacheBytes: 512 << 20, blockSizeTokens: 16, numAdapterSlots: opts.numSlots, maxAdapterRank: opts.maxRank };
  const packed = await ModelRunner.create(options);
  const gather = await ModelRunner.create({ ...options, packedLora: false });
  try {
    const config = packed.manifest.config;
    const adapters = adapterDirs.slice(0, 8).map((dir) => readPeftAdapter(dir, config));
    adapters.forEach((a, i) => {
      packed.loadAdapterSlot(i + 1, a);
      gather.loadAdapterSlot(i + 1, a);
    });
    const blocksPerRow = Math.ceil((opts.pastTokens + 16) / 16);
    const table = (row: number) => Array.from({ length: blocksPerRow }, (_, j) => row * blocksPerRow + j);
    let nextSeq = 1;
    const decodeMs = async (runner: ModelRunner, slotOf: (row: number) => number) => {
      const ids = Array.from({ length: opts.batch }, () => nextSeq++);
      const rows = (tokens: (row: number) => number[], start: number): SequenceWork[] =>
        ids.map((seqId, row) => ({ seqId, tokenIds: tokens(row), startPosition: start, blockTable: table(row), adapterSlot: slotOf(row), sampleNext: true }));
      await runner.execute({ stepId: 1, sequences: rows((row) => Array.from({ length: opts.pastTokens }, (_, j) => ((j * 7 + row) % 1000) + 1), 0) });
      const times: number[] = [];
      for (let step = 0; step < 8; step++) {
        const t0 = performance.now();
        await runner.execute({ stepId: 2 + step, sequences: rows(() => [5], opts.pastTokens + step) });
        times.push(performance.now() - t0);
      }
      await runner.execute({ stepId: 99, sequences: [], releasedSeqIds: ids });
      return median(times);
    };
    const eight = (row: number) => 1 + (row % adapters.length);
    const runs = { base: [] as number[], packed8: [] as number[], gather8: [] as number[], packed1: [] as number[] };
    const variants: Array<[keyof typeof runs, () => Promise<number>]> = [
      ['base', () => decodeMs(packed, () => 0)],
      ['packed8', () => decodeMs(packed, eight)],
      ['gather8', () => decodeMs(gather, eight)],
      ['packed1', () => decodeMs(packed, () => 1)],
    ];
    for (let round = 0; round < opts.rounds; round++) {
      for (let k = 0; k < variants.length; k++) {
        const [name, measure] = variants[(k + round) % variants.length];
        runs[name].push(await measure());
      }
    }
    return { batch: opts.batch, pastTokens: opts.pastTokens, numAdapters: adapters.length, baseMs: median(runs.base), packed8Ms: median(runs.packed8), gather8Ms: median(runs.gather8), packed1Ms: median(runs.packed1) };
  } finally {
    await packed.release();
    await gather.release();
  }
}
