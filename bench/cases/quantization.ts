/**
 * Quantization: one checkpoint converted to fp32, int8, int4 (block 32), int4 with 0.5% / 1% fp32 outlier channels;
 * for each, size, conversion and load time, prefill and decode latency, and next-token quality against fp32 at fixed
 * positions. The generated checkpoint has Gaussian weights and so no outlier channels; the same int4 variants are also
 * run on a copy with outlier input channels planted (same function, bench/lib/planted-outliers.ts), the situation
 * SpQR-style outliers are meant for. Latencies are measured round-robin over all variants (a different starting
 * variant each round), so load on a shared machine spreads over all of them and the ratios to fp32 stay meaningful.
 * When the trained fixture is there (`npm run fixtures:trained`), the same variants of a model trained on man pages
 * add held-out perplexity per domain next to top-1 agreement and KL (bench/lib/trained-quality.ts), with llama.cpp's
 * F16 / Q8_0 / Q4_0 of the same checkpoint when the peer case has installed node-llama-cpp; without the fixture the
 * case runs as before.
 */
import type { ModelPreset } from '../../src/model/checkpoint/make-model.ts';
import type { ModelConfig } from '../../src/model/model-config.ts';
import { compareLogits, type LogitComparison } from '../../src/model/quantization/quality.ts';
import type { ModelRunner } from '../../src/model/runner/model-runner.ts';
import type { BenchCase, BenchContext, Cell, CaseOutput, SummaryRow } from '../lib/bench-case.ts';
import { OUTLIER_CHANNELS, type CheckpointKind } from '../lib/bench-models.ts';
import { benchPrompts, collectTailLogits, decodeStepsMs, openBenchRunner, prefillMs } from '../lib/model-runs.ts';
import { FP32, INT4, INT4_ACCURACY0, INT4_OUTLIERS_HALF_PERCENT, INT4_OUTLIERS_ONE_PERCENT, INT8, type QuantVariant } from '../lib/quant-variants.ts';
import { MIB, median, significant, timeMs } from '../lib/stats.ts';
import { readWeightBytes, type WeightBytes } from '../lib/weight-bytes.ts';
import { findTrainedFixture } from '../lib/trained-fixture.ts';
import { measureTrainedQuantization, trainedQuantizationOutput } from '../lib/trained-quality.ts';
import type { GgmlTypeName } from '../lib/gguf/gguf-format.ts';
import { peerInstalled } from '../lib/llama-peer/node-llama-cpp.ts';

interface Entry {
  kind: CheckpointKind;
  variant: QuantVariant;
}

/** The first entry is the reference (fp32 of the plain checkpoint; the planted checkpoint computes the same function). */
export const ENTRIES: Entry[] = [
  ...[FP32, INT8, INT4, INT4_ACCURACY0, INT4_OUTLIERS_HALF_PERCENT, INT4_OUTLIERS_ONE_PERCENT].map((variant) => ({ kind: 'plain' as const, variant })),
  ...[INT4, INT4_OUTLIERS_HALF_PERCENT, INT4_OUTLIERS_ONE_PERCENT].map((variant) => ({ kind: 'outlier-channels' as const, variant })),
];

/** Variants measured on the trained fixture; the first is the reference. */
export const TRAINED_VARIANTS: QuantVariant[] = [FP32, INT8, INT4, INT4_OUTLIERS_HALF_PERCENT, INT4_OUTLIERS_ONE_PERCENT];

function labelOf(e: Entry): string {
  return e.kind === 'plain' ? e.variant.id : `${e.variant.id} [planted]`;
}

interface Settings {
  preset: ModelPreset;
  numPrompts: number;
  promptTokens: number;
  /** Quality positions per prompt = promptTokens - qualityFromTokens. */
  qualityFromTokens: number;
  latencyRounds: number;
  decodeStepsPerRound: number;
}

export const SETTINGS: Record<'quick' | 'full', Settings> = {
  quick: { preset: 'tiny', numPrompts: 4, promptTokens: 64, qualityFromTokens: 32, latencyRounds: 2, decodeStepsPerRound: 4 },
  full: { preset: 'small', numPrompts: 4, promptTokens: 64, qualityFromTokens: 32, latencyRounds: 5, decodeStepsPerRound: 8 },
};

interface Quality extends LogitComparison {
  /** KL of each position, nats. */
  klPerPosition: number[];
  /** Standard error of meanKl over positions. */
  klStandardError: number;
}

interface VariantMeasurement {
  label: string;
  checkpoint: CheckpointKind;
  id: string;
  quant: string;
  blockSize: number | null;
  outlierFraction: number;
  bytes: WeightBytes;
  conversionMs: number;
  loadMs: number;
  prefillMs: number[];
  decodeStepMs: number[];
  quality: Quality;
}

