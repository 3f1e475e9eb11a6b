import * as ort from 'onnxruntime-node';
import { join } from 'node:path';
import { TesseraError } from '../../errors.ts';
import type { ExecutorLayout, SequenceWork, StepPlan, StepResult } from '../../engine/executor.ts';
import { readManifest, type ModelManifest } from '../converted-model.ts';
import { GRAPH_IO } from '../graph/graph-io.ts';
import { AdapterSlotStacks, type LoraWeights } from './adapter-slot-stacks.ts';
import { runHostKvBatch, type HostKvState } from './host-kv-batch.ts';
import { openSession, runnerSessionOptions } from './open-session.ts';
import { PackedLoraStacks } from './packed-lora-stacks.ts';
import { PagedKvCache } from './paged-kv-cache.ts';
import { executeStep, type BatchOutput } from './step-batches.ts';
import { needsSingleRowPadding } from './single-row-padding.ts';
import { padSingleLogitsRow, padSingleRow, stepInputs } from './step-inputs.ts';
import { DEFAULT_KV_CACHE_BYTES, type RunnerMemory, type RunnerOptions, type StepRunner } from './step-runner.ts';

export type { Device, RunnerMemory, RunnerOptions } from './step-runner.ts';

/**
 * The host-KV StepRunner (step-runner.ts): the converted model's ORT sessions (the base graph, and the multi-LoRA graph
 * a batch runs on when any of its rows has an adapter), the paged KV cache in host memory and the adapter slot stacks.
 * Runs inside a worker thread because session.run blocks its thread.
 */
export class ModelRunner implements StepRunner {
  readonly kind = 'host-kv';
  readonly layout: ExecutorLayout;
  /** Which multi-LoRA kernel LoRA batches run on (kernels/multi-lora-packed.ts or kernels/multi-lora.ts). */
  readonly loraKernel: 'packed' | 'gather';
  private readonly kvLayers: number[];
  private loraSession: Promise<ort.InferenceSession> | null = null;

  private constructor(
    readonly manifest: ModelManifest,
    private readonly baseSession: ort.InferenceSession,
    /** Opens the multi-LoRA graph: the packed one when `packedLora` is set, else the gather graph. */
    private readonly openLoraSession: () => Promise<ort.InferenceSession>,
    /** The host paged KV cache, the adapter slot stacks and their packed copies (quantized models with the packed LoRA graph). */
    private readonly state: HostKvState,
    /** One-row batches run with a padding row (batch invariance on CPUs whose one-row kernel path differs). */
    readonly padSingleRows: boolean,
  ) {
    this.kvLayers = Array.from({ length: manifest.config.numLayers }, (_, i) => i);
    this.loraKernel = state.packed ? 'packed' : 'gather';
    this.layout = {
      vocabSize: manifest.config.vocabSize,
      maxContextTokens: manifest.config.maxPositionEmbeddings,
      numKvBlocks: state.kv.options.numBlocks,
      blockSizeTokens: state.kv.options.blockSizeTokens,
      numAdapterSlots: state.slots.numSlots,
    };
  }

