import * as ort from 'onnxruntime-node';
import { join } from 'node:path';
import { statSync } from 'node:fs';
import { TesseraError } from '../errors.ts';
import { readManifest, type ModelManifest } from '../model/converted-model.ts';
import { GRAPH_IO } from '../model/graph/llama-graph.ts';
import { serializeModel } from '../model/graph/onnx-serialize.ts';
import { LORA_TARGETS, loraTargetShape, type ModelConfig } from '../model/model-config.ts';
import { PagedKvCache } from '../model/runner/paged-kv-cache.ts';
import { AdapterSlotStacks, type LoraWeights } from '../model/runner/adapter-slot-stacks.ts';
import { PackedLoraStacks } from '../model/runner/packed-lora-stacks.ts';
import { addPackedLoraFeeds } from '../model/runner/packed-lora-feeds.ts';
import { addGatherLoraFeeds } from '../model/runner/gather-lora-feeds.ts';
import { openSession, runnerSessionOptions } from '../model/runner/open-session.ts';
import type { OnnxGraph } from '../../kernels/onnx-graph.ts';
import { decodeCompeftIntoSlot } from '../adapters/slot-decode-compeft.ts';
import { ConvertedWeights } from './converted-weights.ts';
import { buildStageGraph, localConfig, SEGMENT_IO, stageGraphWeights, TpSegmentBuilder } from './shard-graphs.ts';
import { tpSlices, type TpSlices } from './shard-layout.ts';
import { padSingleRow, stepInputs, type StepInputs } from '../model/runner/step-inputs.ts';
import { needsSingleRowPadding } from '../model/runner/single-row-padding.ts';
import type { RunReply, RunRequest, SegmentRef, ShardMemory, ShardSpec } from './wire.ts';

/** Where one run's time went: building the feeds (step inputs, past KV gather), inside session.run, reading outputs back (KV scatter). */
export interface RunPhasesMs {
  inputsMs: number;
  runMs: number;
  outputsMs: number;
}

/** Opt-in instrumentation for benchmarks (bench/cases/profile.ts); serving passes none and runs unchanged. */
export interface ShardRunnerHooks {
  /** Merged over every session's options, e.g. `{ enableProfiling: true, profileFilePrefix }`. */
  sessionOptions?: ort.InferenceSession.SessionOptions;
  /** Called after each run with its phases. */
  onRunPhases?: (phases: RunPhasesMs) => void;
}

/**
 * One shard of the model inside a worker (thread or remote process): ORT sessions for its stage or its
 * tensor-parallel segments, the KV cache of its layers and KV heads, and its shard of every adapter slot.
 */
export class ShardRunner {
  private readonly sessions = new Map<string, Promise<ort.InferenceSession>>();
  private readonly kv: PagedKvCache;
  private readonly slots: AdapterSlotStacks;
  /** Packed copies of the slots for the packed LoRA graph (whole quantized models read from their files; else null). */
  private readonly packed: PackedLoraStacks | null;
  /** Which multi-LoRA kernel LoRA groups run on (kernels/multi-lora-packed.ts or kernels/multi-lora.ts). */
  readonly loraKernel: 'packed' | 'gather';
  private readonly local: ModelConfig;
  private readonly slices: TpSlices | null;
  private weightsBytes = 0;

  private constructor(
    readonly spec: ShardSpec,
    readonly manifest: ModelManifest,
    private readonly weights: ConvertedWeights | null,
    private readonly sessionOptions: ort.InferenceSession.SessionOptions,
    /** One-row steps run with a padding row (whole-model shards on CPUs whose one-row kernel path differs). */
    readonly padSingleRows: boolean,
    private readonly hooks: ShardRunnerHooks,
  ) {
    const p = spec.position;
    this.slices = p.tpSize > 1 ? tpSlices(manifest.config, p.tpRank, p.tpSize) : null;
    this.local = localConfig(manifest.config, this.slices, p.layerEnd - p.layerStart);
    this.kv = new PagedKvCache({
      numLayers: this.local.numLayers,
      numKvHeads: this.local.numKvHeads,
      headDim: this.local.headDim,
      numBlocks: spec.numKvBlocks,
      blockSizeTokens: spec.blockSizeTokens,
    });
    this.slots = new AdapterSlotStacks(this.local, spec.numAdapterSlots, spec.maxAdapterRank);
    this.packed = !weights && manifest.graphs.loraPacked ? new PackedLoraStacks(this.local, this.slots) : null;
    this.loraKernel = this.packed ? 'packed' : 'gather';
  }

