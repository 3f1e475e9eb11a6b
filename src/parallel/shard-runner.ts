import * as ort from 'onnxruntime-node';
import { TesseraError } from '../errors.ts';
import { readManifest, type ModelManifest } from '../model/converted-model.ts';
import { GRAPH_IO } from '../model/graph/graph-io.ts';
import type { LoraKernel } from '../model/graph/llama-layers.ts';
import { serializeModel } from '../model/graph/onnx-serialize.ts';
import { LORA_TARGETS, loraTargetShape, type ModelConfig } from '../model/model-config.ts';
import { AdapterSlotStacks, type LoraWeights } from '../model/runner/adapter-slot-stacks.ts';
import { runHostKvBatch, type HostKvHooks, type HostKvState } from '../model/runner/host-kv-batch.ts';
import { openSession, runnerSessionOptions } from '../model/runner/open-session.ts';
import { PackedLoraStacks } from '../model/runner/packed-lora-stacks.ts';
import { PagedKvCache } from '../model/runner/paged-kv-cache.ts';
import { stepInputs } from '../model/runner/step-inputs.ts';
import type { OnnxGraph } from '../../kernels/onnx-graph.ts';
import { decodeCompeftIntoSlot } from '../adapters/slot-decode-compeft.ts';
import { ConvertedWeights } from './converted-weights.ts';
import { buildStageGraph, localConfig, SEGMENT_IO, stageGraphWeights, TpSegmentBuilder } from './shard-graphs.ts';
import { tpSlices, type TpSlices } from './shard-layout.ts';
import type { RunReply, RunRequest, SegmentRef, ShardMemory, ShardSpec } from './wire.ts';

/**
 * One shard of a model split over several workers (pipeline stages, tensor-parallel ranks), inside a worker thread or
 * remote process: the graphs of its stage or its tensor-parallel segments, built at load time from the converted
 * weights with the whole model's layer builders, the KV cache of its layers and KV heads, and its shard of every
 * adapter slot. A run is the host-KV batch path of every runner (model/runner/host-kv-batch.ts) on one segment.
 * (A worker holding the whole model hosts a StepRunner instead: whole-model-shard-runner.ts.)
 */
export class ShardRunner {
  private readonly sessions = new Map<string, Promise<ort.InferenceSession>>();
  private readonly state: HostKvState;
  /** Which multi-LoRA kernel LoRA segments run on: the one the converted model chose (packed for quantized models). */
  readonly loraKernel: LoraKernel;
  private readonly slices: TpSlices | null;
  private readonly stage: { weights: ReturnType<typeof stageGraphWeights>; counter: { bytes: number } } | null;
  private readonly tp: TpSegmentBuilder | null;

  private constructor(
    readonly spec: ShardSpec,
    readonly manifest: ModelManifest,
    private readonly weights: ConvertedWeights,
    private readonly sessionOptions: ort.InferenceSession.SessionOptions,
    onRunPhases: HostKvHooks['onRunPhases'],
  ) {
    const p = spec.position;
    const config = manifest.config;
    this.slices = p.tpSize > 1 ? tpSlices(config, p.tpRank, p.tpSize) : null;
    const local = localConfig(config, this.slices, p.layerEnd - p.layerStart);
    const kv = new PagedKvCache({ numLayers: local.numLayers, numKvHeads: local.numKvHeads, headDim: local.headDim, numBlocks: spec.numKvBlocks, blockSizeTokens: spec.blockSizeTokens });
    const slots = new AdapterSlotStacks(local, spec.numAdapterSlots, spec.maxAdapterRank);
    this.loraKernel = manifest.graphs.loraPacked !== undefined ? 'packed' : 'gather';
    this.state = { config: local, layerStart: p.layerStart, kv, slots, packed: this.loraKernel === 'packed' ? new PackedLoraStacks(local, slots) : null, onRunPhases };
    if (this.slices) {
      this.stage = null;
      this.tp = new TpSegmentBuilder(config, weights, this.slices, p.tpRank, this.loraKernel);
    } else {
      const counter = { bytes: 0 };
      this.stage = { weights: stageGraphWeights(config, weights, counter), counter };
      this.tp = null;
    }
  }

