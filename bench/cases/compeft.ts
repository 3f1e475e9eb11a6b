/**
 * ComPEFT quality and cost, per density, on one model worker (int4):
 *   next-token KL and top-1 agreement between each uncompressed PEFT adapter (slot 1) and its compressed versions
 *   (slots 2..), all rows in the same batches over a fixed prompt set; the base model (slot 0) in the same batches
 *   gives the scale (how far the adapter moves the model at all);
 *   compression ratio vs the fp16 safetensors adapter; decode throughput into a slot in parameters/s; host-cache
 *   capacity (adapters per byte budget, as the adapter manager accounts them: float32 factors for PEFT, file bytes
 *   for .cpeft).
 * The adapters are random (writeRandomAdapter): a proxy, not trained adapters (see docs/compeft.md). When the trained
 * fixture is there (`npm run fixtures:trained`), the share of each trained adapter's held-out loss gain that its
 * compressed versions keep is added (bench/lib/trained-compeft.ts); without it the case runs as before.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { decodeToPeftLike, parseCompeft } from '../../src/adapters/compeft/index.ts';
import { compressAdapterDir, type CompressSummary } from '../../src/adapters/compeft/compress-command.ts';
import { readPeftAdapter } from '../../src/adapters/peft/peft-adapter.ts';
import { decodeCompeftIntoSlot } from '../../src/adapters/slot-decode-compeft.ts';
import type { SequenceWork } from '../../src/engine/executor.ts';
import { writeRandomAdapter } from '../../src/model/checkpoint/make-adapter.ts';
import { modelName, type ModelPreset } from '../../src/model/checkpoint/make-model.ts';
import { compareLogits, type LogitComparison } from '../../src/model/quantization/quality.ts';
import { ModelRunner } from '../../src/model/runner/model-runner.ts';
import { PagedKvCache } from '../../src/model/runner/paged-kv-cache.ts';
import type { BenchCase, BenchContext, CaseOutput, Cell } from '../lib/bench-case.ts';
import { BLOCK_SIZE_TOKENS, benchPrompts } from '../lib/model-runs.ts';
import { INT4 } from '../lib/quant-variants.ts';
import { quantile, significant } from '../lib/stats.ts';
import { findTrainedFixture } from '../lib/trained-fixture.ts';
import { measureTrainedCompeft, trainedCompeftOutput, type TrainedCompeftRun } from '../lib/trained-compeft.ts';

interface Settings {
  preset: ModelPreset;
  numAdapters: number;
  numPrompts: number;
  promptTokens: number;
  /** Positions before the first compared one (prefill length). */
  fromTokens: number;
  decodeReps: number;
}

const SETTINGS: Record<'quick' | 'full', Settings> = {
  quick: { preset: 'tiny', numAdapters: 2, numPrompts: 4, promptTokens: 12, fromTokens: 4, decodeReps: 3 },
  full: { preset: 'small', numAdapters: 3, numPrompts: 8, promptTokens: 24, fromTokens: 8, decodeReps: 10 },
};

const DENSITIES = [0.05, 0.1, 0.2, 0.3];
const MAX_RANK = 16;
const HOST_BUDGET_BYTES = 512 * 1024 * 1024;
/** lora_alpha multipliers: the generated adapters (x1) change the model a lot; weaker versions of the same factors. */
const STRENGTHS = [1, 0.1, 0.02];

/** Rewrites adapter_config.json's lora_alpha to `factor` times its value (same factors, smaller scale). */
function scaleLoraAlpha(dir: string, factor: number): void {
  const file = path.join(dir, 'adapter_config.json');
  const json = JSON.parse(fs.readFileSync(file, 'utf8')) as { lora_alpha: number };
  json.lora_alpha *= factor;
  fs.writeFileSync(file, JSON.stringify(json, null, 2));
}

interface TailLogits {
  /** [slot][prompt * rowsPerPrompt + r][vocab], concatenated per slot. */
  bySlot: Float32Array[];
}

