/**
 * Where a step's time goes: a batch-1 decode step, a batch-16 decode step and a 64-token prefill, int4 and int8, on
 * the runner `tessera serve` uses (WholeModelShardRunner over ModelRunner, whole model), measured from both sides of session.run:
 *   - by phase, around session.run: building the feeds (step inputs, gathering the rows' past KV, tensors), the run,
 *     reading the outputs back (KV scatter), greedy sampling of the rows with the engine's sampler, and the trip through
 *     the worker thread (the same step sent through a ThreadExecutor, minus the worker's own time);
 *   - inside the run, from ONNX Runtime's profiler (`enableProfiling`): kernel time by op type and by node (layer index
 *     folded), and what the run costs outside the kernels (executor, allocation) and outside ORT's Run (the Node
 *     binding: feeds in, outputs copied out).
 * Three runners per variant take every step in turn (rotating order, a short pause after each run): phases without the
 * profiler, the worker-thread trip, and the profiler (whose per-node bookkeeping slows the run, so its times are used
 * for the split by op type only, less its floor per node). Interleaving matters on a shared machine: passes run one
 * after the other differed by 2-3x under the load of other processes. Decode steps repeat the same positions
 * (past = pastTokens), so every timed step does the same work.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { SequenceWork } from '../../src/engine/executor.ts';
import { createPenaltyState } from '../../src/engine/sampler/penalties.ts';
import { createPrng } from '../../src/engine/sampler/prng.ts';
import { createSampler, type SamplingState } from '../../src/engine/sampler/sampler.ts';
import type { ModelPreset } from '../../src/model/checkpoint/make-model.ts';
import { readPeftAdapter } from '../../src/adapters/peft/peft-adapter.ts';
import { writeRandomAdapter } from '../../src/model/checkpoint/make-adapter.ts';
import type { LoraWeights } from '../../src/model/runner/adapter-slot-stacks.ts';
import { PagedKvCache } from '../../src/model/runner/paged-kv-cache.ts';
import { shardPositions } from '../../src/parallel/shard-layout.ts';
import type { RunPhasesMs } from '../../src/model/runner/host-kv-batch.ts';
import { WholeModelShardRunner } from '../../src/parallel/whole-model-shard-runner.ts';
import { ThreadExecutor } from '../../src/parallel/thread-executor.ts';
import type { BenchCase, BenchContext, CaseOutput, Cell, ResultTable } from '../lib/bench-case.ts';
import type { ConvertedBenchModel } from '../lib/bench-models.ts';
import { benchPrompts } from '../lib/model-runs.ts';
import { breakdown, nodeRole, readOrtProfiles, type ProfiledRun, type RunsBreakdown } from '../lib/ort-profile.ts';
import { INT4, INT8, type QuantVariant } from '../lib/quant-variants.ts';
import { median, significant } from '../lib/stats.ts';

const BLOCK_TOKENS = 16;
const MAX_RANK = 16;

interface Settings {
  preset: ModelPreset;
  variants: QuantVariant[];
  pastTokens: number;
  wideBatch: number;
  /** Distinct adapters of the LoRA decode scenario (ranks 8 and 16 alternating; rows take them in turn). */
  adapters: number;
  prefillTokens: number;
  warmupSteps: number;
  timedSteps: { decode: number; prefill: number };
  /** Op types / node roles shown in the tables (the rest summed into one row). */
  topRows: number;
}

const SETTINGS: Record<'quick' | 'full', Settings> = {
  quick: { preset: 'tiny', variants: [INT4, INT8], pastTokens: 64, wideBatch: 16, adapters: 2, prefillTokens: 64, warmupSteps: 2, timedSteps: { decode: 5, prefill: 3 }, topRows: 8 },
  full: { preset: 'small', variants: [INT4, INT8], pastTokens: 64, wideBatch: 16, adapters: 8, prefillTokens: 64, warmupSteps: 3, timedSteps: { decode: 20, prefill: 8 }, topRows: 10 },
};

