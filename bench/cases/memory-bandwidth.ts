/**
 * Memory bandwidth of this machine, measured in the same run as decode steps, and the decode step's effective weight
 * bandwidth: at batch 1 every linear's weights are read once per token, so
 *   effective GB/s = bytes of weights read per step / step time
 * and its fraction of the measured streaming bandwidth says how close decode is to the memory-bound limit.
 */
import type { ModelPreset } from '../../src/model/checkpoint/make-model.ts';
import type { ModelRunner } from '../../src/model/runner/model-runner.ts';
import os from 'node:os';
import type { BenchCase, BenchContext, CaseOutput, Cell } from '../lib/bench-case.ts';
import { measureBandwidth, type BandwidthResult, type StreamOp } from '../lib/memory-bandwidth.ts';
import { benchPrompts, decodeStepsMs, openBenchRunner } from '../lib/model-runs.ts';
import { FP32, INT4 } from '../lib/quant-variants.ts';
import { MIB, median, significant } from '../lib/stats.ts';
import { readWeightBytes } from '../lib/weight-bytes.ts';

interface Settings {
  preset: ModelPreset;
  arrayBytes: number;
  repetitions: number;
  promptTokens: number;
  decodeRounds: number;
  decodeStepsPerRound: number;
}

const SETTINGS: Record<'quick' | 'full', Settings> = {
  quick: { preset: 'tiny', arrayBytes: 32 * MIB, repetitions: 3, promptTokens: 64, decodeRounds: 2, decodeStepsPerRound: 4 },
  full: { preset: 'small', arrayBytes: 256 * MIB, repetitions: 5, promptTokens: 64, decodeRounds: 5, decodeStepsPerRound: 8 },
};