function meanAndStandardError(xs: number[]): { mean: number; se: number } {
  const mean = xs.reduce((a, b) => a + b, 0) / xs.length;
  const variance = xs.reduce((a, x) => a + (x - mean) ** 2, 0) / Math.max(1, xs.length - 1);
  return { mean, se: Math.sqrt(variance / xs.length) };
}

function quality(ref: Float32Array, test: Float32Array, vocab: number): Quality {
  const all = compareLogits(ref, test, vocab);
  const klPerPosition = Array.from({ length: all.positions }, (_, p) => compareLogits(ref.subarray(p * vocab, (p + 1) * vocab), test.subarray(p * vocab, (p + 1) * vocab), vocab).meanKl);
  return { ...all, klPerPosition, klStandardError: meanAndStandardError(klPerPosition).se };
}

async function run(ctx: BenchContext): Promise<CaseOutput> {
  const s = SETTINGS[ctx.mode];
  const converted = [];
  for (const e of ENTRIES) converted.push(await ctx.models.converted(s.preset, e.variant, e.kind));
  const config = converted[0].manifest.config;
  const maxSequenceTokens = s.promptTokens + s.decodeStepsPerRound;
  const prompts = benchPrompts({ numPrompts: s.numPrompts, lengthTokens: s.promptTokens, vocabSize: config.vocabSize });

  const runners: ModelRunner[] = [];
  const loadMs: number[] = [];
  try {
    for (const [i, c] of converted.entries()) {
      ctx.log(`loading ${labelOf(ENTRIES[i])}`);
      let runner: ModelRunner | undefined;
      loadMs.push(await timeMs(async () => (runner = await openBenchRunner(c.dir, { maxSequences: s.numPrompts, maxSequenceTokens }))));
      runners.push(runner!);
    }

    ctx.log(`quality: ${s.numPrompts} prompts x ${s.promptTokens - s.qualityFromTokens} positions per variant`);
    const logits: Float32Array[] = [];
    for (const runner of runners) logits.push(await collectTailLogits(runner, prompts, s.qualityFromTokens));
    const qualities = logits.map((l) => quality(logits[0], l, config.vocabSize));

    ctx.log(`latency: ${s.latencyRounds} rounds over all variants`);
    const prefill: number[][] = runners.map(() => []);
    const decode: number[][] = runners.map(() => []);
    for (let round = 0; round < s.latencyRounds; round++) {
      for (let k = 0; k < runners.length; k++) {
        const i = (k + round) % runners.length;
        prefill[i].push(await prefillMs(runners[i], prompts[round % prompts.length], maxSequenceTokens));
        decode[i].push(...(await decodeStepsMs(runners[i], prompts[round % prompts.length], s.decodeStepsPerRound, maxSequenceTokens)));
      }
    }

    const variants: VariantMeasurement[] = converted.map((c, i) => ({
      label: labelOf(ENTRIES[i]),
      checkpoint: c.kind,
      id: c.variant.id,
      quant: c.variant.quant,
      blockSize: c.variant.blockSize,
      outlierFraction: c.variant.outlierFraction,
      bytes: readWeightBytes(c.dir),
      conversionMs: c.conversionWallMs,
      loadMs: loadMs[i],
      prefillMs: prefill[i],
      decodeStepMs: decode[i],
      quality: qualities[i],
    }));
    const result = output(ctx, s, config, variants);
    const fixture = findTrainedFixture();
    if (fixture === null) {
      ctx.log('no trained fixture (npm run fixtures:trained): trained-weights rows skipped');
      return result;
    }
    const peerTypes: GgmlTypeName[] = peerInstalled() ? ['F16', 'Q8_0', 'Q4_0'] : [];
    if (peerTypes.length === 0) ctx.log('llama.cpp peer not installed (npm run bench -- --only peer installs it): no Q8_0 / Q4_0 rows on trained weights');
    const trained = await measureTrainedQuantization(fixture, TRAINED_VARIANTS, ctx.log, { peerTypes });
    const extra = trainedQuantizationOutput(fixture, trained);
    return { tables: [...result.tables, ...extra.tables], summary: [...result.summary, ...extra.summary], data: { ...result.data, trained: { fixtureKey: fixture.manifest.key, variants: trained } } };
  } finally {
    for (const r of runners) await r.release();
  }
}

/** The variant an outlier variant is measured against: same checkpoint and quantizer, no outliers. */
function baseOf(v: VariantMeasurement, all: VariantMeasurement[]): VariantMeasurement | undefined {
  if (v.outlierFraction === 0) return undefined;
  return all.find((b) => b.checkpoint === v.checkpoint && b.quant === v.quant && b.blockSize === v.blockSize && b.outlierFraction === 0);
}

