/**
 * Multi-adapter serving vs base-model-only, side by side in one run on one model worker (int4):
 *   throughput at concurrency 16 with 1, 8 and 64 distinct adapters (uniform and Zipf s=1 popularity), as a ratio
 *   to base-only runs interleaved with them; slot loads per run; cold-load latency of one adapter from disk (PEFT
 *   directory and .cpeft: fetch + validate + slot write, p50/p99); and what cold loads do to requests already running:
 *   time per output token and inter-token latency of an 8-adapter load with and without adapters being cold-loaded
 *   from disk back to back meanwhile.
 * The adapters are real PEFT directories on disk; to keep generation time and disk use small, 8 random adapter files
 * are written and 64 ids are registered over them (each id is still its own registry entry, host entry and slot).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createAdapterManager, type AdapterManager } from '../../src/adapters/adapter-manager.ts';
import { compressAdapterDir } from '../../src/adapters/compeft/compress-command.ts';
import { createEngine } from '../../src/engine/engine.ts';
import type { ValidGenerateRequest } from '../../src/engine/request.ts';
import { writeRandomAdapter } from '../../src/model/checkpoint/make-adapter.ts';
import { modelName, type ModelPreset } from '../../src/model/checkpoint/make-model.ts';
import { ThreadExecutor } from '../../src/parallel/thread-executor.ts';
import type { BenchCase, BenchContext, CaseOutput, Cell } from '../lib/bench-case.ts';
import { loraStepCosts } from '../lib/lora-step-costs.ts';
import { INT4 } from '../lib/quant-variants.ts';
import { quantile, significant } from '../lib/stats.ts';

interface Settings {
  preset: ModelPreset;
  concurrency: number;
  requests: number;
  promptTokens: number;
  outputTokens: number;
  numFiles: number;
  coldLoads: number;
  /** Rows of the per-kernel decode step measurement. */
  stepBatch: number;
}

const SETTINGS: Record<'quick' | 'full', Settings> = {
  quick: { preset: 'tiny', concurrency: 16, requests: 32, promptTokens: 16, outputTokens: 8, numFiles: 4, coldLoads: 5, stepBatch: 4 },
  full: { preset: 'small', concurrency: 16, requests: 48, promptTokens: 32, outputTokens: 32, numFiles: 8, coldLoads: 20, stepBatch: 16 },
};

const NUM_SLOTS = 17; // 16 usable: at concurrency 16 every running request can have its own adapter
const MAX_RANK = 16;

interface Mix {
  name: string;
  distinct: number;
  zipf: boolean;
}

const MIXES: Mix[] = [
  { name: '1 adapter', distinct: 1, zipf: false },
  { name: '8 uniform', distinct: 8, zipf: false },
  { name: '8 Zipf', distinct: 8, zipf: true },
  { name: '64 uniform', distinct: 64, zipf: false },
  { name: '64 Zipf', distinct: 64, zipf: true },
];

/** Deterministic adapter choice per request index: uniform or Zipf(s = 1) over `distinct` ids. */
function chooser(mix: Mix | null, seed: number): () => string | null {
  if (mix === null) return () => null;
  let state = seed >>> 0 || 1;
  const rand = () => {
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    return (state >>> 0) / 2 ** 32;
  };
  const weights = Array.from({ length: mix.distinct }, (_, k) => (mix.zipf ? 1 / (k + 1) : 1));
  const total = weights.reduce((a, b) => a + b, 0);
  return () => {
    let u = rand() * total;
    for (let k = 0; k < weights.length; k++) {
      u -= weights[k];
      if (u <= 0) return `ad-${k}`;
    }
    return `ad-${weights.length - 1}`;
  };
}

interface RunStats {
  tokensPerS: number;
  tpotP50Ms: number;
  tpotP99Ms: number;
  /** Gaps between consecutive token events of each request, all requests. */
  itlP50Ms: number;
  itlP99Ms: number;
  ttftP50Ms: number;
  loads: number;
}