  /** `hooks`: in-process instrumentation of the host-KV batch path for benchmarks; serving passes none. */
  static async create(spec: ShardSpec, hooks: HostKvHooks = {}): Promise<ShardRunner> {
    const p = spec.position;
    if (p.tpSize === 1 && p.numStages === 1) throw new TesseraError('INTERNAL', 'a worker holding the whole model hosts a StepRunner (WholeModelShardRunner), not a ShardRunner');
    if (spec.runnerKind !== 'host-kv') throw new TesseraError('CONFIG_INVALID', `a model split over several workers runs host-kv shards, not ${spec.runnerKind}`);
    const manifest = readManifest(spec.modelDir);
    const sessionOptions = { ...runnerSessionOptions(spec.device ?? 'cpu', spec), ...hooks.sessionOptions };
    const runner = new ShardRunner(spec, manifest, new ConvertedWeights(spec.modelDir, manifest), sessionOptions, hooks.onRunPhases);
    await runner.warm();
    return runner;
  }

  memory(): ShardMemory {
    const { kv, slots, packed, config } = this.state;
    const packedBytes = packed ? PackedLoraStacks.maxBytes(config, slots.numSlots, slots.maxRank) : 0;
    return { weightsBytes: this.stage?.counter.bytes ?? this.tp!.bytes, kvCacheBytes: kv.totalBytes, adapterSlotBytes: slots.totalBytes + packedBytes };
  }

  /** Writes this shard's part of an adapter (its layers; S-LoRA split of A or B for its heads / MLP columns). */
  loadAdapterSlot(slot: number, adapter: LoraWeights): void {
    this.state.slots.write(slot, shardAdapter(adapter, this.manifest.config, this.spec, this.slices));
  }

  /** Decodes a `.cpeft` file into a scratch full-size slot, then keeps this shard's part of it. */
  loadCompressedSlot(slot: number, bytes: Uint8Array): void {
    const config = this.manifest.config;
    const scratch = new AdapterSlotStacks(config, 2, this.state.slots.maxRank);
    let rank = 0;
    decodeCompeftIntoSlot(bytes, config, 1, (r, scale, fill) => {
      rank = r;
      scratch.writeWith(1, r, scale, fill);
    });
    this.loadAdapterSlot(slot, slotToLora(scratch, config, 1, rank));
  }

  clearAdapterSlot(slot: number): void {
    this.state.slots.clear(slot);
  }

  /** One segment over one batch: the stage's layers, or one TP piece (embed, attention l, mlp l, head). */
  async run(req: RunRequest): Promise<RunReply> {
    const started = performance.now();
    const { segment } = req;
    const useLora = (segment.kind === 'stage' || segment.kind === 'attention' || segment.kind === 'mlp') && req.rows.some((r) => r.adapterSlot !== 0);
    const session = await this.session(segment, useLora);
    const out = await runHostKvBatch(this.state, session, req.rows, stepInputs(req.rows), { kvLayers: this.kvLayers(segment), hidden: req.hidden });
    const outputName = session.outputNames.find((n) => n === GRAPH_IO.logits || n === GRAPH_IO.hiddenOut || n === SEGMENT_IO.partial || n === SEGMENT_IO.logitsSlice)!;
    const lse = out[GRAPH_IO.logitsLogSumExp];
    return { output: out[outputName].data as Float32Array, ...(lse ? { logSumExp: lse.data as Float32Array } : {}), runtimeMs: performance.now() - started };
  }

  async release(): Promise<void> {
    for (const s of this.sessions.values()) await (await s).release();
    this.sessions.clear();
    this.weights.close();
  }

  /** Builds every base session up front, so weights are read once and memory is known at ready. */
  private async warm(): Promise<void> {
    const p = this.spec.position;
    if (!this.tp) {
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
    this.checkSegment(segment);
    let graph: OnnxGraph;
    if (this.stage) {
      graph = buildStageGraph(this.manifest.config, this.stage.weights, { start: p.layerStart, end: p.layerEnd }, lora, this.loraKernel);
    } else {
      const b = this.tp!;
      graph = segment.kind === 'embed' ? b.embed() : segment.kind === 'head' ? b.head() : segment.kind === 'attention' ? b.attention(segment.layer, lora) : b.mlp(segment.layer, lora);
    }
    return openSession(serializeModel(graph, null), `${this.spec.modelDir}: a shard graph`, this.sessionOptions);
  }

  private checkSegment(segment: SegmentRef): void {
    const p = this.spec.position;
    const ok = !this.tp
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