function output(ctx: BenchContext, s: Settings, config: ModelConfig, variants: VariantMeasurement[]): CaseOutput {
  const fp32 = variants[0];
  const ref = { prefill: median(fp32.prefillMs), decode: median(fp32.decodeStepMs) };
  const positions = fp32.quality.positions;
  const sizeRows: Cell[][] = variants.map((v) => [
    v.label,
    significant(v.bytes.weightsBytes / MIB),
    significant(v.bytes.weightsBytes / fp32.bytes.weightsBytes),
    significant(v.bytes.linearBytes / MIB),
    significant(v.bytes.linearBitsPerWeight),
    significant(v.conversionMs / 1000),
    Math.round(v.loadMs),
    significant(median(v.prefillMs)),
    significant(ref.prefill / median(v.prefillMs)),
    significant(median(v.decodeStepMs)),
    significant(ref.decode / median(v.decodeStepMs)),
  ]);
  const qualityRows: Cell[][] = variants.map((v) => {
    const base = baseOf(v, variants);
    const extraMiB = base ? (v.bytes.weightsBytes - base.bytes.weightsBytes) / MIB : null;
    // paired over positions: the same position's KL with and without outliers
    const removed = base ? meanAndStandardError(base.quality.klPerPosition.map((k, p) => k - v.quality.klPerPosition[p])) : null;
    return [
      v.label,
      significant(v.quality.top1Agreement, 4),
      significant(v.quality.meanKl),
      significant(v.quality.klStandardError, 2),
      significant(v.quality.maxAbsDiff),
      base ? base.label : null,
      extraMiB === null ? null : significant(extraMiB),
      removed === null || base!.quality.meanKl === 0 ? null : `${significant((100 * removed.mean) / base!.quality.meanKl)} ± ${significant((100 * removed.se) / base!.quality.meanKl, 2)}`,
      removed === null || extraMiB === null || extraMiB <= 0 ? null : significant(removed.mean / extraMiB),
    ];
  });
  const summary: SummaryRow[] = variants.slice(1).map((v) => ({
    metric: `quantization ${v.label} vs fp32`,
    value:
      `${significant(v.bytes.weightsBytes / MIB)} MiB (${significant(v.bytes.weightsBytes / fp32.bytes.weightsBytes)}x), ` +
      `decode ${significant(ref.decode / median(v.decodeStepMs))}x, prefill ${significant(ref.prefill / median(v.prefillMs))}x faster, ` +
      `top-1 ${significant(100 * v.quality.top1Agreement, 3)}%, KL ${significant(v.quality.meanKl)} nats`,
  }));
  ctx.log('done');
  return {
    tables: [
      {
        title: `Size and speed (${s.preset} model; ${s.latencyRounds} rounds round-robin; medians)`,
        columns: ['variant', 'weights MiB', 'x fp32 size', 'linear MiB', 'linear bits/weight', 'convert s', 'load ms', `prefill ${s.promptTokens} ms`, 'prefill speedup', 'decode step ms', 'decode speedup'],
        rows: sizeRows,
        notes: [
          'weights = the whole external weights file, fp32 embedding table included (it stays fp32 for the gather); linear = the linears alone (LM head included): codes, scales, zero points, fp32 outlier columns; bits/weight = 8 x linear bytes / linear parameters',
          'convert = tessera convert wall time (read checkpoint, quantize, write graphs and weights); load = ModelRunner.create: both ORT sessions (base and multi-LoRA graph) over the one weights file',
          `prefill = one ${s.promptTokens}-token prompt at batch 1; decode = one token at batch 1 after it (${s.decodeStepsPerRound} steps per round); speedups are fp32 time / variant time, same run`,
          `[planted] = the same checkpoint with outlier input channels planted (${100 * OUTLIER_CHANNELS.fraction}% of each linear's inputs, columns x${OUTLIER_CHANNELS.scale}, the preceding norm or projection / ${OUTLIER_CHANNELS.scale}: same function)`,
        ],
      },
      {
        title: `Quality vs fp32 (${positions} positions: ${s.numPrompts} prompts x ${s.promptTokens - s.qualityFromTokens} next-token predictions)`,
        columns: ['variant', 'top-1 agreement', 'mean KL nats', 'KL std err', 'max |dlogit|', 'outliers vs', 'extra MiB', 'KL removed %', 'KL removed per MiB'],
        rows: qualityRows,
        notes: [
          'KL(fp32 || variant) of the next-token distributions, reference = fp32 of the plain checkpoint for every row',
          'outlier variants are compared with the same checkpoint and quantizer without outliers; KL removed is paired over positions, ± one standard error',
        ],
      },
    ],
    summary,
    data: {
      preset: s.preset,
      settings: s,
      outlierChannels: OUTLIER_CHANNELS,
      model: { hiddenSize: config.hiddenSize, numLayers: config.numLayers, intermediateSize: config.intermediateSize, vocabSize: config.vocabSize },
      variants,
    },
  };
}

const benchCase: BenchCase = {
  name: 'quantization',
  description: 'fp32 / int8 / int4 (+ SpQR-style outliers, also on planted outlier channels): size, conversion, load, prefill and decode latency, next-token quality vs fp32',
  run,
};

export default benchCase;
