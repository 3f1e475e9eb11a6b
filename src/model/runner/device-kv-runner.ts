import * as ort from 'onnxruntime-node';
import { TesseraError } from '../../errors.ts';
import type { ExecutorLayout, SequenceWork, StepPlan, StepResult } from '../../engine/executor.ts';
import { pagedKvIndices } from '../../../kernels/paged-kv-device.ts';
import { readManifest, type ModelManifest } from '../converted-model.ts';
import { DEVICE_KV_IO, deviceKvModel, KV_PARTS, slotWriteModel, zerosModel, type KvPart } from '../graph/device-kv-graph.ts';
import { GRAPH_IO } from '../graph/graph-io.ts';
import { LORA_TARGETS, loraTargetShape } from '../model-config.ts';
import { AdapterSlotStacks, type LoraWeights } from './adapter-slot-stacks.ts';
import { openSession, runnerSessionOptions, withExternalWeightsIn } from './open-session.ts';
import { PagedKvCache } from './paged-kv-cache.ts';
import { executeStep, rowResult, type BatchOutput } from './step-batches.ts';
import { graphSampling, stepInputs } from './step-inputs.ts';
import { DEFAULT_KV_CACHE_BYTES, type Device, type RunnerMemory, type RunnerOptions, type StepRunner } from './step-runner.ts';

/**
 * The in-process runner's options. `device` 'webgpu': KV cache and adapter stacks stay in GPU buffers across steps (the
 * point of this runner); 'cpu' / 'cuda': the same graphs with the state returned to the host and fed back every step
 * (correctness reference without a GPU; on CUDA every step would copy the whole cache both ways, see docs/gpu.md).
 * `kvCacheBytes` gets one extra scratch block on top.
 */
export type DeviceKvRunnerOptions = RunnerOptions;

/**
 * The device-KV StepRunner (step-runner.ts): runs engine step plans with all model state on the device: the paged KV cache (same block layout and block ids as
 * the engine hands out, kernels/paged-kv-device.ts) and the LoRA slot stacks are GPU-buffer tensors that each run
 * returns updated and the next run takes as inputs. Per step only token ids, positions, the attention bias, the
 * block/write indices and the adapter slot of each row go to the device, and only the logits rows come back, or, for
 * the rows that carry `loopSampling`, sampled in the graph, only their sampled token id and logprob (the graphs
 * carry the loop's sampler, device-kv-graph.ts; the logits outputs keep only the host-sampled rows). Loading an
 * adapter uploads that adapter alone and writes its slot on the device.
 */
export class DeviceKvRunner implements StepRunner {
  readonly kind = 'device-kv';
  readonly layout: ExecutorLayout;
  readonly numBlocks: number;
  /** Per layer: the KV cache's keys and values on the device (replaced by the present_* outputs of every run). */
  private readonly cache: Record<KvPart, ort.Tensor[]> = { key: [], value: [] };
  private readonly stacks = new Map<string, ort.Tensor>();
  private readonly scales: Float32Array;
  private staging: AdapterSlotStacks | null = null;
  private released = false;

  private constructor(
    readonly manifest: ModelManifest,
    readonly device: Device,
    private readonly sessions: { base: ort.InferenceSession; lora: ort.InferenceSession; slotWrite: ort.InferenceSession; zeros: Map<number, ort.InferenceSession> },
    readonly blockSizeTokens: number,
    numBlocks: number,
    readonly numAdapterSlots: number,
    readonly maxAdapterRank: number,
  ) {
    this.numBlocks = numBlocks;
    this.scales = new Float32Array(numAdapterSlots);
    this.layout = {
      vocabSize: manifest.config.vocabSize,
      maxContextTokens: manifest.config.maxPositionEmbeddings,
      numKvBlocks: numBlocks,
      blockSizeTokens,
      numAdapterSlots,
      samplesInGraph: true,
    };
  }

