import * as ort from 'onnxruntime-node';
import { join } from 'node:path';
import { TesseraError } from '../../errors.ts';
import type { ExecutorLayout, SequenceWork, StepPlan, StepResult } from '../../engine/executor.ts';
import { readManifest, type ModelManifest } from '../converted-model.ts';
import { GRAPH_IO } from '../graph/llama-graph.ts';
import { PagedKvCache } from './paged-kv-cache.ts';
import { checkSequence, padSingleRow, stepInputs } from './step-inputs.ts';
import { needsSingleRowPadding } from './single-row-padding.ts';
import { AdapterSlotStacks, type LoraWeights } from './adapter-slot-stacks.ts';
import { PackedLoraStacks } from './packed-lora-stacks.ts';
import { addPackedLoraFeeds } from './packed-lora-feeds.ts';
import { addGatherLoraFeeds } from './gather-lora-feeds.ts';
import { concatFloat32 } from './concat-float32.ts';
import { openSession, runnerSessionOptions } from './open-session.ts';

export type Device = 'cpu' | 'cuda' | 'webgpu';

export interface RunnerOptions {
  /** A converted model directory (manifest.json). */
  modelDir: string;
  device?: Device;
  /** ORT intra-op threads; default: all cores. */
  intraOpThreads?: number;
  /** Memory for the KV cache, in bytes. */
  kvCacheBytes?: number;
  blockSizeTokens?: number;
  /** Adapter device slots including slot 0 (base model). */
  numAdapterSlots?: number;
  maxAdapterRank?: number;
  /**
   * A quantized model with a packed LoRA graph runs its LoRA groups on it (cheaper on decode batches; default true);
   * false: the per-row gather graph (e.g. as the reference for runners that use that graph).
   */
  packedLora?: boolean;
  /** Pad one-row steps to two rows (see padSingleRow); default: where this CPU's kernels need it (single-row-padding.ts). */
  padSingleRows?: boolean;
}

export interface RunnerMemory {
  weightsBytes: number;
  kvCacheBytes: number;
  /** The fp32 slot stacks, plus the most the packed copies can take (PackedLoraStacks.maxBytes) when they are used. */
  adapterSlotBytes: number;
}

const DEFAULT_KV_CACHE_BYTES = 512 * 1024 * 1024;

/**
 * Runs the converted model for engine step plans: owns the ORT sessions (base graph, and the multi-LoRA graph used when
 * any row of a step has an adapter), the paged KV cache and the adapter slot stacks. Runs inside a worker thread because
 * session.run blocks its thread.
 */
export class ModelRunner {
  readonly layout: ExecutorLayout;
  /** Which multi-LoRA kernel LoRA groups run on (kernels/multi-lora-packed.ts or kernels/multi-lora.ts). */
  readonly loraKernel: 'packed' | 'gather';

  private constructor(
    readonly manifest: ModelManifest,
    private readonly baseSession: ort.InferenceSession,
    /** The multi-LoRA graph: the packed one when `packedLora` is set, else the gather graph. */
    private readonly loraSession: ort.InferenceSession,
    private readonly kv: PagedKvCache,
    private readonly slots: AdapterSlotStacks,
    /** Packed copies of the slots for the packed LoRA graph (quantized models converted with it); null: gather graph. */
    private readonly packedLora: PackedLoraStacks | null,
    /** One-row groups run with a padding row (batch invariance on CPUs whose one-row kernel path differs). */
    readonly padSingleRows: boolean,
  ) {
    this.loraKernel = packedLora ? 'packed' : 'gather';
    this.layout = {
      vocabSize: manifest.config.vocabSize,
      maxContextTokens: manifest.config.maxPositionEmbeddings,
      numKvBlocks: kv.options.numBlocks,
      blockSizeTokens: kv.options.blockSizeTokens,
      numAdapterSlots: slots.numSlots,
    };
  }

  static async create(options: RunnerOptions): Promise<ModelRunner> {
    const manifest = readManifest(options.modelDir);
    const config = manifest.config;
    const sessionOptions = runnerSessionOptions(options.device ?? 'cpu', options.intraOpThreads);
    const open = (file: string) => {
      const path = join(options.modelDir, file);
      return openSession(path, path, sessionOptions);
    };
    const baseSession = await open(manifest.graphs.base);
    const packed = manifest.graphs.loraPacked !== undefined && (options.packedLora ?? true);
    const loraSession = await open(packed ? manifest.graphs.loraPacked! : manifest.graphs.lora);
    const blockSizeTokens = options.blockSizeTokens ?? 16;
    const kvShape = { numLayers: config.numLayers, numKvHeads: config.numKvHeads, headDim: config.headDim, blockSizeTokens };
    const numBlocks = Math.floor((options.kvCacheBytes ?? DEFAULT_KV_CACHE_BYTES) / PagedKvCache.bytesPerBlock(kvShape));
    if (numBlocks < 1) throw new TesseraError('CONFIG_INVALID', `kvCacheBytes ${options.kvCacheBytes} holds no KV block of ${PagedKvCache.bytesPerBlock(kvShape)} bytes`);
    const kv = new PagedKvCache({ ...kvShape, numBlocks });
    const slots = new AdapterSlotStacks(config, options.numAdapterSlots ?? 8, options.maxAdapterRank ?? 16);
    const padSingleRows = await needsSingleRowPadding(manifest.quant.kind, options.device ?? 'cpu', options.padSingleRows);
    return new ModelRunner(manifest, baseSession, loraSession, kv, slots, packed ? new PackedLoraStacks(config, slots) : null, padSingleRows);
  }

