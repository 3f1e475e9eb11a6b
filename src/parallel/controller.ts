import { TesseraError } from '../errors.ts';
import type { Executor, ExecutorLayout, SequenceWork, StepPlan, StepResult } from '../engine/executor.ts';
import { readManifest } from '../model/converted-model.ts';
import type { ModelConfig } from '../model/model-config.ts';
import type { LoraWeights } from '../model/runner/adapter-slot-stacks.ts';
import { PagedKvCache } from '../model/runner/paged-kv-cache.ts';
import { resolveRunnerKind } from '../model/runner/runner-kind.ts';
import { gatherStep, splitStep, type BatchOutput } from '../model/runner/step-batches.ts';
import type { RunnerKind, RunnerMemory, RunnerOptions } from '../model/runner/step-runner.ts';
import { shardPositions, tpSlices, type ShardPosition } from './shard-layout.ts';
import { ThreadLink, type ShardLink } from './shard-link.ts';
import type { RunReply, RunRequest, SegmentRef, ShardMemory, ShardSpec, WorkerMessage } from './wire.ts';

/** Opens a link to the worker at `index` (thread: a new thread; remote: a connection to its address). */
export type LinkFactory = (index: number, position: ShardPosition) => Promise<ShardLink>;

export interface ControllerOptions extends RunnerOptions {
  /** Tensor-parallel ranks per stage. */
  tp?: number;
  /** Pipeline stages. */
  pp?: number;
  /** Micro-batches a step's decode (and prefill) rows are split into when pp > 1; default pp. */
  microBatches?: number;
  /** How to reach each worker; default: worker threads. */
  openLink?: LinkFactory;
  /** Model directory as the workers see it (remote hosts); default modelDir. */
  workerModelDir?: string;
  /** A run not answered within this is a hung worker: it is closed and replaced. Default 60 s. */
  callTimeoutMs?: number;
  /** Loading a shard (graph build, session creation). Default 300 s. */
  initTimeoutMs?: number;
  /** Wait between reconnect attempts after a worker went down. Default 200 ms. */
  restartDelayMs?: number;
  /**
   * The runner the whole-model worker hosts (model/runner/runner-kind.ts), resolved once by the caller (`tessera serve`
   * from its config) or, when left out, here from `device`: loop-decode for CUDA, device-kv for WebGPU, else host-kv.
   */
  runnerKind?: RunnerKind;
  /** Called with false when a worker goes down and with true once the whole shard group serves again. */
  onHealth?: (serving: boolean) => void;
}

/** Where the time of one step went, as the controller saw it. */
export interface StepTiming {
  stepId: number;
  totalMs: number;
  /** Sum over all worker runs of the time inside ORT. */
  computeMs: number;
  /** Sum over all worker runs of round trip minus compute: transport, (de)serialisation, queueing. */
  commMs: number;
  /** Controller time summing tensor-parallel partials (host-staged all-reduce) and gathering logits. */
  reduceMs: number;
  numRuns: number;
  /** Per run: worker index, micro-batch, segment and when its compute ran (ms from step start). */
  trace: Array<{ worker: number; microBatch: number; segment: string; startMs: number; endMs: number }>;
}

/** What the runs of one step share. */
interface StepContext {
  started: number;
  timing: StepTiming;
  stepId: number;
  decodeSteps: number;
}

interface Shard {
  index: number;
  position: ShardPosition;
  spec: ShardSpec;
  link: ShardLink | null;
  memory: ShardMemory | null;
  /** What the worker said it can run, beyond single host-sampled steps (its runner's layout). */
  can: Pick<ExecutorLayout, 'maxDecodeStepsPerRun' | 'samplesInGraph'>;
}

/**
 * The engine's Executor over a shard group (EnergonAI-style): the controller owns the plan and hands each worker its
 * sub-model's work; pipeline stages pass the residual stream on, tensor-parallel ranks return partial sums that the
 * controller reduces between segments. With pp > 1 a step's rows go through in micro-batches that are all in
 * flight at once, so stage i runs micro-batch n + 1 while stage i + 1 runs n. World size 1 is one worker, same path.
 */