/** Next-token logits at positions fromTokens..len-1 of every prompt, for every slot in `slots`, all rows in one batch per step. */
async function tailLogitsPerSlot(runner: ModelRunner, prompts: number[][], fromTokens: number, slots: number[]): Promise<TailLogits> {
  const vocab = runner.layout.vocabSize;
  const length = prompts[0].length;
  const rowsPerPrompt = length - fromTokens;
  const blocksPerSeq = Math.ceil(length / BLOCK_SIZE_TOKENS);
  const seqs = slots.flatMap((slot, s) => prompts.map((prompt, p) => ({ seqId: s * prompts.length + p + 1, slot, prompt, p, s })));
  const bySlot = slots.map(() => new Float32Array(prompts.length * rowsPerPrompt * vocab));
  for (let r = 0; r < rowsPerPrompt; r++) {
    const position = r === 0 ? 0 : fromTokens + r - 1;
    const count = r === 0 ? fromTokens : 1;
    const sequences: SequenceWork[] = seqs.map((q) => ({
      seqId: q.seqId,
      tokenIds: q.prompt.slice(position, position + count),
      startPosition: position,
      blockTable: Array.from({ length: blocksPerSeq }, (_, i) => (q.seqId - 1) * blocksPerSeq + i),
      adapterSlot: q.slot,
      sampleNext: true,
    }));
    const result = await runner.execute({ stepId: r, sequences });
    for (const q of seqs) {
      const outcome = result.outcomes.find((o) => o.seqId === q.seqId);
      if (!outcome || outcome.error !== undefined || outcome.logitsRow < 0) throw new Error(`sequence ${q.seqId} produced no logits: ${outcome?.error ?? 'missing'}`);
      bySlot[q.s].set(result.logits.subarray(outcome.logitsRow * vocab, (outcome.logitsRow + 1) * vocab), (q.p * rowsPerPrompt + r) * vocab);
    }
  }
  return { bySlot };
}

function mean(values: number[]): number {
  return values.reduce((a, b) => a + b, 0) / values.length;
}