  static async create(spec: ShardSpec, hooks: ShardRunnerHooks = {}): Promise<ShardRunner> {
    const manifest = readManifest(spec.modelDir);
    const sessionOptions = { ...runnerSessionOptions(spec.device ?? 'cpu', spec.intraOpThreads), ...hooks.sessionOptions };
    const p = spec.position;
    const whole = p.tpSize === 1 && p.numStages === 1;
    const weights = whole ? null : new ConvertedWeights(spec.modelDir, manifest);
    // TP/PP shards exchange hidden states shaped by the batch, so padding would have to be the controller's: not done.
    const padSingleRows = whole && (await needsSingleRowPadding(manifest.quant.kind, spec.device ?? 'cpu'));
    const runner = new ShardRunner(spec, manifest, weights, sessionOptions, padSingleRows, hooks);
    await runner.warm();
    return runner;
  }

  memory(): ShardMemory {
    const packedBytes = this.packed ? PackedLoraStacks.maxBytes(this.local, this.slots.numSlots, this.slots.maxRank) : 0;
    return { weightsBytes: this.weightsBytes, kvCacheBytes: this.kv.totalBytes, adapterSlotBytes: this.slots.totalBytes + packedBytes };
  }

  /** Writes this shard's part of an adapter (its layers; S-LoRA split of A or B for its heads / MLP columns). */
  loadAdapterSlot(slot: number, adapter: LoraWeights): void {
    this.slots.write(slot, shardAdapter(adapter, this.manifest.config, this.spec, this.slices));
  }

  /**
   * Decodes a `.cpeft` file into a slot. The whole model decodes straight into its stacks; a shard decodes into a
   * scratch full-size slot first and keeps its part.
   */
  loadCompressedSlot(slot: number, bytes: Uint8Array): void {
    const config = this.manifest.config;
    if (!this.weights) {
      decodeCompeftIntoSlot(bytes, config, slot, (rank, scale, fill) => this.slots.writeWith(slot, rank, scale, fill));
      return;
    }
    const scratch = new AdapterSlotStacks(config, 2, this.slots.maxRank);
    let rank = 0;
    decodeCompeftIntoSlot(bytes, config, 1, (r, scale, fill) => {
      rank = r;
      scratch.writeWith(1, r, scale, fill);
    });
    this.loadAdapterSlot(slot, slotToLora(scratch, config, 1, rank));
  }

  clearAdapterSlot(slot: number): void {
    this.slots.clear(slot);
  }

  async run(request: RunRequest): Promise<RunReply> {
    const started = performance.now();
    // Padding changes the batch, so only a shard that holds the whole model (no hidden states in or out) may pad.
    const req = this.padSingleRows ? { ...request, rows: padSingleRow(request.rows) } : request;
    const inputs = stepInputs(req.rows);
    const useLora = (req.segment.kind === 'stage' || req.segment.kind === 'attention' || req.segment.kind === 'mlp') && req.rows.some((r) => r.adapterSlot !== 0);
    const session = await this.session(req.segment, useLora);
    const feeds: Record<string, ort.Tensor> = {};
    const { batch, stepLength } = inputs;
    const hiddenShape = [batch, stepLength, this.manifest.config.hiddenSize];
    const p = this.spec.position;
    const names = new Set(session.inputNames);
    if (names.has(GRAPH_IO.inputIds)) feeds[GRAPH_IO.inputIds] = new ort.Tensor('int64', inputs.inputIds, [batch, stepLength]);
    if (names.has(GRAPH_IO.hiddenIn)) {
      if (!req.hidden || req.hidden.length !== batch * stepLength * hiddenShape[2]) {
        throw new TesseraError('INTERNAL', `segment ${req.segment.kind} needs hidden [${hiddenShape}], got ${req.hidden?.length ?? 'none'} floats`);
      }
      // ORT does not take views of shared memory: a rank copies the shared residual stream into its own buffer.
      const hidden = req.hidden.buffer instanceof SharedArrayBuffer ? new Float32Array(req.hidden) : req.hidden;
      feeds[GRAPH_IO.hiddenIn] = new ort.Tensor('float32', hidden, hiddenShape);
    }
    if (names.has(GRAPH_IO.positionIds)) feeds[GRAPH_IO.positionIds] = new ort.Tensor('int64', inputs.positionIds, [batch, stepLength]);
    if (names.has(GRAPH_IO.attentionBias)) {
      feeds[GRAPH_IO.attentionBias] = new ort.Tensor('float32', inputs.attentionBias, [batch, 1, stepLength, inputs.pastLength + stepLength]);
    }
    if (names.has(GRAPH_IO.logitsIndex)) feeds[GRAPH_IO.logitsIndex] = new ort.Tensor('int64', inputs.logitsIndex, [inputs.logitsIndex.length]);
    const kvLayers = this.kvLayers(req.segment);
    for (const layer of kvLayers) this.addPast(feeds, layer, inputs);
    if (useLora && this.packed) addPackedLoraFeeds(feeds, this.packed, req.rows.map((r) => r.adapterSlot));
    else if (useLora) {
      const p = this.spec.position;
      addGatherLoraFeeds(feeds, this.slots, this.local, req.rows.map((r) => r.adapterSlot), { layers: { start: p.layerStart, end: p.layerEnd }, inputNames: new Set(session.inputNames) });
    }
    const feedsReady = performance.now();
    const out = await session.run(feeds);
    const ran = performance.now();
    for (const layer of kvLayers) {
      const local = layer - p.layerStart;
      this.kv.scatter(local, inputs.kvRows, stepLength, out[GRAPH_IO.newKey(layer)].data as Float32Array, out[GRAPH_IO.newValue(layer)].data as Float32Array);
    }
    const outputName = session.outputNames.find((n) => n === GRAPH_IO.logits || n === GRAPH_IO.hiddenOut || n === SEGMENT_IO.partial || n === SEGMENT_IO.logitsSlice)!;
    const lse = out[GRAPH_IO.logitsLogSumExp];
    const reply = { output: out[outputName].data as Float32Array, ...(lse ? { logSumExp: lse.data as Float32Array } : {}), runtimeMs: performance.now() - started };
    this.hooks.onRunPhases?.({ inputsMs: feedsReady - started, runMs: ran - feedsReady, outputsMs: performance.now() - ran });
    return reply;
  }