  static async create(options: RunnerOptions): Promise<ModelRunner> {
    const manifest = readManifest(options.modelDir);
    const config = manifest.config;
    const sessionOptions = { ...runnerSessionOptions(options.device ?? 'cpu', options), ...options.hooks?.sessionOptions };
    const open = (file: string) => {
      const path = join(options.modelDir, file);
      return openSession(path, path, sessionOptions);
    };
    const baseSession = await open(manifest.graphs.base);
    const packed = manifest.graphs.loraPacked !== undefined && (options.packedLora ?? true);
    const openLoraSession = () => open(packed ? manifest.graphs.loraPacked! : manifest.graphs.lora);
    const blockSizeTokens = options.blockSizeTokens ?? 16;
    const kvShape = { numLayers: config.numLayers, numKvHeads: config.numKvHeads, headDim: config.headDim, blockSizeTokens };
    const numBlocks = Math.floor((options.kvCacheBytes ?? DEFAULT_KV_CACHE_BYTES) / PagedKvCache.bytesPerBlock(kvShape));
    if (numBlocks < 1) throw new TesseraError('CONFIG_INVALID', `kvCacheBytes ${options.kvCacheBytes} holds no KV block of ${PagedKvCache.bytesPerBlock(kvShape)} bytes`);
    const kv = new PagedKvCache({ ...kvShape, numBlocks });
    const slots = new AdapterSlotStacks(config, options.numAdapterSlots ?? 8, options.maxAdapterRank ?? 16);
    const padSingleRows = await needsSingleRowPadding(manifest.quant.kind, options.device ?? 'cpu', options.padSingleRows);
    const state = { config, layerStart: 0, kv, slots, packed: packed ? new PackedLoraStacks(config, slots) : null, onRunPhases: options.hooks?.onRunPhases };
    const runner = new ModelRunner(manifest, baseSession, openLoraSession, state, padSingleRows);
    if (!options.loraSessionOnFirstUse) await runner.loraSessionOpened();
    return runner;
  }

  /** The host paged KV cache, for a runner that adds its own graphs over this one (LoopDecodeRunner). */
  get kvCache(): PagedKvCache {
    return this.state.kv;
  }

  /** The adapter slot stacks (fp32, exact layout), for a runner that adds its own graphs over this one. */
  get adapterStacks(): AdapterSlotStacks {
    return this.state.slots;
  }

  memory(): RunnerMemory {
    const { kv, slots, packed } = this.state;
    const packedBytes = packed ? PackedLoraStacks.maxBytes(this.manifest.config, slots.numSlots, slots.maxRank) : 0;
    return { weightsBytes: this.manifest.weightsBytes, kvCacheBytes: kv.totalBytes, adapterSlotBytes: slots.totalBytes + packedBytes };
  }

  loadAdapterSlot(slot: number, weights: LoraWeights): void {
    this.state.slots.write(slot, weights);
  }

  fillAdapterSlot(slot: number, rank: number, scale: number, fill: (stacks: AdapterSlotStacks) => void): void {
    this.state.slots.writeWith(slot, rank, scale, fill);
  }

  clearAdapterSlot(slot: number): void {
    this.state.slots.clear(slot);
  }

  execute(plan: StepPlan): Promise<StepResult> {
    return executeStep(this, plan);
  }

  /**
   * One batch, one session.run: the base graph, or the LoRA graph when a row has an adapter. Single steps only. A batch
   * of one decode row may get a padding row (padSingleRows), which gets no logits and writes no KV, and a step with one
   * logits row computes it twice (padSingleLogitsRow).
   */
  async runBatch(rows: SequenceWork[], decodeSteps: number): Promise<BatchOutput> {
    if (decodeSteps !== 1) throw new TesseraError('INTERNAL', `the host-KV runner runs one decode step per batch. Given: ${decodeSteps}`);
    const batch = this.padSingleRows ? padSingleRow(rows) : rows;
    const session = batch.some((r) => r.adapterSlot !== 0) ? await this.loraSessionOpened() : this.baseSession;
    const inputs = stepInputs(batch);
    const logitsRows = inputs.logitsIndex.length;
    const out = await runHostKvBatch(this.state, session, batch, this.padSingleRows ? padSingleLogitsRow(inputs) : inputs, { kvLayers: this.kvLayers });
    const logits = (out[GRAPH_IO.logits].data as Float32Array).subarray(0, logitsRows * this.layout.vocabSize);
    // Models converted before the graph had the logits_lse output still run; the sampler then computes it.
    const lse = out[GRAPH_IO.logitsLogSumExp];
    return { logits, logSumExp: lse ? (lse.data as Float32Array).subarray(0, logitsRows) : null, sampled: null };
  }

  private loraSessionOpened(): Promise<ort.InferenceSession> {
    this.loraSession ??= this.openLoraSession();
    return this.loraSession;
  }

  async release(): Promise<void> {
    await this.baseSession.release();
    await (await this.loraSession)?.release();
  }
}