export class ShardController implements Executor {
  readonly modelId: string;
  private groupLayout: ExecutorLayout;
  lastTiming: StepTiming | null = null;
  private serving = true;
  private recovering: Promise<unknown> | null = null;
  /** Why the last worker went down (for logs). */
  lastDownReason: string | null = null;
  private closed = false;
  /** Host copies of loaded adapters, replayed into a restarted worker. */
  private readonly adapters = new Map<number, { type: 'load-adapter'; slot: number; weights: LoraWeights } | { type: 'load-compressed-adapter'; slot: number; bytes: Uint8Array }>();

  private constructor(
    private readonly config: ModelConfig,
    private readonly shards: Shard[],
    private readonly options: ControllerOptions,
    layout: ExecutorLayout,
    modelId: string,
  ) {
    this.groupLayout = layout;
    this.modelId = modelId;
  }

  /** The KV blocks, slots and model limits of the group; for a whole-model worker, what its runner can run. */
  get layout(): ExecutorLayout {
    return this.groupLayout;
  }

  static async start(options: ControllerOptions): Promise<ShardController> {
    const manifest = readManifest(options.modelDir);
    const config = manifest.config;
    const tp = options.tp ?? 1;
    const pp = options.pp ?? 1;
    const positions = shardPositions(config, tp, pp);
    const blockSizeTokens = options.blockSizeTokens ?? 16;
    const kvBytes = options.kvCacheBytes ?? 512 * 1024 * 1024;
    // kvCacheBytes is per worker; every worker holds every block (for its layers and heads), so the group has as many
    // blocks as its most loaded worker can hold.
    let numKvBlocks = Infinity;
    for (const p of positions) {
      const kvHeads = tp > 1 ? tpSlices(config, p.tpRank, tp).kvHeads.count : config.numKvHeads;
      const perBlock = PagedKvCache.bytesPerBlock({ numLayers: p.layerEnd - p.layerStart, numKvHeads: kvHeads, headDim: config.headDim, blockSizeTokens });
      numKvBlocks = Math.min(numKvBlocks, Math.floor(kvBytes / perBlock));
    }
    if (numKvBlocks < 1) throw new TesseraError('CONFIG_INVALID', `\`kvCacheBytes\` ${kvBytes} holds no KV block on some worker`);
    const runnerKind = resolveRunnerKind({ requested: options.runnerKind, device: options.device, tp, pp, remoteWorkers: options.openLink !== undefined });
    const shards: Shard[] = positions.map((position, index) => ({
      index,
      position,
      link: null,
      memory: null,
      can: {},
      spec: {
        modelDir: options.workerModelDir ?? options.modelDir,
        position,
        numKvBlocks,
        blockSizeTokens,
        numAdapterSlots: options.numAdapterSlots ?? 8,
        maxAdapterRank: options.maxAdapterRank ?? 16,
        device: options.device,
        intraOpThreads: options.intraOpThreads,
        intraOpSpinning: options.intraOpSpinning,
        runnerKind,
        ...(runnerKind === 'loop-decode' ? { maxDecodeStepsPerRun: options.maxDecodeStepsPerRun ?? 64 } : {}),
      },
    }));
    const layout: ExecutorLayout = {
      vocabSize: config.vocabSize,
      maxContextTokens: config.maxPositionEmbeddings,
      numKvBlocks,
      blockSizeTokens,
      numAdapterSlots: options.numAdapterSlots ?? 8,
    };
    const controller = new ShardController(config, shards, options, layout, manifest.modelId);
    // Every connect settles before a failure is reported, so the workers that did accept are shut down (told goodbye,
    // which frees a remote worker's lease at once) rather than left attached; the first failing worker is named.
    const settled = await Promise.allSettled(shards.map((s) => controller.connect(s)));
    const failed = settled.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) {
      await controller.shutdown();
      throw failed.reason;
    }
    // A whole-model worker's runner may run k steps per call or sample in its graph; a split model runs single steps.
    if (shards.length === 1) controller.groupLayout = { ...layout, ...shards[0].can };
    return controller;
  }

  /** Summed over workers. */
  get memory(): RunnerMemory {
    const sum = (f: (m: ShardMemory) => number) => this.shards.reduce((a, s) => a + (s.memory ? f(s.memory) : 0), 0);
    return { weightsBytes: sum((m) => m.weightsBytes), kvCacheBytes: sum((m) => m.kvCacheBytes), adapterSlotBytes: sum((m) => m.adapterSlotBytes) };
  }

  /** Each worker's position and bytes. */
  workerMemory(): Array<{ position: ShardPosition; memory: ShardMemory | null }> {
    return this.shards.map((s) => ({ position: s.position, memory: s.memory }));
  }

  get isServing(): boolean {
    return this.serving && !this.closed;
  }

  /** The worker links, for tests that break one. */
  links(): Array<ShardLink | null> {
    return this.shards.map((s) => s.link);
  }

  /** Resolves when the whole group serves again (immediately when it does). */
  async whenServing(): Promise<void> {
    while (this.recovering && !this.closed) await this.recovering;
  }

  /**
   * One step: split into batches (step-batches.ts; with pp > 1 each cut into micro-batches, all in flight at once so
   * stage i runs micro-batch n + 1 while stage i + 1 runs n), each run through the shard group, gathered into outcomes.
   */
  async execute(plan: StepPlan): Promise<StepResult> {
    this.checkServing();
    const started = performance.now();
    const timing: StepTiming = { stepId: plan.stepId, totalMs: 0, computeMs: 0, commMs: 0, reduceMs: 0, numRuns: 0, trace: [] };
    const pp = this.options.pp ?? 1;
    const split = splitStep(plan, this.layout, pp > 1 ? (this.options.microBatches ?? pp) : 1);
    const ctx = { started, timing, stepId: plan.stepId, decodeSteps: split.decodeSteps };
    const outputs = await Promise.all(split.batches.map((rows, m) => this.runBatch(rows, m, ctx)));
    timing.totalMs = performance.now() - started;
    this.lastTiming = timing;
    return gatherStep(plan, split, outputs, this.config.vocabSize, timing.totalMs);
  }

  async loadAdapterSlot(slot: number, weights: LoraWeights): Promise<void> {
    this.checkServing();
    const msg = { type: 'load-adapter', slot, weights } as const;
    this.adapters.delete(slot);
    await Promise.all(this.shards.map((s) => this.expectDone(s, msg)));
    this.adapters.set(slot, msg);
  }

  /** Sends a `.cpeft` file's bytes to every worker; each decodes its own shard of it. */
  async loadCompressedSlot(slot: number, bytes: Uint8Array): Promise<void> {
    this.checkServing();
    const msg = { type: 'load-compressed-adapter', slot, bytes: bytes.slice() } as const;
    this.adapters.delete(slot);
    await Promise.all(this.shards.map((s) => this.expectDone(s, msg)));
    this.adapters.set(slot, msg);
  }

  async clearAdapterSlot(slot: number): Promise<void> {
    this.checkServing();
    await Promise.all(this.shards.map((s) => this.expectDone(s, { type: 'clear-adapter', slot })));
    this.adapters.delete(slot);
  }

  async shutdown(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await Promise.all(
      this.shards.map(async (s) => {
        const link = s.link;
        s.link = null;
        if (!link) return;
        try {
          await link.call({ type: 'shutdown' }, { timeoutMs: 5000 });
        } catch {
          // already gone
        }
        await link.close();
      }),
    );
  }

  private checkServing(): void {
    if (this.closed) throw new TesseraError('WORKER_UNAVAILABLE', 'the shard group is shut down');
    if (!this.serving) throw new TesseraError('WORKER_UNAVAILABLE', 'a shard worker is restarting; retry shortly');
  }

  /** One batch through the group: the stages in turn (tp = 1), or per layer the TP segments with the partials reduced here. */
  private async runBatch(rows: SequenceWork[], microBatch: number, ctx: StepContext): Promise<BatchOutput> {
    const { tp, pp } = { tp: this.options.tp ?? 1, pp: this.options.pp ?? 1 };
    const run = (shard: Shard, segment: SegmentRef, hidden: Float32Array | null) =>
      this.run(shard, { stepId: ctx.stepId, segment, rows, hidden, ...(ctx.decodeSteps > 1 ? { decodeSteps: ctx.decodeSteps } : {}) }, microBatch, ctx);
    if (tp === 1) {
      let reply: RunReply | null = null;
      for (let stage = 0; stage < pp; stage++) reply = await run(this.shards[stage], { kind: 'stage', layer: 0 }, reply?.output ?? null);
      return { logits: reply!.output, logSumExp: reply!.logSumExp ?? null, sampled: reply!.sampledTokens ?? null };
    }
    const rank = (stage: number) => this.shards.slice(stage * tp, (stage + 1) * tp);
    // All-reduce staged through the controller: h = sum of partials (embedding) or h += sum of partials.
    const reduce = async (shards: Shard[], segment: SegmentRef, h: Float32Array | null): Promise<Float32Array> => {
      const shared = h ? toShared(h) : null;
      const parts = await Promise.all(shards.map((s) => run(s, segment, shared)));
      const t0 = performance.now();
      const out = h ? Float32Array.from(h) : new Float32Array(parts[0].output.length);
      for (const p of parts) for (let i = 0; i < out.length; i++) out[i] += p.output[i];
      ctx.timing.reduceMs += performance.now() - t0;
      return out;
    };
    let h: Float32Array | null = null;
    for (let stage = 0; stage < pp; stage++) {
      const shards = rank(stage);
      const p = shards[0].position;
      if (stage === 0) h = await reduce(shards, { kind: 'embed', layer: 0 }, null);
      for (let layer = p.layerStart; layer < p.layerEnd; layer++) {
        h = await reduce(shards, { kind: 'attention', layer }, h);
        h = await reduce(shards, { kind: 'mlp', layer }, h);
      }
    }
    // LM head: each last-stage rank returns its vocab slice of every logits row and that slice's log-sum-exp.
    const last = rank(pp - 1);
    const shared = toShared(h!);
    const slices = await Promise.all(last.map((s) => run(s, { kind: 'head', layer: 0 }, shared)));
    const t0 = performance.now();
    const output = gatherVocabSlices(slices, last.map((s) => tpSlices(this.config, s.position.tpRank, tp).vocab), this.config.vocabSize);
    ctx.timing.reduceMs += performance.now() - t0;
    return output;
  }

  private async run(shard: Shard, request: RunRequest, microBatch: number, ctx: StepContext): Promise<RunReply> {
    const link = shard.link;
    if (!link) throw new TesseraError('WORKER_UNAVAILABLE', `shard worker ${shard.index} is restarting`);
    const sent = performance.now();
    const msg = await link.call({ type: 'run', run: request }, { timeoutMs: this.options.callTimeoutMs ?? 60_000 });
    if (msg.type !== 'result') throw new TesseraError('INTERNAL', `unexpected worker reply ${msg.type}`);
    const received = performance.now();
    const reply = msg.reply;
    const t = ctx.timing;
    t.numRuns++;
    t.computeMs += reply.runtimeMs;
    t.commMs += Math.max(0, received - sent - reply.runtimeMs);
    const segment = request.segment.kind === 'attention' || request.segment.kind === 'mlp' ? `${request.segment.kind}${request.segment.layer}` : request.segment.kind;
    t.trace.push({ worker: shard.index, microBatch, segment, startMs: received - reply.runtimeMs - ctx.started, endMs: received - ctx.started });
    return reply;
  }

  private async expectDone(
    shard: Shard,
    msg: { type: 'load-adapter'; slot: number; weights: LoraWeights } | { type: 'load-compressed-adapter'; slot: number; bytes: Uint8Array } | { type: 'clear-adapter'; slot: number },
  ): Promise<void> {
    if (!shard.link) throw new TesseraError('WORKER_UNAVAILABLE', `shard worker ${shard.index} is restarting`);
    const reply = await shard.link.call(msg, { timeoutMs: this.options.callTimeoutMs ?? 60_000 });
    if (reply.type !== 'done') throw new TesseraError('INTERNAL', `unexpected worker reply ${reply.type}`);
  }

  /** Opens the shard's link, loads its model part and replays loaded adapters. */
  private async connect(shard: Shard): Promise<void> {
    const open = this.options.openLink ?? (async (index: number) => ThreadLink.open(`thread-${index}`));
    const link = await open(shard.index, shard.position);
    let ready: WorkerMessage;
    try {
      ready = await link.call({ type: 'init', spec: shard.spec }, { timeoutMs: this.options.initTimeoutMs ?? 300_000 });
      if (ready.type !== 'ready') throw new TesseraError('INTERNAL', `unexpected first worker reply ${ready.type}`);
      for (const msg of this.adapters.values()) {
        const r = await link.call(msg, { timeoutMs: this.options.callTimeoutMs ?? 60_000 });
        if (r.type !== 'done') throw new TesseraError('INTERNAL', `unexpected worker reply ${r.type}`);
      }
    } catch (err) {
      await link.close();
      throw err;
    }
    shard.memory = ready.memory;
    shard.can = {
      ...(ready.layout.maxDecodeStepsPerRun !== undefined ? { maxDecodeStepsPerRun: ready.layout.maxDecodeStepsPerRun } : {}),
      ...(ready.layout.samplesInGraph === true ? { samplesInGraph: true } : {}),
    };
    shard.link = link;
    link.onDown((reason) => this.workerDown(shard, link, reason));
  }

  private workerDown(shard: Shard, link: ShardLink, reason: string): void {
    if (this.closed || shard.link !== link) return;
    shard.link = null;
    this.lastDownReason = reason;
    void link.close();
    if (this.serving) {
      this.serving = false;
      this.options.onHealth?.(false);
    }
    const recover = (async () => {
      while (!this.closed && !shard.link) {
        try {
          await this.connect(shard);
        } catch {
          await new Promise((r) => setTimeout(r, this.options.restartDelayMs ?? 200));
        }
      }
    })();
    this.recovering = Promise.all([this.recovering, recover]).then(() => {
      if (this.closed || !this.shards.every((s) => s.link)) return;
      this.recovering = null;
      if (!this.serving) {
        this.serving = true;
        this.options.onHealth?.(true);
      }
    });
  }
}