  async release(): Promise<void> {
    for (const s of this.sessions.values()) await (await s).release();
    this.sessions.clear();
    this.weights?.close();
  }

  /** Builds (or opens) every base session up front, so weights are read once and memory is known at ready. */
  private async warm(): Promise<void> {
    const p = this.spec.position;
    if (!this.weights) {
      this.weightsBytes = statSync(join(this.spec.modelDir, this.manifest.weightsFile)).size;
      await this.session({ kind: 'stage', layer: 0 }, false);
      return;
    }
    if (p.tpSize === 1) {
      await this.session({ kind: 'stage', layer: 0 }, false);
      return;
    }
    if (p.stage === 0) await this.session({ kind: 'embed', layer: 0 }, false);
    for (let layer = p.layerStart; layer < p.layerEnd; layer++) {
      await this.session({ kind: 'attention', layer }, false);
      await this.session({ kind: 'mlp', layer }, false);
    }
    if (p.stage === p.numStages - 1) await this.session({ kind: 'head', layer: 0 }, false);
  }

  private tpBuilder: TpSegmentBuilder | null = null;
  private stageWeights: ReturnType<typeof stageGraphWeights> | null = null;
  private readonly stageCounter = { bytes: 0 };

  private session(segment: SegmentRef, lora: boolean): Promise<ort.InferenceSession> {
    const key = `${segment.kind}:${segment.layer}:${lora ? 'lora' : 'base'}`;
    let s = this.sessions.get(key);
    if (!s) {
      s = this.openSession(segment, lora);
      this.sessions.set(key, s);
    }
    return s;
  }

  private async openSession(segment: SegmentRef, lora: boolean): Promise<ort.InferenceSession> {
    const p = this.spec.position;
    const config = this.manifest.config;
    this.checkSegment(segment);
    if (!this.weights) {
      // Quantized models run adapters on the packed LoRA graph (this.packed set), others on the gather graph.
      const graphs = this.manifest.graphs;
      const file = join(this.spec.modelDir, !lora ? graphs.base : this.packed ? graphs.loraPacked! : graphs.lora);
      return this.create(file);
    }
    let graph: OnnxGraph;
    if (p.tpSize === 1) {
      this.stageWeights ??= stageGraphWeights(config, this.weights, this.stageCounter);
      graph = buildStageGraph(config, this.stageWeights, { start: p.layerStart, end: p.layerEnd }, lora);
      this.weightsBytes = this.stageCounter.bytes;
    } else {
      this.tpBuilder ??= new TpSegmentBuilder(config, this.weights, this.slices!, p.tpRank);
      const b = this.tpBuilder;
      graph = segment.kind === 'embed' ? b.embed() : segment.kind === 'head' ? b.head() : segment.kind === 'attention' ? b.attention(segment.layer, lora) : b.mlp(segment.layer, lora);
      this.weightsBytes = b.bytes;
    }
    return this.create(serializeModel(graph, null));
  }

  private create(model: string | Uint8Array): Promise<ort.InferenceSession> {
    return openSession(model, typeof model === 'string' ? model : `${this.spec.modelDir}: a shard graph`, this.sessionOptions);
  }