interface Scenario {
  id: string;
  label: string;
  batch: number;
  stepTokens: number;
  /** Positions in the KV cache before the step. */
  pastTokens: number;
  /** Adapters the rows use (row r: slot 1 + r % adapters; 0 = base model only). */
  adapters: number;
}

function scenarios(s: Settings): Scenario[] {
  return [
    { id: 'decode-b1', label: 'decode B=1', batch: 1, stepTokens: 1, pastTokens: s.pastTokens, adapters: 0 },
    { id: `decode-b${s.wideBatch}`, label: `decode B=${s.wideBatch}`, batch: s.wideBatch, stepTokens: 1, pastTokens: s.pastTokens, adapters: 0 },
    { id: `decode-b${s.wideBatch}-lora${s.adapters}`, label: `decode B=${s.wideBatch}, ${s.adapters} adapters`, batch: s.wideBatch, stepTokens: 1, pastTokens: s.pastTokens, adapters: s.adapters },
    { id: `prefill-${s.prefillTokens}`, label: `prefill ${s.prefillTokens}`, batch: 1, stepTokens: s.prefillTokens, pastTokens: 0, adapters: 0 },
  ];
}

/** What one scenario's steps need: the set-up step (fills the decode rows' KV), and the step repeated. */
interface ScenarioSteps {
  setup: SequenceWork[] | null;
  step: () => SequenceWork[];
}

/** Rows of a scenario; each row owns blocks [row * perRow, (row + 1) * perRow); prefill rows take fresh sequence ids. */
function scenarioSteps(sc: Scenario, prompts: number[][], perRowBlocks: number, nextSeqId: () => number): ScenarioSteps {
  const blocks = (row: number) => Array.from({ length: perRowBlocks }, (_, j) => row * perRowBlocks + j);
  const adapterSlot = (r: number) => (sc.adapters > 0 ? 1 + (r % sc.adapters) : 0);
  const row = (r: number, seqId: number, tokenIds: number[], startPosition: number): SequenceWork => ({ seqId, tokenIds, startPosition, blockTable: blocks(r), adapterSlot: adapterSlot(r), sampleNext: true });
  if (sc.pastTokens === 0) return { setup: null, step: () => Array.from({ length: sc.batch }, (_, r) => row(r, nextSeqId(), prompts[r].slice(0, sc.stepTokens), 0)) };
  const ids = Array.from({ length: sc.batch }, () => nextSeqId());
  return {
    setup: ids.map((id, r) => row(r, id, prompts[r].slice(0, sc.pastTokens), 0)),
    step: () => ids.map((id, r) => row(r, id, [prompts[r][sc.pastTokens]], sc.pastTokens)),
  };
}

interface PhaseSample extends RunPhasesMs {
  samplingMs: number;
}

interface ScenarioMeasurement {
  scenario: Scenario;
  /** In-process runner, no profiler: one entry per timed step. */
  phases: PhaseSample[];
  /** Through the worker thread: executor.execute wall time and the worker's own time per timed step. */
  threadStepMs: number[];
  threadWorkerMs: number[];
  /** Subtracted from every profiled node's time (profilerFloorUs). */
  profilerFloorUs: number;
  /** Profiler pass, per timed step: session.run seen from JS minus ORT's model_run (the binding: feeds in, outputs out). */
  bindingMs: number[];
  byOpType: RunsBreakdown;
  byNode: RunsBreakdown;
}

function greedyStates(rows: number, vocab: number): SamplingState[] {
  const params = { temperature: 0, topK: 0, topP: 1, minP: 0, seed: 1, repetitionPenalty: 1, presencePenalty: 0, frequencyPenalty: 0 };
  return Array.from({ length: rows }, (_, r) => ({ params, prng: createPrng(r + 1), penalties: createPenaltyState(params, [r % vocab]), topNLogprobs: 0 }));
}