  /** The host paged KV cache, for a runner that adds its own graphs over this one (LoopDecodeRunner). */
  get kvCache(): PagedKvCache {
    return this.kv;
  }

  /** The adapter slot stacks (fp32, exact layout), for a runner that adds its own graphs over this one. */
  get adapterStacks(): AdapterSlotStacks {
    return this.slots;
  }

  memory(): RunnerMemory {
    const packedBytes = this.packedLora ? PackedLoraStacks.maxBytes(this.manifest.config, this.slots.numSlots, this.slots.maxRank) : 0;
    return { weightsBytes: this.manifest.weightsBytes, kvCacheBytes: this.kv.totalBytes, adapterSlotBytes: this.slots.totalBytes + packedBytes };
  }

  loadAdapterSlot(slot: number, weights: LoraWeights): void {
    this.slots.write(slot, weights);
  }

  /** Fills a slot in place through `fill` (see AdapterSlotStacks.writeWith). */
  fillAdapterSlot(slot: number, rank: number, scale: number, fill: (stacks: AdapterSlotStacks) => void): void {
    this.slots.writeWith(slot, rank, scale, fill);
  }

  clearAdapterSlot(slot: number): void {
    this.slots.clear(slot);
  }

  /**
   * Runs one step. Decode rows (one token each) and prefill rows run as separate batches, so a long prompt chunk never
   * pads the decode rows to its length.
   */
  async execute(plan: StepPlan): Promise<StepResult> {
    const started = performance.now();
    const outcomes: StepResult['outcomes'] = [];
    const runnable: SequenceWork[] = [];
    for (const seq of plan.sequences) {
      const problem = checkSequence(seq, this.layout);
      if (problem) outcomes.push({ seqId: seq.seqId, logitsRow: -1, error: problem });
      else runnable.push(seq);
    }
    const decode = runnable.filter((s) => s.tokenIds.length === 1);
    const prefill = runnable.filter((s) => s.tokenIds.length > 1);
    const logitsParts: Float32Array[] = [];
    const lseParts: Float32Array[] = [];
    let rows = 0;
    for (const group of [decode, prefill]) {
      if (group.length === 0) continue;
      const { logits, logSumExp, sampled } = await this.runGroup(group);
      logitsParts.push(logits);
      if (logSumExp) lseParts.push(logSumExp);
      let row = 0;
      for (const seq of group) outcomes.push({ seqId: seq.seqId, logitsRow: sampled.has(seq.seqId) ? rows + row++ : -1 });
      rows += row;
    }
    const vocab = this.layout.vocabSize;
    const logits = concatFloat32(logitsParts, rows * vocab);
    const logSumExp = lseParts.length === logitsParts.length ? concatFloat32(lseParts, rows) : undefined;
    return { stepId: plan.stepId, outcomes, logits, ...(logSumExp ? { logSumExp } : {}), vocabSize: vocab, runtimeMs: performance.now() - started };
  }

  async release(): Promise<void> {
    await this.baseSession.release();
    await this.loraSession.release();
  }

  private async runGroup(rows: SequenceWork[]): Promise<{ logits: Float32Array; logSumExp: Float32Array | null; sampled: Set<number> }> {
    const { numKvHeads, headDim, numLayers } = this.manifest.config;
    const group = this.padSingleRows ? padSingleRow(rows) : rows;
    const inputs = stepInputs(group);
    const { batch, stepLength, pastLength, kvRows } = inputs;
    const total = pastLength + stepLength;
    const feeds: Record<string, ort.Tensor> = {
      [GRAPH_IO.inputIds]: new ort.Tensor('int64', inputs.inputIds, [batch, stepLength]),
      [GRAPH_IO.positionIds]: new ort.Tensor('int64', inputs.positionIds, [batch, stepLength]),
      [GRAPH_IO.attentionBias]: new ort.Tensor('float32', inputs.attentionBias, [batch, 1, stepLength, total]),
      [GRAPH_IO.logitsIndex]: new ort.Tensor('int64', inputs.logitsIndex, [inputs.logitsIndex.length]),
    };
    for (let layer = 0; layer < numLayers; layer++) {
      const past = this.kv.past(layer, kvRows, pastLength, stepLength === 1 ? 'decode' : 'prefill');
      feeds[GRAPH_IO.pastKey(layer)] = new ort.Tensor('float32', past.keys, [batch, numKvHeads, pastLength, headDim]);
      feeds[GRAPH_IO.pastValue(layer)] = new ort.Tensor('float32', past.values, [batch, numKvHeads, pastLength, headDim]);
    }

    const useLora = group.some((s) => s.adapterSlot !== 0);
    if (useLora && this.packedLora) addPackedLoraFeeds(feeds, this.packedLora, group.map((s) => s.adapterSlot));
    else if (useLora) addGatherLoraFeeds(feeds, this.slots, this.manifest.config, group.map((s) => s.adapterSlot));
    const session = useLora ? this.loraSession : this.baseSession;
    const out = await session.run(feeds);
    for (let layer = 0; layer < numLayers; layer++) {
      const newK = out[GRAPH_IO.newKey(layer)].data as Float32Array;
      const newV = out[GRAPH_IO.newValue(layer)].data as Float32Array;
      this.kv.scatter(layer, kvRows, stepLength, newK, newV);
    }
    // Models converted before the graph had the logits_lse output still run; the sampler then computes it.
    const lse = out[GRAPH_IO.logitsLogSumExp];
    return { logits: out[GRAPH_IO.logits].data as Float32Array, logSumExp: lse ? (lse.data as Float32Array) : null, sampled: new Set(inputs.sampledSeqIds) };
  }
}