  private checkSegment(segment: SegmentRef): void {
    const p = this.spec.position;
    const ok =
      p.tpSize === 1
        ? segment.kind === 'stage'
        : segment.kind === 'embed'
          ? p.stage === 0
          : segment.kind === 'head'
            ? p.stage === p.numStages - 1
            : (segment.kind === 'attention' || segment.kind === 'mlp') && segment.layer >= p.layerStart && segment.layer < p.layerEnd;
    if (!ok) throw new TesseraError('INTERNAL', `shard (stage ${p.stage}, rank ${p.tpRank}) has no segment ${segment.kind} ${segment.layer}`);
  }

  /** Layers whose KV cache a segment reads and writes. */
  private kvLayers(segment: SegmentRef): number[] {
    const p = this.spec.position;
    if (segment.kind === 'stage') return Array.from({ length: p.layerEnd - p.layerStart }, (_, i) => p.layerStart + i);
    if (segment.kind === 'attention') return [segment.layer];
    return [];
  }

  private addPast(feeds: Record<string, ort.Tensor>, layer: number, inputs: StepInputs): void {
    const { numKvHeads, headDim } = this.local;
    const { batch, pastLength } = inputs;
    const past = this.kv.past(layer - this.spec.position.layerStart, inputs.kvRows, pastLength, inputs.stepLength === 1 ? 'decode' : 'prefill');
    feeds[GRAPH_IO.pastKey(layer)] = new ort.Tensor('float32', past.keys, [batch, numKvHeads, pastLength, headDim]);
    feeds[GRAPH_IO.pastValue(layer)] = new ort.Tensor('float32', past.values, [batch, numKvHeads, pastLength, headDim]);
  }
}

/** Reads one slot of full-model stacks back into PEFT layout (A [r, in], B [out, r]). */
function slotToLora(stacks: AdapterSlotStacks, config: ModelConfig, slot: number, rank: number): LoraWeights {
  const maxRank = stacks.maxRank;
  const layers: LoraWeights['layers'] = [];
  for (let layer = 0; layer < config.numLayers; layer++) {
    const mods: LoraWeights['layers'][number] = {};
    for (const target of LORA_TARGETS) {
      const [inF, outF] = loraTargetShape(config, target);
      const sa = stacks.stackA(layer, target);
      const sb = stacks.stackB(layer, target);
      const a = new Float32Array(rank * inF);
      const b = new Float32Array(outF * rank);
      for (let i = 0; i < rank; i++) for (let k = 0; k < inF; k++) a[i * inF + k] = sa[slot * inF * maxRank + k * maxRank + i];
      for (let o = 0; o < outF; o++) for (let i = 0; i < rank; i++) b[o * rank + i] = sb[slot * maxRank * outF + i * outF + o];
      mods[target] = { a, b };
    }
    layers.push(mods);
  }
  return { rank, scale: stacks.scales[slot], layers };
}

/**
 * A shard's part of an adapter: its layers, re-indexed from 0; for tensor parallelism, column-parallel targets
 * (q, k, v, gate, up) keep A and the rows of B (PEFT [out, r]) for the rank's outputs, row-parallel targets (o, down)
 * keep the columns of A (PEFT [r, in]) for the rank's inputs and all of B.
 */
export function shardAdapter(adapter: LoraWeights, config: ModelConfig, spec: ShardSpec, slices: TpSlices | null): LoraWeights {
  const p = spec.position;
  const r = adapter.rank;
  const layers: LoraWeights['layers'] = [];
  for (let layer = p.layerStart; layer < p.layerEnd; layer++) {
    const src = adapter.layers[layer] ?? {};
    const dst: LoraWeights['layers'][number] = {};
    for (const target of LORA_TARGETS) {
      const w = src[target];
      if (!w) continue;
      if (!slices) {
        dst[target] = w;
        continue;
      }
      const [inF] = loraTargetShape(config, target);
      const d = config.headDim;
      const outRange =
        target === 'q_proj'
          ? { start: slices.heads.start * d, count: slices.heads.count * d }
          : target === 'k_proj' || target === 'v_proj'
            ? { start: slices.kvHeads.start * d, count: slices.kvHeads.count * d }
            : target === 'gate_proj' || target === 'up_proj'
              ? slices.intermediate
              : null;
      if (outRange) {
        dst[target] = { a: w.a, b: w.b.slice(outRange.start * r, (outRange.start + outRange.count) * r) };
      } else {
        const inRange = target === 'o_proj' ? { start: slices.heads.start * d, count: slices.heads.count * d } : slices.intermediate;
        const a = new Float32Array(r * inRange.count);
        for (let i = 0; i < r; i++) a.set(w.a.subarray(i * inF + inRange.start, i * inF + inRange.start + inRange.count), i * inRange.count);
        dst[target] = { a, b: w.b };
      }
    }
    layers.push(dst);
  }
  return { rank: adapter.rank, scale: adapter.scale, layers };
}