async function drive(executor: ThreadExecutor, manager: AdapterManager, s: Settings, pick: () => string | null, counter: { loads: number }): Promise<RunStats> {
  const engine = createEngine({ executor, detokenizer: null, eosTokenIds: [], adapterSlots: manager, maxRunningSequences: s.concurrency, maxBatchTokens: 2048, prefillChunkTokens: 512 });
  const vocab = executor.layout.vocabSize;
  const ttft: number[] = [];
  const tpot: number[] = [];
  const itl: number[] = [];
  let generated = 0;
  let next = 0;
  const loadsBefore = counter.loads;
  const started = performance.now();
  const worker = async () => {
    while (next < s.requests) {
      const id = next++;
      const req: ValidGenerateRequest = {
        requestId: `bench-${id}`,
        promptTokenIds: Array.from({ length: s.promptTokens }, (_, j) => ((id * 7919 + j * 104729) % (vocab - 1)) + 1),
        adapterId: pick(),
        tenantId: null,
        sampling: { temperature: 0, topK: 0, topP: 1, minP: 0, seed: null, repetitionPenalty: 1, presencePenalty: 0, frequencyPenalty: 0 },
        stopping: { maxNewTokens: s.outputTokens, stopSequences: [], stopTokenIds: [], ignoreEos: true },
        topNLogprobs: 0,
        deadlineMs: null,
      };
      const t0 = performance.now();
      let first: number | null = null;
      let last = 0;
      let count = 0;
      for await (const e of engine.submit(req)) {
        if (e.type === 'tokens' && e.tokens.length > 0) {
          const now = performance.now();
          if (first !== null) itl.push(now - last);
          first ??= now;
          last = now;
          count += e.tokens.length;
        } else if (e.type === 'finish' && e.reason !== 'length') throw new Error(`request ${id} (${req.adapterId}) finished ${e.reason}: ${e.error?.message}`);
      }
      const done = performance.now();
      ttft.push(first! - t0);
      if (count > 1) tpot.push((done - first!) / (count - 1));
      generated += count;
    }
  };
  await Promise.all(Array.from({ length: s.concurrency }, worker));
  const wallMs = performance.now() - started;
  await engine.shutdown();
  return {
    tokensPerS: (generated * 1000) / wallMs,
    tpotP50Ms: quantile(tpot, 0.5),
    tpotP99Ms: quantile(tpot, 0.99),
    itlP50Ms: quantile(itl, 0.5),
    itlP99Ms: quantile(itl, 0.99),
    ttftP50Ms: quantile(ttft, 0.5),
    loads: counter.loads - loadsBefore,
  };
}

/** LoadAdapter of a cold id, then the first acquire until resident (fetch + validate + slot write); ms. Unloads it after. */
async function coldLoad(manager: AdapterManager, id: string, source: string): Promise<number> {
  const t0 = performance.now();
  await manager.load({ adapterId: id, source, pin: false, tenantId: null });
  for (;;) {
    const r = manager.acquire(id, null);
    if (typeof r === 'number') {
      manager.release(id, r);
      break;
    }
    if (r !== 'pending') throw r;
    await new Promise((resolve) => setTimeout(resolve, 1));
  }
  const ms = performance.now() - t0;
  await manager.unload({ adapterId: id, tenantId: null });
  return ms;
}