async function run(ctx: BenchContext): Promise<CaseOutput> {
  const s = SETTINGS[ctx.mode];
  const model = await ctx.models.converted(s.preset, INT4);
  const config = model.manifest.config;
  const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'tessera-bench-compeft-'));
  const numSlots = 2 + DENSITIES.length;
  const numSeqs = s.numPrompts * numSlots;
  const bytesPerBlock = PagedKvCache.bytesPerBlock({ numLayers: config.numLayers, numKvHeads: config.numKvHeads, headDim: config.headDim, blockSizeTokens: BLOCK_SIZE_TOKENS });
  const runner = await ModelRunner.create({
    modelDir: model.dir,
    kvCacheBytes: numSeqs * Math.ceil(s.promptTokens / BLOCK_SIZE_TOKENS) * bytesPerBlock,
    blockSizeTokens: BLOCK_SIZE_TOKENS,
    numAdapterSlots: numSlots,
    maxAdapterRank: MAX_RANK,
  });
  try {
    const prompts = benchPrompts({ numPrompts: s.numPrompts, lengthTokens: s.promptTokens, vocabSize: config.vocabSize, seed: 11 });
    const summaries = new Map<number, CompressSummary[]>(DENSITIES.map((d) => [d, []]));
    const decodeMs = new Map<number, number[]>(DENSITIES.map((d) => [d, []]));
    const peftSlotMs: number[] = [];
    const peftHostBytes: number[] = [];
    const ranks: number[] = [];
    const byStrength = new Map<number, { quality: Map<number, LogitComparison[]>; baseVsAdapter: LogitComparison[]; scale: number }>();
    for (const strength of STRENGTHS) {
    const primary = strength === STRENGTHS[0];
    const quality = new Map<number, LogitComparison[]>(DENSITIES.map((d) => [d, []]));
    const baseVsAdapter: LogitComparison[] = [];
    let adapterScale = 0;
    for (let i = 0; i < s.numAdapters; i++) {
      const rank = i % 2 === 0 ? 16 : 8;
      if (primary) ranks.push(rank);
      const dir = path.join(scratch, `adapter-${i}-x${strength}`);
      ctx.log(`adapter ${i} (rank ${rank}, lora_alpha x${strength}): write, compress at ${DENSITIES.join(', ')}`);
      await writeRandomAdapter({ dir, config, rank, seed: 1, streamLabel: `compeft-bench-${i}`, baseModel: modelName(s.preset, ctx.models.seed) });
      if (!primary) scaleLoraAlpha(dir, strength);
      for (let r = 0; r < (primary ? s.decodeReps : 0); r++) {
        const t0 = performance.now();
        runner.loadAdapterSlot(1, readPeftAdapter(dir, config));
        peftSlotMs.push(performance.now() - t0);
      }
      const peft = readPeftAdapter(dir, config);
      adapterScale = peft.scale;
      if (primary) peftHostBytes.push(peft.sizeBytes);
      runner.loadAdapterSlot(1, peft);
      for (const [k, density] of DENSITIES.entries()) {
        const outFile = path.join(scratch, `adapter-${i}-x${strength}-d${density}.cpeft`);
        const summary = await compressAdapterDir({ adapterDir: dir, config, density, alpha: 'auto', outFile });
        if (primary) summaries.get(density)!.push(summary);
        const bytes = new Uint8Array(fs.readFileSync(outFile));
        decodeCompeftIntoSlot(bytes, config, 2 + k, (rk, scale, fill) => runner.fillAdapterSlot(2 + k, rk, scale, fill));
        for (let r = 0; r < (primary ? s.decodeReps : 0); r++) {
          const t0 = performance.now();
          decodeCompeftIntoSlot(bytes, config, 2 + k, (rk, scale, fill) => runner.fillAdapterSlot(2 + k, rk, scale, fill));
          decodeMs.get(density)!.push(performance.now() - t0);
        }
        // Cross-check of the slot path: the dense decode has the rank and scale the slot got.
        const dense = decodeToPeftLike(parseCompeft(bytes));
        if (dense.rank !== rank || dense.scale !== peft.scale) throw new Error(`adapter ${i} d=${density}: decoded rank/scale ${dense.rank}/${dense.scale}, expected ${rank}/${peft.scale}`);
      }
      ctx.log(`adapter ${i}: logits over ${s.numPrompts} prompts x ${s.promptTokens - s.fromTokens} positions, slots 0..${numSlots - 1} in one batch`);
      const slots = Array.from({ length: numSlots }, (_, k) => k);
      const { bySlot } = await tailLogitsPerSlot(runner, prompts, s.fromTokens, slots);
      const vocab = config.vocabSize;
      baseVsAdapter.push(compareLogits(bySlot[1], bySlot[0], vocab));
      for (const [k, density] of DENSITIES.entries()) quality.get(density)!.push(compareLogits(bySlot[1], bySlot[2 + k], vocab));
    }
    byStrength.set(strength, { quality, baseVsAdapter, scale: adapterScale });
    }

    const numParams = summaries.get(DENSITIES[0])!.map((x) => x.numParams);
    const meanParams = mean(numParams);
    const meanPeftHost = mean(peftHostBytes);
    const positions = byStrength.get(STRENGTHS[0])!.baseVsAdapter[0].positions;
    const rows: Cell[][] = [];
    for (const [strength, r] of byStrength) {
      const q = r.baseVsAdapter;
      const label = `x${strength} (scale ${significant(r.scale)})`;
      rows.push([label, 'base (no adapter)', significant(mean(q.map((x) => x.meanKl))), significant(mean(q.map((x) => x.top1Agreement))), significant(Math.max(...q.map((x) => x.maxAbsDiff))), null, null, null]);
      for (const d of DENSITIES) {
        const qd = r.quality.get(d)!;
        const sm = summaries.get(d)!;
        rows.push([
          label,
          String(d),
          significant(mean(qd.map((x) => x.meanKl))),
          significant(mean(qd.map((x) => x.top1Agreement))),
          significant(Math.max(...qd.map((x) => x.maxAbsDiff))),
          significant(mean(sm.map((x) => x.relFrobeniusError))),
          significant(mean(sm.map((x) => x.compressedBytes))),
          significant(mean(sm.map((x) => x.ratioVsFp16))),
        ]);
      }
    }
    const costRows: Cell[][] = DENSITIES.map((d) => {
      const ms = decodeMs.get(d)!;
      const meanCompressed = mean(summaries.get(d)!.map((x) => x.compressedBytes));
      return [
        `.cpeft d=${d}`,
        significant(quantile(ms, 0.5)),
        significant(quantile(ms, 0.99)),
        significant(meanParams / (quantile(ms, 0.5) / 1000) / 1e6),
        significant(meanCompressed / 1024),
        Math.floor(HOST_BUDGET_BYTES / meanCompressed),
      ];
    });
    costRows.push([
      'PEFT safetensors (read + slot write)',
      significant(quantile(peftSlotMs, 0.5)),
      significant(quantile(peftSlotMs, 0.99)),
      significant(meanParams / (quantile(peftSlotMs, 0.5) / 1000) / 1e6),
      significant(meanPeftHost / 1024),
      Math.floor(HOST_BUDGET_BYTES / meanPeftHost),
    ]);
    const d01 = DENSITIES.indexOf(0.1);
    const data: Record<string, unknown> = {
      settings: s,
      densities: DENSITIES,
      ranks,
      numParams,
      hostBudgetBytes: HOST_BUDGET_BYTES,
      loraAlphaMultipliers: STRENGTHS,
      quality: Object.fromEntries([...byStrength].map(([k, r]) => [`x${k}`, { scale: r.scale, baseVsAdapter: r.baseVsAdapter, byDensity: Object.fromEntries(DENSITIES.map((d) => [String(d), r.quality.get(d)])) }])),
      compress: Object.fromEntries(DENSITIES.map((d) => [String(d), summaries.get(d)!.map(({ outFile: _f, ...rest }) => rest)])),
      decodeIntoSlotMs: Object.fromEntries(DENSITIES.map((d) => [String(d), decodeMs.get(d)])),
      peftReadAndSlotWriteMs: peftSlotMs,
      peftHostBytes,
    };
    const result: CaseOutput = {
      tables: [
        {
          title: `Compressed vs uncompressed adapter, next-token logits (${s.preset} int4, ${s.numAdapters} random adapters of rank ${[...new Set(ranks)].join('/')}, ${s.numPrompts} prompts x ${positions / s.numPrompts} positions = ${positions} positions per adapter)`,
          columns: ['lora_alpha', 'density', 'mean KL (nats)', 'top-1 agreement', 'max |dlogit|', 'rel. Frobenius err of BA', '.cpeft bytes', 'x vs fp16'],
          rows,
          notes: [
            'reference = the uncompressed PEFT adapter (slot 1); compressed versions (alpha auto) in slots 2.. and the base model (slot 0) run in the same batches',
            'the "base (no adapter)" rows compare the base model to the uncompressed adapter: the KL of dropping the adapter altogether',
            `lora_alpha x${STRENGTHS[0]}: as generated (alpha = 2r, scale 2); x${STRENGTHS.slice(1).join(', x')}: the same factors with lora_alpha scaled down (weaker adapters, closer to a fine-tune's size of effect)`,
            'rel. Frobenius error, bytes and ratio do not depend on lora_alpha (shown from the x1 adapters)',
            'KL(adapter || compressed), mean over positions and adapters; max |dlogit| over all; random adapters are a proxy for trained ones',
          ],
        },
        {
          title: `Decode into a device slot and host-cache capacity (${meanParams.toLocaleString('en-US')} parameters per adapter on average, ${HOST_BUDGET_BYTES / 2 ** 20} MiB host budget)`,
          columns: ['source', 'slot load p50 ms', 'p99 ms', 'M params/s (p50)', 'host bytes / adapter (KiB)', `adapters in ${HOST_BUDGET_BYTES / 2 ** 20} MiB`],
          rows: costRows,
          notes: [
            '.cpeft: parse (CRCs) + decode straight into the rank-padded slot stacks (the worker path); PEFT: read the safetensors dir + slot write',
            'host bytes as the adapter manager counts them: .cpeft file bytes; PEFT float32 factors',
          ],
        },
      ],
      summary: [
        ...[...byStrength].map(([k, r]) => ({
          metric: `compeft: KL / top-1 vs uncompressed at density 0.1 (${s.preset} int4, random adapters, lora_alpha x${k}; adapter vs base KL ${significant(mean(r.baseVsAdapter.map((x) => x.meanKl)))})`,
          value: `${significant(mean(r.quality.get(0.1)!.map((x) => x.meanKl)))} nats / ${significant(mean(r.quality.get(0.1)!.map((x) => x.top1Agreement)))}`,
        })),
        { metric: 'compeft: size ratio vs fp16 safetensors at density 0.1', value: `${significant(mean(summaries.get(0.1)!.map((x) => x.ratioVsFp16)))}x` },
        { metric: 'compeft: decode into slot at density 0.1 (M params/s, p50)', value: String(costRows[d01][3]) },
      ],
      data,
    };
    return await withTrainedAdapters(ctx, result);
  } finally {
    await runner.release();
    fs.rmSync(scratch, { recursive: true, force: true });
  }
}

/** Adds the gain-kept tables on the trained fixture's adapters when the fixture is there (bench/lib/trained-compeft.ts). */
async function withTrainedAdapters(ctx: BenchContext, result: CaseOutput): Promise<CaseOutput> {
  const fixture = findTrainedFixture();
  if (fixture === null) {
    ctx.log('no trained fixture (npm run fixtures:trained): trained-adapter rows skipped');
    return result;
  }
  const runs: TrainedCompeftRun[] = [];
  for (const variant of [INT4]) runs.push({ variant, adapters: await measureTrainedCompeft(fixture, { variant, densities: DENSITIES, log: ctx.log }) });
  const extra = trainedCompeftOutput(fixture, runs, DENSITIES);
  return { tables: [...result.tables, ...extra.tables], summary: [...result.summary, ...extra.summary], data: { ...result.data, trained: { fixtureKey: fixture.manifest.key, runs } } };
}

const compeftCase: BenchCase = {
  name: 'compeft',
  description: 'ComPEFT: KL / top-1 vs the uncompressed adapter per density, size ratio, slot decode throughput, host-cache capacity',
  run,
};
export default compeftCase;