  static async create(options: DeviceKvRunnerOptions): Promise<DeviceKvRunner> {
    const manifest = readManifest(options.modelDir);
    const config = manifest.config;
    const device = options.device ?? 'webgpu';
    const blockSizeTokens = options.blockSizeTokens ?? 16;
    const numAdapterSlots = options.numAdapterSlots ?? 8;
    const maxAdapterRank = options.maxAdapterRank ?? 16;
    const kvShape = { numLayers: config.numLayers, numKvHeads: config.numKvHeads, headDim: config.headDim, blockSizeTokens };
    const numBlocks = Math.floor((options.kvCacheBytes ?? DEFAULT_KV_CACHE_BYTES) / PagedKvCache.bytesPerBlock(kvShape));
    if (numBlocks < 1) throw new TesseraError('CONFIG_INVALID', `\`kvCacheBytes\` must hold at least one KV block of ${PagedKvCache.bytesPerBlock(kvShape)} bytes. Given: ${options.kvCacheBytes}`);
    if (!Number.isInteger(numAdapterSlots) || numAdapterSlots < 1) throw new TesseraError('CONFIG_INVALID', `\`numAdapterSlots\` must be an integer >= 1. Given: ${numAdapterSlots}`);

    const stateLocation: ort.Tensor.DataLocation = device === 'webgpu' ? 'gpu-buffer' : 'cpu';
    // The rewritten graphs are loaded from memory; their external weights resolve against the model directory.
    const base = withExternalWeightsIn(runnerSessionOptions(device, options), options.modelDir);
    // State outputs stay where the state lives; everything else (logits, their log-sum-exp) comes back to the host.
    const outputLocations = (outputs: string[]) =>
      Object.fromEntries(outputs.map((name) => [name, name.startsWith('present_') ? stateLocation : ('cpu' as const)])) as Record<string, ort.Tensor.DataLocation>;
    const stackDefs = stackShapes(manifest, numAdapterSlots, maxAdapterRank);
    const slotOutputs: Record<string, ort.Tensor.DataLocation> = {};
    for (const s of stackDefs) slotOutputs[DEVICE_KV_IO.stackOut(s.name)] = stateLocation;

    const open = (what: string, bytes: Uint8Array, extra: ort.InferenceSession.SessionOptions) =>
      openSession(bytes, `${options.modelDir}: the ${what} graph`, { ...base, ...extra });
    const model = (file: string, what: string) => {
      const rewritten = deviceKvModel(options.modelDir, file, config, blockSizeTokens, { sampling: true });
      return open(what, rewritten.bytes, { graphOptimizationLevel: 'all', preferredOutputLocation: outputLocations(rewritten.outputs) });
    };
    const sessions = {
      base: await model(manifest.graphs.base, 'base'),
      lora: await model(manifest.graphs.lora, 'LoRA'),
      slotWrite: await open('slot-write', slotWriteModel(stackDefs), { graphOptimizationLevel: 'all', preferredOutputLocation: slotOutputs }),
      // Optimisations off: constant folding would turn the zeros into one shared initializer.
      zeros: new Map([
        [3, await open('zeros', zerosModel(3), { graphOptimizationLevel: 'disabled', preferredOutputLocation: stateLocation })],
        [4, await open('zeros', zerosModel(4), { graphOptimizationLevel: 'disabled', preferredOutputLocation: stateLocation })],
      ]),
    };
    const runner = new DeviceKvRunner(manifest, device, sessions, blockSizeTokens, numBlocks, numAdapterSlots, maxAdapterRank);
    const cacheDims = [numBlocks + 1, config.numKvHeads, blockSizeTokens, config.headDim];
    for (let layer = 0; layer < config.numLayers; layer++) {
      for (const part of KV_PARTS) runner.cache[part].push(await runner.zeros(cacheDims));
    }
    for (const s of stackDefs) runner.stacks.set(s.name, await runner.zeros(s.dims));
    return runner;
  }

