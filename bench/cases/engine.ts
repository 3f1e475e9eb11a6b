/**
 * Continuous batching vs one-request-at-a-time, side by side in one run, on the same model worker:
 *   (a) the engine with N requests in flight (closed loop at concurrency C): requests join and leave between steps;
 *   (b) the same kind of requests run one after another.
 * Reports total generated tokens/s, TTFT and time per output token (p50/p99), and the engine's own overhead per step
 * (step wall time outside executor.execute: scheduling + sampling + bookkeeping) as a share of step time.
 */
import type { ModelPreset } from '../../src/model/checkpoint/make-model.ts';
import { createEngine } from '../../src/engine/engine.ts';
import type { Executor, StepPlan, StepResult } from '../../src/engine/executor.ts';
import type { ValidGenerateRequest } from '../../src/engine/request.ts';
import { ThreadExecutor } from '../../src/parallel/thread-executor.ts';
import type { BenchCase, BenchContext, CaseOutput, Cell } from '../lib/bench-case.ts';
import { INT4, INT8, type QuantVariant } from '../lib/quant-variants.ts';
import { quantile, significant } from '../lib/stats.ts';
import { ceilingRatio, executorStepCosts, linearStackStepCosts, type StepCosts } from '../lib/batching-ceiling.ts';

interface Settings {
  preset: ModelPreset;
  variants: QuantVariant[];
  promptTokens: number;
  outputTokens: number;
  concurrencies: number[];
  requestsPerConcurrency: (c: number) => number;
  sequentialRequests: number;
  /** Batch size and timed runs of the step-cost measurements behind the ceiling table. */
  ceiling: { batch: number; runs: number };
}

const SETTINGS: Record<'quick' | 'full', Settings> = {
  quick: { preset: 'tiny', variants: [INT4], promptTokens: 16, outputTokens: 8, concurrencies: [1, 4], requestsPerConcurrency: (c) => 2 * c, sequentialRequests: 2, ceiling: { batch: 4, runs: 3 } },
  full: { preset: 'small', variants: [INT4, INT8], promptTokens: 64, outputTokens: 64, concurrencies: [1, 4, 16, 32], requestsPerConcurrency: (c) => Math.max(4, 2 * c), sequentialRequests: 4, ceiling: { batch: 16, runs: 9 } },
};

/** Wraps an executor to add up the wall time the engine spends waiting on it. */
class TimedExecutor implements Executor {
  executeMs = 0;
  steps = 0;
  constructor(private readonly inner: Executor) {}
  get layout() {
    return this.inner.layout;
  }
  async execute(plan: StepPlan): Promise<StepResult> {
    const t0 = performance.now();
    try {
      return await this.inner.execute(plan);
    } finally {
      this.executeMs += performance.now() - t0;
      this.steps++;
    }
  }
  shutdown(): Promise<void> {
    return Promise.resolve();
  }
}

export interface RunStats {
  requests: number;
  generatedTokens: number;
  wallMs: number;
  ttftMs: number[];
  tpotMs: number[];
  steps: number;
  overheadMsPerStep: number;
  stepMs: number;
}

function makeRequest(id: number, promptTokens: number, outputTokens: number, vocab: number): ValidGenerateRequest {
  return {
    requestId: `bench-${id}`,
    promptTokenIds: Array.from({ length: promptTokens }, (_, j) => ((id * 7919 + j * 104729) % (vocab - 1)) + 1),
    adapterId: null,
    tenantId: null,
    sampling: { temperature: 0, topK: 0, topP: 1, minP: 0, seed: null, repetitionPenalty: 1, presencePenalty: 0, frequencyPenalty: 0 },
    stopping: { maxNewTokens: outputTokens, stopSequences: [], stopTokenIds: [], ignoreEos: true },
    topNLogprobs: 0,
    deadlineMs: null,
  };
}