class ProfileRun {
  private seqId = 1;
  readonly prompts: number[][];
  readonly perRowBlocks: number;
  readonly numBlocks: number;
  constructor(
    readonly s: Settings,
    readonly model: ConvertedBenchModel,
    /** The LoRA scenario's adapters, for slots 1.. */
    readonly adapters: LoraWeights[],
  ) {
    const longest = Math.max(s.pastTokens + 1, s.prefillTokens);
    this.perRowBlocks = Math.ceil(longest / BLOCK_TOKENS);
    this.numBlocks = s.wideBatch * this.perRowBlocks;
    const vocab = model.manifest.config.vocabSize;
    this.prompts = benchPrompts({ numPrompts: s.wideBatch, lengthTokens: longest, vocabSize: vocab });
  }

  nextSeqId = () => this.seqId++;

  async openRunner(hooks: Parameters<typeof WholeModelShardRunner.create>[1]): Promise<WholeModelShardRunner> {
    const config = this.model.manifest.config;
    const runner = await WholeModelShardRunner.create({ modelDir: this.model.dir, position: shardPositions(config, 1, 1)[0], numKvBlocks: this.numBlocks, blockSizeTokens: BLOCK_TOKENS, numAdapterSlots: this.s.adapters + 1, maxAdapterRank: MAX_RANK, runnerKind: 'host-kv' }, hooks);
    for (const [i, weights] of this.adapters.entries()) runner.loadAdapterSlot(1 + i, weights);
    return runner;
  }

  /** The same adapters in a worker thread's slots. */
  async loadAdapters(executor: ThreadExecutor): Promise<void> {
    for (const [i, weights] of this.adapters.entries()) await executor.loadAdapterSlot(1 + i, weights);
  }

  /** Runs warm-up + timed steps of each scenario on `run`; `onTimed(scenario index, step)` after each timed step. */
  async drive(run: (rows: SequenceWork[]) => Promise<void>, label: (what: 'setup' | 'warmup' | 'timed', scenario: number) => void): Promise<void> {
    const all = scenarios(this.s);
    for (const [i, sc] of all.entries()) {
      const steps = scenarioSteps(sc, this.prompts, this.perRowBlocks, this.nextSeqId);
      if (steps.setup) {
        label('setup', i);
        await run(steps.setup);
      }
      const timed = sc.stepTokens === 1 ? this.s.timedSteps.decode : this.s.timedSteps.prefill;
      for (let k = 0; k < this.s.warmupSteps + timed; k++) {
        label(k < this.s.warmupSteps ? 'warmup' : 'timed', i);
        await run(steps.step());
      }
    }
  }
}

/** Idle time after each measured run, so the ORT thread pool that just ran has stopped spinning before the next one starts. */
const SETTLE_MS = 3;
const settle = () => new Promise<void>((resolve) => setTimeout(resolve, SETTLE_MS));

/**
 * The three measurements of a variant run side by side, step by step, in a rotating order (a shared machine's load
 * then hits all of them alike): the in-process runner without the profiler (phases), the same step through a worker
 * thread, and the in-process runner with ORT's profiler.
 */