  memory(): RunnerMemory {
    const config = this.manifest.config;
    const kvCacheBytes = 2 * config.numLayers * (this.numBlocks + 1) * config.numKvHeads * this.blockSizeTokens * config.headDim * 4;
    let adapterSlotBytes = 0;
    for (const s of this.stacks.values()) adapterSlotBytes += s.dims.reduce((a, b) => a * b, 4);
    return { weightsBytes: this.manifest.weightsBytes, kvCacheBytes, adapterSlotBytes };
  }

  /** Where each piece of state lives ('gpu-buffer' on WebGPU): tests check nothing fell back to the host. */
  stateLocations(): Set<ort.Tensor.DataLocation> {
    return new Set([...this.cache.key, ...this.cache.value, ...this.stacks.values()].map((t) => t.location));
  }

  /** Uploads one adapter (PEFT layout) and writes it into `slot` on the device. */
  async loadAdapterSlot(slot: number, weights: LoraWeights): Promise<void> {
    this.checkSlot(slot);
    const staging = this.stagingFor(1);
    staging.write(1, weights);
    await this.writeSlot(slot, staging, 1);
    this.scales[slot] = weights.scale;
  }

  /**
   * Fills `slot` through a callback that writes host stacks in place at that slot's offsets (the compressed-adapter
   * decoder's interface, see AdapterSlotStacks.writeWith), then uploads it. The host staging holds slot + 1 slots.
   */
  async fillAdapterSlot(slot: number, rank: number, scale: number, fill: (stacks: AdapterSlotStacks) => void): Promise<void> {
    this.checkSlot(slot);
    const staging = this.stagingFor(slot);
    staging.writeWith(slot, rank, scale, fill);
    await this.writeSlot(slot, staging, slot);
    this.scales[slot] = scale;
  }

  async clearAdapterSlot(slot: number): Promise<void> {
    this.checkSlot(slot);
    this.scales[slot] = 0;
    const staging = this.stagingFor(1);
    staging.clear(1);
    await this.writeSlot(slot, staging, 1);
  }

  /**
   * One step. The sampleNext rows that carry `loopSampling` are sampled in the graph and come back 'sampled' (steps 1);
   * the other sampleNext rows come back as logits.
   */
  execute(plan: StepPlan): Promise<StepResult> {
    if (this.released) throw new TesseraError('INTERNAL', 'DeviceKvRunner.execute after release()');
    return executeStep(this, plan);
  }

  async release(): Promise<void> {
    if (this.released) return;
    this.released = true;
    for (const t of [...this.cache.key, ...this.cache.value, ...this.stacks.values()]) t.dispose();
    for (const s of [this.sessions.base, this.sessions.lora, this.sessions.slotWrite, ...this.sessions.zeros.values()]) await s.release();
  }