async function run(ctx: BenchContext): Promise<CaseOutput> {
  const s = SETTINGS[ctx.mode];
  const model = await ctx.models.converted(s.preset, INT4);
  const config = model.manifest.config;
  const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'tessera-bench-adapters-'));
  const executor = await ThreadExecutor.start({ modelDir: model.dir, kvCacheBytes: 512 * 1024 * 1024, blockSizeTokens: 16, numAdapterSlots: NUM_SLOTS, maxAdapterRank: MAX_RANK });
  try {
    ctx.log(`writing ${s.numFiles} random adapters (ranks 8/16) into ${scratch}`);
    const files: string[] = [];
    for (let i = 0; i < s.numFiles; i++) {
      const dir = path.join(scratch, `file-${i}`);
      await writeRandomAdapter({ dir, config, rank: i % 2 === 0 ? 8 : 16, seed: 1, streamLabel: `bench-${i}`, baseModel: modelName(s.preset, ctx.models.seed) });
      files.push(dir);
    }
    const cpeft = path.join(scratch, 'file-0.cpeft');
    await compressAdapterDir({ adapterDir: files[0], config, density: 0.1, alpha: 'auto', outFile: cpeft });

    const counter = { loads: 0 };
    const slots = {
      loadAdapterSlot: (slot: number, w: Parameters<ThreadExecutor['loadAdapterSlot']>[1]) => (counter.loads++, executor.loadAdapterSlot(slot, w)),
      loadCompressedSlot: (slot: number, b: Uint8Array) => (counter.loads++, executor.loadCompressedSlot(slot, b)),
      clearAdapterSlot: (slot: number) => executor.clearAdapterSlot(slot),
    };
    const manager = createAdapterManager({
      slots,
      config,
      modelId: model.manifest.modelId,
      numSlots: NUM_SLOTS,
      maxRank: MAX_RANK,
      hostCacheBytes: 4 * 1024 * 1024 * 1024,
      allowedRoots: [scratch],
    });
    for (let k = 0; k < 64; k++) await manager.load({ adapterId: `ad-${k}`, source: files[k % files.length], pin: false, tenantId: null });

    ctx.log('warm-up');
    await drive(executor, manager, { ...s, requests: s.concurrency }, chooser(MIXES[1], 7), counter);

    const rows: Cell[][] = [];
    const data: Record<string, unknown> = { settings: s, numSlots: NUM_SLOTS, maxRank: MAX_RANK };
    const basePre = await drive(executor, manager, s, chooser(null, 0), counter);
    const results: Array<{ mix: Mix; stats: RunStats; base: number }> = [];
    let previousBase = basePre.tokensPerS;
    for (const [i, mix] of MIXES.entries()) {
      ctx.log(`${mix.name}, then base-only`);
      const stats = await drive(executor, manager, s, chooser(mix, 100 + i), counter);
      const base = await drive(executor, manager, s, chooser(null, 0), counter);
      const baseTps = (previousBase + base.tokensPerS) / 2; // base runs either side of this one
      previousBase = base.tokensPerS;
      results.push({ mix, stats, base: baseTps });
      rows.push([mix.name, significant(stats.tokensPerS), significant(baseTps), significant(stats.tokensPerS / baseTps), stats.loads, significant(stats.ttftP50Ms), significant(stats.tpotP50Ms)]);
    }
    data.runs = results.map((r) => ({ mix: r.mix, ...r.stats, baseTokensPerS: r.base, ratio: r.stats.tokensPerS / r.base }));

    // Cold load from disk: unload and re-load (fetch + validate into the host tier, then a slot write).
    const cold: Record<string, number[]> = { peft: [], cpeft: [] };
    for (const [kind, source] of [['peft', files[1]], ['cpeft', cpeft]] as const) {
      for (let i = 0; i < s.coldLoads; i++) cold[kind].push(await coldLoad(manager, `cold-${kind}-${i}`, source));
    }
    data.coldLoadMs = cold;

    // The same 8-adapter load twice, the second time with PEFT adapters cold-loaded back to back meanwhile (into the
    // slots the 8 running adapters leave free), so their effect on running requests' token times shows side by side.
    ctx.log('8 uniform, then 8 uniform while adapters are cold-loaded from disk');
    const quiet = await drive(executor, manager, s, chooser(MIXES[1], 300), counter);
    let loading = true;
    const underLoad: number[] = [];
    const loader = (async () => {
      for (let i = 0; loading; i++) underLoad.push(await coldLoad(manager, `under-load-${i}`, files[(i % (files.length - 1)) + 1]));
    })();
    const busy = await drive(executor, manager, s, chooser(MIXES[1], 300), counter);
    loading = false;
    await loader;
    data.coldLoadsUnderLoad = { quiet, busy, coldLoadMs: underLoad };
    const effectRows: Cell[][] = [
      ['no loads', 0, significant(quiet.tpotP50Ms), significant(quiet.tpotP99Ms), significant(quiet.itlP50Ms), significant(quiet.itlP99Ms), significant(quiet.tokensPerS), null],
      ['cold loads back to back', underLoad.length, significant(busy.tpotP50Ms), significant(busy.tpotP99Ms), significant(busy.itlP50Ms), significant(busy.itlP99Ms), significant(busy.tokensPerS), significant(quantile(underLoad, 0.5))],
    ];
    await manager.shutdown();
    ctx.log(`step costs per kernel: decode at batch ${s.stepBatch}`);
    const steps = await loraStepCosts(model.dir, files, { batch: s.stepBatch, pastTokens: s.promptTokens * 2, rounds: 5, numSlots: NUM_SLOTS, maxRank: MAX_RANK });
    data.stepCosts = steps;
    const stepRows: Cell[][] = [
      ['base model only', significant(steps.baseMs), 1],
      [`${steps.numAdapters} adapters, packed kernel (quantized models)`, significant(steps.packed8Ms), significant(steps.baseMs / steps.packed8Ms)],
      [`${steps.numAdapters} adapters, per-row gather kernel`, significant(steps.gather8Ms), significant(steps.baseMs / steps.gather8Ms)],
      ['1 adapter for every row, packed kernel', significant(steps.packed1Ms), significant(steps.baseMs / steps.packed1Ms)],
    ];
    const coldRows: Cell[][] = Object.entries(cold).map(([kind, v]) => [kind, significant(quantile(v, 0.5)), significant(quantile(v, 0.99)), v.length]);
    const eight = results.find((r) => r.mix.name === '8 uniform')!;
    return {
      tables: [
        {
          title: `Throughput with adapters vs base-only (${s.preset} int4, concurrency ${s.concurrency}, ${s.requests} requests of ${s.promptTokens}+${s.outputTokens} tokens, ${NUM_SLOTS - 1} slots, max rank ${MAX_RANK})`,
          columns: ['mix', 'tokens/s', 'base tokens/s', 'ratio', 'slot loads', 'TTFT p50 ms', 'TPOT p50 ms'],
          rows,
          notes: ['base tokens/s = mean of the base-only runs just before and after the adapter run (same worker, same run)'],
        },
        {
          title: `Decode step cost by LoRA kernel (${s.preset} int4, batch ${steps.batch}, ${steps.pastTokens} cached positions, adapters of ranks 8/16)`,
          columns: ['rows use', 'step ms', 'base / this'],
          rows: stepRows,
          notes: ['medians of 8 steps, 5 rounds round-robin over the four variants (same process, same weights); the packed kernel groups the batch\'s tokens by adapter and runs one fp32 GEMM pair per adapter and module at the slots\' max rank'],
        },
        { title: 'Cold load of one adapter from disk (LoadAdapter + first acquire until resident)', columns: ['format', 'p50 ms', 'p99 ms', 'samples'], rows: coldRows },
        {
          title: `Effect of cold loads on running requests (8 uniform, concurrency ${s.concurrency}; PEFT adapters loaded from disk back to back during the second run)`,
          columns: ['run', 'cold loads', 'TPOT p50 ms', 'TPOT p99 ms', 'ITL p50 ms', 'ITL p99 ms', 'tokens/s', 'cold load p50 ms'],
          rows: effectRows,
          notes: ['ITL = gap between consecutive token events of a request; a slot write runs on the model worker between steps, so it delays the next step of every running request.'],
        },
      ],
      summary: [
        { metric: `adapters: throughput ratio, 8 distinct adapters vs base (${s.preset} int4, c=${s.concurrency})`, value: String(significant(eight.stats.tokensPerS / eight.base)) },
        { metric: 'adapters: cold load p50 (PEFT dir, ms)', value: String(significant(quantile(cold.peft, 0.5))) },
        {
          metric: 'adapters: running requests\' TPOT p50 / p99 while adapters are cold-loaded back to back (vs without)',
          value: `${significant(busy.tpotP50Ms)} / ${significant(busy.tpotP99Ms)} ms (${significant(quiet.tpotP50Ms)} / ${significant(quiet.tpotP99Ms)} ms)`,
        },
      ],
      data,
    };
  } finally {
    await executor.shutdown();
    fs.rmSync(scratch, { recursive: true, force: true });
  }
}

const adaptersCase: BenchCase = {
  name: 'adapters',
  description: 'multi-adapter throughput (1/8/64 adapters, uniform and Zipf) vs base-only, and adapter cold-load latency',
  run,
};
export default adaptersCase;