/** Runs `total` requests keeping `concurrency` in flight. concurrency 1 = one after another. */
export async function drive(executor: Executor, s: Pick<Settings, 'promptTokens' | 'outputTokens'>, total: number, concurrency: number): Promise<RunStats> {
  const timed = new TimedExecutor(executor);
  const engine = createEngine({ executor: timed, detokenizer: null, eosTokenIds: [], maxRunningSequences: Math.max(concurrency, 1), maxBatchTokens: 2048, prefillChunkTokens: 512 });
  const ttftMs: number[] = [];
  const tpotMs: number[] = [];
  let generated = 0;
  let next = 0;
  const started = performance.now();
  const worker = async () => {
    while (next < total) {
      const id = next++;
      const submitted = performance.now();
      let first: number | null = null;
      let count = 0;
      for await (const e of engine.submit(makeRequest(id, s.promptTokens, s.outputTokens, executor.layout.vocabSize))) {
        if (e.type === 'tokens' && e.tokens.length > 0) {
          first ??= performance.now();
          count += e.tokens.length;
        } else if (e.type === 'finish' && e.reason !== 'length') throw new Error(`request ${id} finished ${e.reason}: ${e.error?.message}`);
      }
      const done = performance.now();
      ttftMs.push(first! - submitted);
      if (count > 1) tpotMs.push((done - first!) / (count - 1));
      generated += count;
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  const wallMs = performance.now() - started;
  await engine.shutdown();
  return {
    requests: total,
    generatedTokens: generated,
    wallMs,
    ttftMs,
    tpotMs,
    steps: timed.steps,
    overheadMsPerStep: (wallMs - timed.executeMs) / timed.steps,
    stepMs: wallMs / timed.steps,
  };
}

function ceilingRow(variant: QuantVariant, scope: string, c: StepCosts, outputTokens: number): Cell[] {
  return [
    variant.id,
    scope,
    significant(c.prefillMs),
    significant(c.prefillBatchMs / c.batch),
    significant(c.decode1Ms),
    significant(c.decodeBatchMs),
    significant(c.decodeBatchMs / c.decode1Ms),
    significant(ceilingRatio(c, outputTokens)),
  ];
}

async function runVariant(ctx: BenchContext, s: Settings, variant: QuantVariant): Promise<{ rows: Cell[][]; ceilingRows: Cell[][]; data: Record<string, unknown> }> {
  const model = await ctx.models.converted(s.preset, variant);
  const executor = await ThreadExecutor.start({ modelDir: model.dir, kvCacheBytes: 1024 * 1024 * 1024, blockSizeTokens: 16, numAdapterSlots: 1, maxAdapterRank: 8 });
  try {
    ctx.log(`${variant.id}: warm-up`);
    await drive(executor, s, 4, 4);
    const rows: Cell[][] = [];
    const data: Record<string, unknown> = {};
    // Sequential and continuous runs alternate per concurrency, so drift on a shared machine hits both alike.
    for (const c of s.concurrencies) {
      ctx.log(`${variant.id}: sequential (${s.sequentialRequests} requests), then continuous batching at concurrency ${c}`);
      const seq = await drive(executor, s, s.sequentialRequests, 1);
      const cont = await drive(executor, s, s.requestsPerConcurrency(c), c);
      const seqTps = (seq.generatedTokens * 1000) / seq.wallMs;
      const contTps = (cont.generatedTokens * 1000) / cont.wallMs;
      rows.push([
        variant.id,
        c,
        significant(contTps),
        significant(seqTps),
        significant(contTps / seqTps),
        significant(quantile(cont.ttftMs, 0.5)),
        significant(quantile(cont.ttftMs, 0.99)),
        significant(quantile(cont.tpotMs, 0.5)),
        significant(quantile(cont.tpotMs, 0.99)),
        significant(cont.stepMs),
        significant((100 * cont.overheadMsPerStep) / cont.stepMs),
      ]);
      data[`c${c}`] = { continuous: cont, sequential: seq, throughputRatio: contTps / seqTps };
    }
    ctx.log(`${variant.id}: step costs (whole model, then its linear layers alone) at batch 1 and ${s.ceiling.batch}`);
    const costOptions = { batch: s.ceiling.batch, promptTokens: s.promptTokens, runs: s.ceiling.runs };
    const wholeModel = await executorStepCosts(executor, costOptions);
    const linears = await linearStackStepCosts(model.manifest.config, variant, costOptions);
    data.stepCosts = { model: wholeModel, linearLayers: linears, ceilingModel: ceilingRatio(wholeModel, s.outputTokens), ceilingLinearLayers: ceilingRatio(linears, s.outputTokens) };
    const ceilingRows = [ceilingRow(variant, 'whole model step', wholeModel, s.outputTokens), ceilingRow(variant, 'linear layers only', linears, s.outputTokens)];
    return { rows, ceilingRows, data };
  } finally {
    await executor.shutdown();
  }
}

async function run(ctx: BenchContext): Promise<CaseOutput> {
  const s = SETTINGS[ctx.mode];
  const rows: Cell[][] = [];
  const ceilingRows: Cell[][] = [];
  const data: Record<string, Record<string, unknown>> = {};
  for (const variant of s.variants) {
    const r = await runVariant(ctx, s, variant);
    rows.push(...r.rows);
    ceilingRows.push(...r.ceilingRows);
    data[variant.id] = r.data;
  }
  const summary = s.variants.flatMap((v) => {
    const at16 = data[v.id].c16 as { throughputRatio: number; continuous: RunStats } | undefined;
    return at16
      ? [
          { metric: `engine throughput vs sequential at concurrency 16 (${s.preset} ${v.id})`, value: `${significant(at16.throughputRatio)}x (${significant((at16.continuous.generatedTokens * 1000) / at16.continuous.wallMs)} tok/s)` },
          { metric: `engine overhead per step at concurrency 16 (${s.preset} ${v.id})`, value: `${significant((100 * at16.continuous.overheadMsPerStep) / at16.continuous.stepMs)}%` },
        ]
      : [];
  });
  return {
    tables: [
      {
        title: `Continuous batching vs sequential, ${s.preset}, prompt ${s.promptTokens} / output ${s.outputTokens} tokens, greedy`,
        columns: ['weights', 'concurrency', 'engine tok/s', 'sequential tok/s', 'ratio', 'TTFT p50 ms', 'TTFT p99 ms', 'TPOT p50 ms', 'TPOT p99 ms', 'step ms', 'engine overhead %'],
        rows,
        notes: [
          'ratio = engine tok/s / sequential tok/s, both measured in this run on the same model worker (sequential re-measured next to each concurrency).',
          'engine overhead = step wall time outside executor.execute (scheduling, sampling, bookkeeping; thread messaging excluded) / step wall time.',
        ],
      },
      {
        title: `What caps the ratio: step costs and the best ratio they allow (batch ${s.ceiling.batch}, prompt ${s.promptTokens} / output ${s.outputTokens} tokens)`,
        columns: ['weights', 'scope', `prefill ${s.promptTokens} alone ms`, `prefill ${s.promptTokens} in batch ms/request`, 'decode B=1 ms', `decode B=${s.ceiling.batch} ms`, 'decode cost growth', 'ceiling ratio'],
        rows: ceilingRows,
        notes: [
          'ceiling ratio = (prefill alone + output x decode B=1) / (prefill in batch + output x decode B=n / n): the batched / sequential throughput no scheduler can beat with these step costs.',
          '"whole model step" = executor.execute on the same worker as the table above; "linear layers only" = a graph of just the model\'s quantized linears (same shapes and storage, random codes), i.e. the cap the matmul kernels set by themselves.',
        ],
      },
    ],
    summary: summary.length > 0 ? summary : [{ metric: `engine throughput vs sequential at concurrency ${s.concurrencies.at(-1)} (${s.preset})`, value: `${rows.at(-1)?.[4]}x` }],
    data,
  };
}

const benchCase: BenchCase = { name: 'engine', description: 'continuous batching vs sequential: throughput, TTFT, TPOT, engine overhead', run };
export default benchCase;