/** The residual stream in shared memory, so every rank of a stage reads the same bytes without a copy per rank. */
function toShared(h: Float32Array): Float32Array {
  if (h.buffer instanceof SharedArrayBuffer) return h;
  const shared = new Float32Array(new SharedArrayBuffer(h.byteLength));
  shared.set(h);
  return shared;
}

/**
 * The LM head's all-gather: each rank's logits [rows, its vocab slice] side by side into [rows, vocab], and the rows'
 * log-sum-exp from the slices' (log sum_r exp(lse_r)), when every rank computed it.
 */
function gatherVocabSlices(slices: RunReply[], ranges: Array<{ start: number; count: number }>, vocabSize: number): BatchOutput {
  const rows = slices[0].output.length / ranges[0].count;
  const logits = new Float32Array(rows * vocabSize);
  slices.forEach((slice, r) => {
    const v = ranges[r];
    for (let row = 0; row < rows; row++) logits.set(slice.output.subarray(row * v.count, (row + 1) * v.count), row * vocabSize + v.start);
  });
  if (!slices.every((s) => s.logSumExp?.length === rows)) return { logits, logSumExp: null, sampled: null };
  const logSumExp = new Float32Array(rows);
  for (let row = 0; row < rows; row++) {
    let max = -Infinity;
    for (const s of slices) max = Math.max(max, s.logSumExp![row]);
    let sum = 0;
    for (const s of slices) sum += Math.exp(s.logSumExp![row] - max);
    logSumExp[row] = Number.isFinite(max) ? max + Math.log(sum) : max;
  }
  return { logits, logSumExp, sampled: null };
}