async function measureVariant(ctx: BenchContext, s: Settings, variant: QuantVariant): Promise<ScenarioMeasurement[]> {
  const model = await ctx.models.converted(s.preset, variant);
  const config = model.manifest.config;
  const vocab = config.vocabSize;
  const all = scenarios(s);
  const adapterDir = fs.mkdtempSync(path.join(os.tmpdir(), 'tessera-profile-adapters-'));
  const adapters: LoraWeights[] = [];
  try {
    for (let i = 0; i < s.adapters; i++) {
      const dir = path.join(adapterDir, `adapter-${i}`);
      await writeRandomAdapter({ dir, config, rank: i % 2 === 0 ? 8 : MAX_RANK, seed: 1, streamLabel: `profile-${i}`, baseModel: model.manifest.modelId });
      adapters.push(readPeftAdapter(dir, config));
    }
  } finally {
    fs.rmSync(adapterDir, { recursive: true, force: true });
  }
  const p = new ProfileRun(s, model, adapters);
  const sampler = createSampler({ vocabSize: vocab });
  const phases: PhaseSample[][] = all.map(() => []);
  const threadStepMs: number[][] = all.map(() => []);
  const threadWorkerMs: number[][] = all.map(() => []);
  let current: { what: string; scenario: number } = { what: 'setup', scenario: 0 };
  const label = (what: string, scenario: number) => (current = { what, scenario });
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tessera-profile-'));
  const prefix = path.join(dir, 'run');
  const profiledLabels: Array<{ what: string; scenario: number }> = [];
  const profiledRunMs: number[] = [];

  ctx.log(`${variant.id}: opening the in-process runners (one with ORT's profiler) and a worker thread`);
  let lastPhases: RunPhasesMs | null = null;
  const plain = await p.openRunner({ onRunPhases: (ph) => (lastPhases = ph) });
  const profiled = await p.openRunner({ sessionOptions: { enableProfiling: true, profileFilePrefix: prefix }, onRunPhases: (ph) => {
      profiledLabels.push(current);
      profiledRunMs.push(ph.runMs);
    } });
  const bytesPerBlock = PagedKvCache.bytesPerBlock({ numLayers: config.numLayers, numKvHeads: config.numKvHeads, headDim: config.headDim, blockSizeTokens: BLOCK_TOKENS });
  const executor = await ThreadExecutor.start({ modelDir: model.dir, kvCacheBytes: p.numBlocks * bytesPerBlock, blockSizeTokens: BLOCK_TOKENS, numAdapterSlots: s.adapters + 1, maxAdapterRank: MAX_RANK });
  await p.loadAdapters(executor);
  try {
    const runPlain = async (rows: SequenceWork[]) => {
      const reply = await plain.run({ stepId: 0, segment: { kind: 'stage', layer: 0 }, rows, hidden: null });
      const states = greedyStates(rows.length, vocab);
      const t0 = performance.now();
      for (let r = 0; r < rows.length; r++) sampler.sample(reply.output.subarray(r * vocab, (r + 1) * vocab), states[r], reply.logSumExp?.[r]);
      const samplingMs = performance.now() - t0;
      if (current.what === 'timed') phases[current.scenario].push({ ...lastPhases!, samplingMs });
    };
    let stepId = 0;
    const runThread = async (sequences: SequenceWork[]) => {
      const t0 = performance.now();
      const result = await executor.execute({ stepId: stepId++, sequences });
      const wall = performance.now() - t0;
      const failed = result.outcomes.find((o) => o.error !== undefined);
      if (failed) throw new Error(`profile step failed: ${failed.error}`);
      if (current.what === 'timed') {
        threadStepMs[current.scenario].push(wall);
        threadWorkerMs[current.scenario].push(executor.controller.lastTiming!.computeMs);
      }
    };
    const runProfiled = async (rows: SequenceWork[]) => {
      await profiled.run({ stepId: 0, segment: { kind: 'stage', layer: 0 }, rows, hidden: null });
    };
    const order = [runPlain, runThread, runProfiled];
    let k = 0;
    ctx.log(`${variant.id}: ${all.map((sc) => sc.label).join(', ')}`);
    await p.drive(async (rows) => {
      for (let i = 0; i < order.length; i++) {
        await order[(i + k) % order.length](rows);
        await settle();
      }
      k++;
    }, label);
  } finally {
    await executor.shutdown();
    await plain.release();
    await profiled.release(); // ORT writes the profile when the session is released
  }
  try {
    // The base graph's and the LoRA graph's sessions write a profile each: a run is the next one of its graph's list.
    const sessions = readOrtProfiles(prefix);
    const isLora = (runs: ProfiledRun[]) => runs[0].nodes.some((n) => n.name.includes('lora'));
    const lists = { base: sessions.find((r) => !isLora(r)) ?? [], lora: sessions.find(isLora) ?? [] };
    const next = { base: 0, lora: 0 };
    const runs = profiledLabels.map((l) => {
      const graph = all[l.scenario].adapters > 0 ? 'lora' : 'base';
      const run = lists[graph][next[graph]++];
      if (!run) throw new Error(`the ${graph} graph's ORT profile has ${lists[graph].length} runs, more were made`);
      return run;
    });
    if (next.base !== lists.base.length || next.lora !== lists.lora.length) throw new Error(`the ORT profiles have ${lists.base.length} + ${lists.lora.length} runs, ${next.base} + ${next.lora} were made`);
    return all.map((scenario, i) => {
      const timedIndices = runs.map((_, k) => k).filter((k) => profiledLabels[k].what === 'timed' && profiledLabels[k].scenario === i);
      const timed = timedIndices.map((k) => runs[k]);
      const floorUs = profilerFloorUs(timed);
      return {
        scenario,
        phases: phases[i],
        threadStepMs: threadStepMs[i],
        threadWorkerMs: threadWorkerMs[i],
        profilerFloorUs: floorUs,
        bindingMs: timedIndices.map((k) => profiledRunMs[k] - runs[k].durationUs / 1000),
        byOpType: breakdown(timed, (n) => n.opType, floorUs, fastest),
        byNode: breakdown(timed, (n) => nodeRole(n.name), floorUs, fastest),
      };
    });
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * The statistic every time here is reduced with: the fastest of the timed steps. A step does the same work every
 * time, so anything above its fastest run is time the CPU was taken by other processes (these machines are shared
 * by several sessions at once).
 */
function fastest(values: number[]): number {
  return Math.min(...values);
}

/** Ops that move no data (shape bookkeeping): their profiled kernel time is the profiler's own cost per node. */
const METADATA_OPS = new Set(['Shape', 'Reshape', 'Squeeze', 'Unsqueeze', 'Identity']);

/** Median profiled time of a metadata-only node: what the profiler adds to every node's kernel time. */
function profilerFloorUs(runs: ProfiledRun[]): number {
  const times = runs.flatMap((r) => r.nodes.filter((n) => METADATA_OPS.has(n.opType)).map((n) => n.durationUs));
  return times.length > 0 ? median(times) : 0;
}

interface PhaseRow {
  /** Measured: the whole step through the worker thread, and session.run in process (fastest step; load-sensitive). */
  workerStepMs: number;
  sessionRunMs: number;
  /** Rebuilt from parts that are each robust to other processes: the run, and the step around it. */
  runRebuiltMs: number;
  stepRebuiltMs: number;
  transportMs: number;
  inputsMs: number;
  outputsMs: number;
  samplingMs: number;
  /** Sum of kernel times inside the run (profiler, each node at its fastest, less the floor). */
  kernelsMs: number;
  /** Inside model_run, outside the kernels (each gap at its fastest): executor, allocations, profiler bookkeeping. */
  betweenKernelsMs: number;
  /** session.run seen from JS - ORT's model_run: feeds handed over, outputs copied into JS buffers. */
  bindingMs: number;
  nodesPerRun: number;
}

function phaseRow(m: ScenarioMeasurement): PhaseRow {
  const phase = (f: (x: PhaseSample) => number) => fastest(m.phases.map(f));
  const transportMs = fastest(m.threadStepMs.map((t, i) => t - m.threadWorkerMs[i]));
  const inputsMs = phase((x) => x.inputsMs);
  const outputsMs = phase((x) => x.outputsMs);
  const samplingMs = phase((x) => x.samplingMs);
  const bindingMs = fastest(m.bindingMs);
  const runRebuiltMs = m.byOpType.nodesMs + m.byOpType.betweenMs + bindingMs;
  return {
    workerStepMs: fastest(m.threadStepMs),
    sessionRunMs: phase((x) => x.runMs),
    runRebuiltMs,
    stepRebuiltMs: transportMs + inputsMs + runRebuiltMs + outputsMs + samplingMs,
    transportMs,
    inputsMs,
    outputsMs,
    samplingMs,
    kernelsMs: m.byOpType.nodesMs,
    betweenKernelsMs: m.byOpType.betweenMs,
    bindingMs,
    nodesPerRun: m.byOpType.nodesPerRun,
  };
}

/**
 * One column per (variant, scenario): each key's kernel ms per step and its share of the rebuilt run (kernels + between
 * kernels + binding, all robust to other processes), keys that matter most anywhere first; then the rest.
 */
function costTable(title: string, what: 'byOpType' | 'byNode', columns: Array<{ name: string; m: ScenarioMeasurement }>, topRows: number, notes: string[]): ResultTable {
  const runMs = (m: ScenarioMeasurement) => phaseRow(m).runRebuiltMs;
  const share = new Map<string, number>();
  for (const c of columns) for (const cost of c.m[what].costs) share.set(cost.key, Math.max(share.get(cost.key) ?? 0, cost.msPerRun / runMs(c.m)));
  const keys = [...share.entries()].sort((a, b) => b[1] - a[1]).slice(0, topRows).map(([k]) => k);
  const cell = (ms: number, m: ScenarioMeasurement): string => `${significant(ms, 2)} (${significant((100 * ms) / runMs(m), 2)}%)`;
  const rows: Cell[][] = keys.map((key) => [
    key,
    ...columns.map((c) => {
      const cost = c.m[what].costs.find((x) => x.key === key);
      return cost ? cell(cost.msPerRun, c.m) : '-';
    }),
  ]);
  rows.push(['other kernels', ...columns.map((c) => cell(c.m[what].costs.filter((x) => !keys.includes(x.key)).reduce((a, x) => a + x.msPerRun, 0), c.m))]);
  rows.push(['between kernels', ...columns.map((c) => cell(c.m[what].betweenMs, c.m))]);
  rows.push(['binding (feeds in, outputs out)', ...columns.map((c) => cell(phaseRow(c.m).bindingMs, c.m))]);
  rows.push(['run, rebuilt ms', ...columns.map((c) => significant(runMs(c.m), 3))]);
  rows.push(['session.run measured ms', ...columns.map((c) => significant(phaseRow(c.m).sessionRunMs, 3))]);
  rows.push(['profiler floor per node us', ...columns.map((c) => significant(c.m.profilerFloorUs, 2))]);
  rows.push(['nodes per run', ...columns.map((c) => significant(c.m[what].nodesPerRun, 4))]);
  return { title, columns: [what === 'byOpType' ? 'op type' : 'node (layer folded)', ...columns.map((c) => c.name)], rows, notes };
}

async function run(ctx: BenchContext): Promise<CaseOutput> {
  const s = SETTINGS[ctx.mode];
  const measured: Array<{ variant: QuantVariant; scenarios: ScenarioMeasurement[] }> = [];
  for (const variant of s.variants) measured.push({ variant, scenarios: await measureVariant(ctx, s, variant) });

  const phaseRows: Cell[][] = [];
  const data: Record<string, unknown> = {};
  for (const { variant, scenarios: list } of measured) {
    for (const m of list) {
      const r = phaseRow(m);
      const ms = (x: number) => significant(x, 2);
      phaseRows.push([variant.id, m.scenario.label, significant(r.stepRebuiltMs), significant(r.workerStepMs), ms(r.transportMs), ms(r.inputsMs), significant(r.runRebuiltMs), significant(r.sessionRunMs), significant(r.kernelsMs), ms(r.betweenKernelsMs), ms(r.bindingMs), ms(r.outputsMs), ms(r.samplingMs)]);
      data[`${variant.id}/${m.scenario.id}`] = {
        scenario: m.scenario,
        fastest: r,
        phases: m.phases,
        threadStepMs: m.threadStepMs,
        threadWorkerMs: m.threadWorkerMs,
        bindingMs: m.bindingMs,
        profilerFloorUs: m.profilerFloorUs,
        byOpType: m.byOpType,
        byNode: { ...m.byNode, costs: m.byNode.costs.slice(0, 40) },
      };
    }
  }
  const columns = measured.flatMap(({ variant, scenarios: list }) => list.map((m) => ({ name: `${variant.id} ${m.scenario.label}`, m })));
  const steps = `${s.timedSteps.decode} decode / ${s.timedSteps.prefill} prefill steps after ${s.warmupSteps} warm-up steps`;
  const profilerNote = `From ORT's profiler (enableProfiling), ${steps}: each node's kernel time at its fastest over the runs, less the profiler's floor (the median profiled time of a node that moves no data: Shape, Reshape, Squeeze, Unsqueeze, Identity); between kernels = the gaps inside model_run, each at its fastest (includes the profiler's bookkeeping: an upper bound); % = share of the rebuilt run = kernels + between kernels + binding.`;
  const wide = columns.filter((c) => c.m.scenario.batch === s.wideBatch);

  const summary = measured.flatMap(({ variant, scenarios: list }) =>
    list
      .filter((m) => m.scenario.stepTokens === 1)
      .map((m) => {
        const r = phaseRow(m);
        const top = m.byOpType.costs[0];
        const pct = (x: number) => `${significant((100 * x) / r.stepRebuiltMs, 2)}%`;
        return {
          metric: `profile: ${s.preset} ${variant.id} ${m.scenario.label} step, where the time goes`,
          value: `${significant(r.stepRebuiltMs)} ms: kernels ${pct(r.kernelsMs)} (${top.key} ${pct(top.msPerRun)}), between kernels <= ${pct(r.betweenKernelsMs)}, binding ${pct(r.bindingMs)}, feeds + outputs + sampling ${pct(r.inputsMs + r.outputsMs + r.samplingMs)}, thread trip ${pct(r.transportMs)}`,
        };
      }),
  );

  return {
    tables: [
      {
        title: `Step phases, ${s.preset}, past ${s.pastTokens} tokens (ms, each the fastest of ${steps})`,
        columns: ['weights', 'step', 'step, rebuilt', 'step via worker, measured', 'thread trip', 'inputs', 'run, rebuilt', 'session.run, measured', 'ORT kernels', 'between kernels', 'binding', 'outputs', 'sampling'],
        rows: phaseRows,
        notes: [
          'step, rebuilt = thread trip + inputs + run, rebuilt + outputs + sampling; run, rebuilt = ORT kernels + between kernels + binding. Every part is robust to other processes (each the fastest of short intervals); the measured whole step and session.run are not: when the load average in the machine line exceeds the cores, even their fastest steps include time other processes took.',
          'thread trip = executor.execute through a ThreadExecutor (the serving path: controller -> worker thread -> WholeModelShardRunner) minus the worker\'s own time: messaging, structured clone of rows and logits.',
          'inputs / outputs = in-process WholeModelShardRunner.run (a ModelRunner batch) before and after session.run (opt-in hook): building the feeds (step inputs, gathering past K/V into the reused [B, kvHeads, P, D] buffers, tensors) / scattering the new K/V into the paged cache; sampling = the engine\'s sampler, greedy, over the step\'s logits rows.',
          'ORT kernels / between kernels: see the next table; binding = session.run seen from JS minus ORT\'s model_run in the same profiled step: feeds handed to native code, every output copied into a JS buffer.',
        ],
      },
      costTable(`Inside ORT's run by op type, ${s.preset} (ms per step, % of the rebuilt run)`, 'byOpType', columns, s.topRows + 4, [profilerNote]),
      costTable(`Inside ORT's run by node, layer index folded, decode B=${s.wideBatch} (ms per step, % of the rebuilt run)`, 'byNode', wide, s.topRows + 6, [profilerNote, 'A node name with l{N} sums that node over all layers.']),
    ],
    summary,
    data,
    docsPage: 'engine.md',
  };
}

const benchCase: BenchCase = { name: 'profile', description: 'per-op profile of decode B=1, decode B=16 and prefill 64 steps (int4, int8): ORT profiler by op type and node, JS phases around session.run', run };
export default benchCase;