  /**
   * One batch, one session.run. Returns the logits (and log-sum-exp) of its 'logits' rows and the tokens of its
   * 'sampled' rows, each in row order.
   */
  async runBatch(rows: SequenceWork[], decodeSteps: number): Promise<BatchOutput> {
    if (this.released) throw new TesseraError('INTERNAL', 'DeviceKvRunner.runBatch after release()');
    if (decodeSteps !== 1) throw new TesseraError('INTERNAL', `DeviceKvRunner runs one decode step per batch (\`decodeSteps\` must be 1). Given: ${decodeSteps}`);
    const { numKvHeads, numLayers } = this.manifest.config;
    const batch = rows.length;
    const stepLength = Math.max(...rows.map((s) => s.tokenIds.length));
    const { blockIndex, numPastBlocks, writeIndex } = pagedKvIndices(
      rows.map((s) => ({ blockTable: s.blockTable, startPosition: s.startPosition, numNewTokens: s.tokenIds.length })),
      { numKvHeads, blockSizeTokens: this.blockSizeTokens, scratchBlock: this.numBlocks, stepLength },
    );
    // The logits index lists the host-sampled rows first: the graph returns the logits of its first `logits_rows` rows only.
    const inputs = stepInputs(rows, numPastBlocks * this.blockSizeTokens);
    const hostRows = rows.filter((s) => rowResult(s) === 'logits');
    const sampledRows = [...hostRows, ...rows.filter((s) => rowResult(s) === 'sampled')];
    const numRows = sampledRows.length;
    // Host-sampled rows feed greedy parameters: the tail still runs for them (ArgMax), its output for them is dropped.
    const sampling = sampledRows.map((s) => (s.loopSampling ? graphSampling(s.loopSampling, this.layout.vocabSize) : { temperature: 0, topK: 0, seed: 0 }));
    const feeds: Record<string, ort.Tensor> = {
      [GRAPH_IO.inputIds]: new ort.Tensor('int64', inputs.inputIds, [batch, stepLength]),
      [GRAPH_IO.positionIds]: new ort.Tensor('int64', inputs.positionIds, [batch, stepLength]),
      [GRAPH_IO.attentionBias]: new ort.Tensor('float32', inputs.attentionBias, [batch, 1, stepLength, inputs.pastLength + stepLength]),
      [GRAPH_IO.logitsIndex]: new ort.Tensor('int64', inputs.logitsIndex, [numRows]),
      [DEVICE_KV_IO.blockIndex]: new ort.Tensor('int64', blockIndex, [batch, numPastBlocks]),
      [DEVICE_KV_IO.writeIndex]: new ort.Tensor('int64', writeIndex, [batch, numKvHeads, stepLength, 3]),
      [DEVICE_KV_IO.sampleTemperature]: new ort.Tensor('float32', Float32Array.from(sampling, (p) => p.temperature), [numRows]),
      [DEVICE_KV_IO.sampleTopK]: new ort.Tensor('int64', BigInt64Array.from(sampling, (p) => BigInt(p.topK)), [numRows]),
      [DEVICE_KV_IO.sampleSeed]: new ort.Tensor('int64', BigInt64Array.from(sampling, (p) => BigInt(p.seed)), [numRows]),
      // The sampled token's own position: the stream the k-step loop uses for the same token (decode-loop-graph.ts).
      [DEVICE_KV_IO.samplePosition]: new ort.Tensor('int64', BigInt64Array.from(sampledRows, (s) => BigInt(s.startPosition + s.tokenIds.length)), [numRows]),
      [DEVICE_KV_IO.sampleAny]: new ort.Tensor('bool', Uint8Array.of(sampling.some((p) => p.temperature > 0) ? 1 : 0), []),
      // Rows sampled in the graph cut the logits outputs short: none of their [V] logits rows crosses back.
      [DEVICE_KV_IO.logitsRows]: new ort.Tensor('int64', BigInt64Array.of(BigInt(hostRows.length)), [1]),
    };
    for (const part of KV_PARTS) for (let layer = 0; layer < numLayers; layer++) feeds[DEVICE_KV_IO.cache(part, layer)] = this.cache[part][layer];
    const useLora = rows.some((s) => s.adapterSlot !== 0);
    if (useLora) {
      feeds[GRAPH_IO.loraSlot] = new ort.Tensor('int64', BigInt64Array.from(rows, (s) => BigInt(s.adapterSlot)), [batch]);
      feeds[GRAPH_IO.loraScale] = new ort.Tensor('float32', Float32Array.from(rows, (s) => this.scales[s.adapterSlot]), [batch, 1, 1]);
      for (const [name, tensor] of this.stacks) feeds[name] = tensor;
    }
    const out = await (useLora ? this.sessions.lora : this.sessions.base).run(feeds);
    // Double buffering: the run returned new cache buffers; the ones it read are released now.
    for (const part of KV_PARTS) {
      for (let layer = 0; layer < numLayers; layer++) {
        this.cache[part][layer].dispose();
        this.cache[part][layer] = out[DEVICE_KV_IO.present(part, layer)];
      }
    }
    const lse = out[GRAPH_IO.logitsLogSumExp];
    const numSampled = numRows - hostRows.length;
    const ids = (out[DEVICE_KV_IO.sampledTokenIds].data as BigInt64Array).subarray(hostRows.length);
    return {
      logits: out[GRAPH_IO.logits].data as Float32Array,
      logSumExp: lse ? (lse.data as Float32Array) : null,
      sampled: numSampled === 0 ? null : { steps: 1, tokenIds: Int32Array.from(ids, (id) => Number(id)), logprobs: (out[DEVICE_KV_IO.sampledLogprobs].data as Float32Array).subarray(hostRows.length) },
    };
  }