async function run(ctx: BenchContext): Promise<CaseOutput> {
  const s = SETTINGS[ctx.mode];
  const threadCounts = [...new Set([1, os.availableParallelism()])];
  const bandwidth: BandwidthResult[] = [];
  for (const op of ['copy', 'triad'] as StreamOp[]) {
    for (const numThreads of threadCounts) {
      ctx.log(`bandwidth: ${op}, ${numThreads} thread(s), ${s.arrayBytes / MIB} MiB arrays`);
      bandwidth.push(await measureBandwidth({ op, arrayBytes: s.arrayBytes, numThreads, repetitions: s.repetitions }));
    }
  }

  const models = [await ctx.models.converted(s.preset, FP32), await ctx.models.converted(s.preset, INT4)];
  const config = models[0].manifest.config;
  const maxSequenceTokens = s.promptTokens + s.decodeStepsPerRound;
  const prompt = benchPrompts({ numPrompts: 1, lengthTokens: s.promptTokens, vocabSize: config.vocabSize })[0];
  const runners: ModelRunner[] = [];
  const steps: number[][] = models.map(() => []);
  const allThreads = threadCounts[threadCounts.length - 1];
  const duringDecode: BandwidthResult[] = [];
  try {
    for (const m of models) runners.push(await openBenchRunner(m.dir, { maxSequences: 1, maxSequenceTokens }));
    ctx.log(`decode: ${s.decodeRounds} rounds of ${s.decodeStepsPerRound} steps, fp32 and int4 alternating, a copy measurement in each round`);
    for (let round = 0; round < s.decodeRounds; round++) {
      duringDecode.push(await measureBandwidth({ op: 'copy', arrayBytes: s.arrayBytes, numThreads: allThreads, repetitions: 2 }));
      for (let k = 0; k < runners.length; k++) {
        const i = (k + round) % runners.length;
        steps[i].push(...(await decodeStepsMs(runners[i], prompt, s.decodeStepsPerRound, maxSequenceTokens)));
      }
    }
  } finally {
    for (const r of runners) await r.release();
  }
  const roundsCopy: BandwidthResult = {
    op: 'copy',
    numThreads: allThreads,
    arrayBytes: duringDecode[0].arrayBytes,
    repetitionMs: duringDecode.flatMap((b) => b.repetitionMs),
    bestGBps: Math.max(...duringDecode.map((b) => b.bestGBps)),
    medianGBps: median(duringDecode.map((b) => b.bestGBps)),
    checksum: duringDecode[0].checksum,
  };
  bandwidth.push(roundsCopy);
  const reference = bandwidth.filter((b) => b.op === 'copy').reduce((best, b) => (b.bestGBps > best.bestGBps ? b : best));
  const referenceGBps = reference.bestGBps;

  const kvBytesPerPosition = 2 * config.numLayers * config.numKvHeads * config.headDim * 4;
  const meanContext = s.promptTokens + (s.decodeStepsPerRound - 1) / 2;
  const decode = models.map((m, i) => {
    const bytes = readWeightBytes(m.dir);
    const stepMs = median(steps[i]);
    const effectiveGBps = bytes.bytesReadPerDecodeStep / (stepMs * 1e6);
    return { variant: m.variant.id, bytesReadPerDecodeStep: bytes.bytesReadPerDecodeStep, kvBytesReadPerStep: Math.round(kvBytesPerPosition * meanContext), stepMs: steps[i], medianStepMs: stepMs, effectiveGBps, fractionOfMeasured: effectiveGBps / referenceGBps };
  });

  const bandwidthRows: Cell[][] = bandwidth.map((b, i) => [
    `${b.op}${i === bandwidth.length - 1 ? ' (between decode rounds)' : ''}`,
    b.numThreads,
    b.arrayBytes / MIB,
    significant(b.bestGBps),
    significant(b.medianGBps),
  ]);
  const decodeRows: Cell[][] = decode.map((d) => [
    d.variant,
    significant(d.bytesReadPerDecodeStep / MIB),
    significant(d.kvBytesReadPerStep / MIB),
    significant(d.medianStepMs),
    significant(d.effectiveGBps),
    significant(100 * d.fractionOfMeasured),
  ]);
  return {
    tables: [
      {
        title: 'Streaming memory bandwidth from JS (GB/s = 1e9 B/s)',
        columns: ['op', 'threads', 'MiB per array', 'best GB/s', 'median GB/s'],
        rows: bandwidthRows,
        notes: ['copy = Float64Array.prototype.set (memcpy), counts read + write; triad = a[i] = b[i] + s*c[i] in a JS loop, counts 3 arrays',
          `between decode rounds: one copy measurement per decode round (best of 2 repetitions each); median = median over the rounds`, `reference bandwidth = best copy = ${significant(referenceGBps)} GB/s`],
      },
      {
        title: `Decode step at batch 1 (${s.preset} model, context ${s.promptTokens}-${s.promptTokens + s.decodeStepsPerRound - 1}), effective weight bandwidth`,
        columns: ['variant', 'weights read MiB/step', 'KV read MiB/step', 'median step ms', 'effective GB/s', '% of measured'],
        rows: decodeRows,
        notes: ['weights read per step = weights file minus the fp32 embedding table (one row gathered); KV reads are not counted in the effective bandwidth'],
      },
    ],
    summary: [
      { metric: 'memory bandwidth (best memcpy from JS)', value: `${significant(referenceGBps)} GB/s (${reference.numThreads} thread(s))` },
      ...decode.map((d) => ({ metric: `decode batch 1 ${s.preset} ${d.variant} weight bandwidth`, value: `${significant(d.effectiveGBps)} GB/s = ${significant(100 * d.fractionOfMeasured)}% of measured (${significant(d.medianStepMs)} ms/step)` })),
    ],
    data: { preset: s.preset, settings: s, referenceGBps, bandwidth, decode },
  };
}

const benchCase: BenchCase = {
  name: 'memory-bandwidth',
  description: 'streaming memory bandwidth from JS and the decode step effective weight bandwidth (fp32, int4) as a fraction of it',
  run,
};

export default benchCase;