  private async zeros(dims: number[]): Promise<ort.Tensor> {
    const session = this.sessions.zeros.get(dims.length)!;
    const out = await session.run({ [DEVICE_KV_IO.zerosShape]: new ort.Tensor('int64', BigInt64Array.from(dims, (d) => BigInt(d)), [dims.length]) });
    return out[DEVICE_KV_IO.zeros];
  }

  private stagingFor(slot: number): AdapterSlotStacks {
    if (!this.staging || this.staging.numSlots <= slot) this.staging = new AdapterSlotStacks(this.manifest.config, Math.max(2, slot + 1), this.maxAdapterRank);
    return this.staging;
  }

  /** Writes host staging slot `from` into device slot `slot` of every stack. */
  private async writeSlot(slot: number, staging: AdapterSlotStacks, from: number): Promise<void> {
    const config = this.manifest.config;
    const r = this.maxAdapterRank;
    const feeds: Record<string, ort.Tensor> = { [DEVICE_KV_IO.slot]: new ort.Tensor('int64', BigInt64Array.of(BigInt(slot)), [1, 1]) };
    for (let layer = 0; layer < config.numLayers; layer++) {
      for (const target of LORA_TARGETS) {
        const [inF, outF] = loraTargetShape(config, target);
        const a = GRAPH_IO.loraA(layer, target);
        const b = GRAPH_IO.loraB(layer, target);
        feeds[DEVICE_KV_IO.stackIn(a)] = this.stacks.get(a)!;
        feeds[DEVICE_KV_IO.stackIn(b)] = this.stacks.get(b)!;
        feeds[DEVICE_KV_IO.stackValue(a)] = new ort.Tensor('float32', staging.stackA(layer, target).slice(from * inF * r, (from + 1) * inF * r), [1, inF, r]);
        feeds[DEVICE_KV_IO.stackValue(b)] = new ort.Tensor('float32', staging.stackB(layer, target).slice(from * r * outF, (from + 1) * r * outF), [1, r, outF]);
      }
    }
    const out = await this.sessions.slotWrite.run(feeds);
    for (const [name, old] of this.stacks) {
      old.dispose();
      this.stacks.set(name, out[DEVICE_KV_IO.stackOut(name)]);
    }
  }

  private checkSlot(slot: number): void {
    if (!Number.isInteger(slot) || slot < 1 || slot >= this.numAdapterSlots) {
      throw new TesseraError('INVALID_ARGUMENT', `adapter \`slot\` must be an integer in [1, ${this.numAdapterSlots - 1}]. Given: ${slot}`);
    }
  }
}

/** The LoRA stack inputs of the converted LoRA graph: [numSlots, in, maxRank] for A, [numSlots, maxRank, out] for B. */
function stackShapes(manifest: ModelManifest, numSlots: number, maxRank: number): Array<{ name: string; dims: number[] }> {
  const config = manifest.config;
  const out: Array<{ name: string; dims: number[] }> = [];
  for (let layer = 0; layer < config.numLayers; layer++) {
    for (const target of LORA_TARGETS) {
      const [inF, outF] = loraTargetShape(config, target);
      out.push({ name: GRAPH_IO.loraA(layer, target), dims: [numSlots, inF, maxRank] });
      out.push({ name: GRAPH_IO.loraB(layer, target), dims: [numSlots, maxRank, outF] });
    }
  }
  return out;
}
