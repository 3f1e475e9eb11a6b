import * as ort from 'onnxruntime-node';
import { join } from 'node:path';
import { TesseraError } from '../../errors.ts';
import type { ExecutorLayout, LoopSampling, SequenceWork, StepPlan, StepResult } from '../../engine/executor.ts';
import { readManifest, type ModelManifest } from '../converted-model.ts';
import { GRAPH_IO } from '../graph/llama-graph.ts';
import { LORA_TARGETS, loraTargetShape } from '../model-config.ts';
import { AdapterSlotStacks, type LoraWeights } from './adapter-slot-stacks.ts';
import { concatFloat32 } from './concat-float32.ts';
import { DECODE_LOOP_IO, decodeLoopModel } from './decode-loop-graph.ts';
import type { RunnerMemory, RunnerOptions } from './model-runner.ts';
import { PagedKvCache, type KvRow } from './paged-kv-cache.ts';
import { checkSequence, PAST_ALIGN_TOKENS, stepInputs } from './step-inputs.ts';

export interface LoopDecodeRunnerOptions extends RunnerOptions {
  /** Largest number of decode steps one run may take (StepPlan.decodeSteps). Default 64. */
  maxDecodeStepsPerRun?: number;
}

/** One row of a k-step decode: the token it feeds first, its cache and how it samples. */
export interface LoopRow {
  seqId: number;
  tokenId: number;
  startPosition: number;
  /** Covers positions [0, startPosition + k). */
  blockTable: number[];
  adapterSlot: number;
  sampling: LoopSampling;
}

/** Tokens of a k-step decode, [rows, k] row-major. */
export interface LoopTokens {
  steps: number;
  tokenIds: Int32Array;
  logprobs: Float32Array;
}

const DEFAULT_KV_CACHE_BYTES = 512 * 1024 * 1024;
const MAX_SEED = 2 ** 53 - 1;

/**
 * The runner for `--device cuda` (and, for tests and CPU measurements, on the CPU provider): ModelRunner's host paged
 * KV cache and single steps (prefill, and decodes that are not loop-eligible), plus k decode steps in one
 * session.run through the Loop graph of decode-loop-graph.ts. Per k-step run the rows' past goes in once, and the k
 * sampled ids, their logprobs and the k new keys/values per row come back; the host then writes those into its cache.
 * onnxruntime-node has no IO binding for CUDA, so this divides the per-token PCIe traffic of the past by k
 * (transfer-bytes.ts, design 'loop-k-steps').
 */
export class LoopDecodeRunner {
  readonly layout: ExecutorLayout;

  private constructor(
    readonly manifest: ModelManifest,
    private readonly sessions: { base: ort.InferenceSession; lora: ort.InferenceSession; loopBase: ort.InferenceSession; loopLora: ort.InferenceSession },
    private readonly kv: PagedKvCache,
    private readonly slots: AdapterSlotStacks,
    readonly maxDecodeStepsPerRun: number,
  ) {
    this.layout = {
      vocabSize: manifest.config.vocabSize,
      maxContextTokens: manifest.config.maxPositionEmbeddings,
      numKvBlocks: kv.options.numBlocks,
      blockSizeTokens: kv.options.blockSizeTokens,
      numAdapterSlots: slots.numSlots,
      maxDecodeStepsPerRun,
    };
  }

  static async create(options: LoopDecodeRunnerOptions): Promise<LoopDecodeRunner> {
    const manifest = readManifest(options.modelDir);
    const config = manifest.config;
    const device = options.device ?? 'cpu';
    const maxSteps = options.maxDecodeStepsPerRun ?? 64;
    if (!Number.isSafeInteger(maxSteps) || maxSteps < 1) throw new TesseraError('CONFIG_INVALID', `\`maxDecodeStepsPerRun\` must be an integer >= 1. Given: ${maxSteps}`);
    const blockSizeTokens = options.blockSizeTokens ?? 16;
    const kvShape = { numLayers: config.numLayers, numKvHeads: config.numKvHeads, headDim: config.headDim, blockSizeTokens };
    const numBlocks = Math.floor((options.kvCacheBytes ?? DEFAULT_KV_CACHE_BYTES) / PagedKvCache.bytesPerBlock(kvShape));
    if (numBlocks < 1) throw new TesseraError('CONFIG_INVALID', `\`kvCacheBytes\` must hold at least one KV block of ${PagedKvCache.bytesPerBlock(kvShape)} bytes. Given: ${options.kvCacheBytes}`);
    const sessionOptions: ort.InferenceSession.SessionOptions = {
      executionProviders: [device],
      graphOptimizationLevel: 'all',
      executionMode: 'sequential',
      ...(options.intraOpThreads !== undefined ? { intraOpNumThreads: options.intraOpThreads } : {}),
    };
    const open = async (what: string, model: string | Uint8Array, extra: ort.InferenceSession.SessionOptions = {}) => {
      try {
        return typeof model === 'string' ? await ort.InferenceSession.create(model, sessionOptions) : await ort.InferenceSession.create(model, { ...sessionOptions, ...extra });
      } catch (err) {
        const message = (err as Error).message;
        if (device !== 'cpu') throw new TesseraError('DEVICE_UNAVAILABLE', `execution provider '${device}' is not available here: ${message}`, { cause: err });
        throw new TesseraError('CHECKPOINT_INVALID', `${options.modelDir}: ONNX Runtime cannot load the ${what} graph: ${message}`, { cause: err });
      }
    };
    // The Loop graphs are loaded from memory; their external weights resolve against the model directory.
    const weightsDir = { extra: { session: { model_external_initializers_file_folder_path: options.modelDir } } };
    const sessions = {
      base: await open('base', join(options.modelDir, manifest.graphs.base)),
      lora: await open('LoRA', join(options.modelDir, manifest.graphs.lora)),
      loopBase: await open('base decode-loop', decodeLoopModel(options.modelDir, manifest.graphs.base, config), weightsDir),
      loopLora: await open('LoRA decode-loop', decodeLoopModel(options.modelDir, manifest.graphs.lora, config), weightsDir),
    };
    const kv = new PagedKvCache({ ...kvShape, numBlocks });
    const slots = new AdapterSlotStacks(config, options.numAdapterSlots ?? 8, options.maxAdapterRank ?? 16);
    return new LoopDecodeRunner(manifest, sessions, kv, slots, maxSteps);
  }

  memory(): RunnerMemory {
    return { weightsBytes: this.manifest.weightsBytes, kvCacheBytes: this.kv.totalBytes, adapterSlotBytes: this.slots.totalBytes };
  }

  loadAdapterSlot(slot: number, weights: LoraWeights): void {
    this.slots.write(slot, weights);
  }

  fillAdapterSlot(slot: number, rank: number, scale: number, fill: (stacks: AdapterSlotStacks) => void): void {
    this.slots.writeWith(slot, rank, scale, fill);
  }

  clearAdapterSlot(slot: number): void {
    this.slots.clear(slot);
  }

  /**
   * Runs one plan. `decodeSteps` > 1: every row runs that many decode steps in one session.run and the result carries
   * `sampledTokens` (no logits). Otherwise one step as ModelRunner runs it (decode and prefill rows as separate batches).
   */
  async execute(plan: StepPlan): Promise<StepResult> {
    const started = performance.now();
    const k = plan.decodeSteps ?? 1;
    const vocab = this.layout.vocabSize;
    if (k !== 1) return this.executeLoop(plan, k, started);
    const outcomes: StepResult['outcomes'] = [];
    const runnable: SequenceWork[] = [];
    for (const seq of plan.sequences) {
      const problem = checkSequence(seq, this.layout);
      if (problem) outcomes.push({ seqId: seq.seqId, logitsRow: -1, error: problem });
      else runnable.push(seq);
    }
    const logitsParts: Float32Array[] = [];
    const lseParts: Float32Array[] = [];
    let rows = 0;
    for (const group of [runnable.filter((s) => s.tokenIds.length === 1), runnable.filter((s) => s.tokenIds.length > 1)]) {
      if (group.length === 0) continue;
      const { logits, logSumExp, sampled } = await this.runStep(group);
      logitsParts.push(logits);
      lseParts.push(logSumExp);
      let row = 0;
      for (const seq of group) outcomes.push({ seqId: seq.seqId, logitsRow: sampled.has(seq.seqId) ? rows + row++ : -1 });
      rows += row;
    }
    return {
      stepId: plan.stepId,
      outcomes,
      logits: concatFloat32(logitsParts, rows * vocab),
      logSumExp: concatFloat32(lseParts, rows),
      vocabSize: vocab,
      runtimeMs: performance.now() - started,
    };
  }

  /** Runs `steps` decode steps of `rows` in one session.run; see decode-loop-graph.ts. Throws INVALID_ARGUMENT for bad input. */
  async decodeSteps(rows: LoopRow[], steps: number): Promise<LoopTokens> {
    if (!Number.isSafeInteger(steps) || steps < 1 || steps > this.maxDecodeStepsPerRun) {
      throw new TesseraError('INVALID_ARGUMENT', `\`decodeSteps\` must be an integer in [1, ${this.maxDecodeStepsPerRun}]. Given: ${steps}`);
    }
    if (rows.length === 0) throw new TesseraError('INVALID_ARGUMENT', '`rows.length` must be >= 1. Given: 0');
    for (const row of rows) {
      const problem = this.checkLoopRow(row, steps);
      if (problem) throw new TesseraError('INVALID_ARGUMENT', `sequence ${row.seqId}: ${problem}`);
    }
    const { numKvHeads, headDim, numLayers } = this.manifest.config;
    const batch = rows.length;
    const pastLength = Math.max(PAST_ALIGN_TOKENS, Math.ceil(Math.max(...rows.map((r) => r.startPosition)) / PAST_ALIGN_TOKENS) * PAST_ALIGN_TOKENS);
    const kvRows: KvRow[] = rows.map((r) => ({ seqId: r.seqId, blockTable: r.blockTable, startPosition: r.startPosition, numNewTokens: steps }));
    const int64 = (values: number[]) => new ort.Tensor('int64', BigInt64Array.from(values, (v) => BigInt(v)), [values.length]);
    const feeds: Record<string, ort.Tensor> = {
      [DECODE_LOOP_IO.steps]: new ort.Tensor('int64', BigInt64Array.of(BigInt(steps)), []),
      [DECODE_LOOP_IO.anySampled]: new ort.Tensor('bool', Uint8Array.of(rows.some((r) => r.sampling.temperature > 0) ? 1 : 0), []),
      [DECODE_LOOP_IO.inputIds]: int64(rows.map((r) => r.tokenId)),
      [DECODE_LOOP_IO.startPositions]: int64(rows.map((r) => r.startPosition)),
      [DECODE_LOOP_IO.temperature]: new ort.Tensor('float32', Float32Array.from(rows, (r) => r.sampling.temperature), [batch]),
      [DECODE_LOOP_IO.topK]: int64(rows.map((r) => r.sampling.topK)),
      [DECODE_LOOP_IO.seed]: int64(rows.map((r) => r.sampling.seed)),
    };
    for (let layer = 0; layer < numLayers; layer++) {
      const past = this.kv.past(layer, kvRows, pastLength, 'loop');
      feeds[DECODE_LOOP_IO.pastKey(layer)] = new ort.Tensor('float32', past.keys, [batch, numKvHeads, pastLength, headDim]);
      feeds[DECODE_LOOP_IO.pastValue(layer)] = new ort.Tensor('float32', past.values, [batch, numKvHeads, pastLength, headDim]);
    }
    const useLora = rows.some((r) => r.adapterSlot !== 0);
    if (useLora) this.addLoraFeeds(feeds, rows.map((r) => r.adapterSlot));
    const out = await (useLora ? this.sessions.loopLora : this.sessions.loopBase).run(feeds);
    for (let layer = 0; layer < numLayers; layer++) {
      this.kv.scatter(layer, kvRows, steps, out[DECODE_LOOP_IO.newKey(layer)].data as Float32Array, out[DECODE_LOOP_IO.newValue(layer)].data as Float32Array);
    }
    // The graph gives [k, B]; the engine wants [B, k].
    const ids = out[DECODE_LOOP_IO.tokenIds].data as BigInt64Array;
    const lps = out[DECODE_LOOP_IO.logprobs].data as Float32Array;
    const tokenIds = new Int32Array(batch * steps);
    const logprobs = new Float32Array(batch * steps);
    for (let i = 0; i < steps; i++) {
      for (let b = 0; b < batch; b++) {
        tokenIds[b * steps + i] = Number(ids[i * batch + b]);
        logprobs[b * steps + i] = lps[i * batch + b];
      }
    }
    return { steps, tokenIds, logprobs };
  }

  async release(): Promise<void> {
    for (const s of Object.values(this.sessions)) await s.release();
  }

  private async executeLoop(plan: StepPlan, k: number, started: number): Promise<StepResult> {
    const vocab = this.layout.vocabSize;
    const outcomes: StepResult['outcomes'] = [];
    const rows: LoopRow[] = [];
    for (const seq of plan.sequences) {
      const problem = seq.tokenIds.length !== 1 || !seq.loopSampling ? 'a multi-step plan row must feed one token and carry loopSampling' : null;
      const row: LoopRow | null = problem ? null : { seqId: seq.seqId, tokenId: seq.tokenIds[0], startPosition: seq.startPosition, blockTable: seq.blockTable, adapterSlot: seq.adapterSlot, sampling: seq.loopSampling! };
      const rowProblem = problem ?? this.checkLoopRow(row!, k);
      if (rowProblem) outcomes.push({ seqId: seq.seqId, logitsRow: -1, error: rowProblem });
      else {
        outcomes.push({ seqId: seq.seqId, logitsRow: rows.length });
        rows.push(row!);
      }
    }
    const sampledTokens = rows.length > 0 ? await this.decodeSteps(rows, k) : { steps: k, tokenIds: new Int32Array(0), logprobs: new Float32Array(0) };
    return { stepId: plan.stepId, outcomes, logits: new Float32Array(0), sampledTokens, vocabSize: vocab, runtimeMs: performance.now() - started };
  }

  /** Why this row cannot run `steps` decode steps, or null. */
  private checkLoopRow(row: LoopRow, steps: number): string | null {
    if (steps < 1 || steps > this.maxDecodeStepsPerRun) return `decode steps ${steps} outside [1, ${this.maxDecodeStepsPerRun}]`;
    const work: SequenceWork = { seqId: row.seqId, tokenIds: [row.tokenId], startPosition: row.startPosition, blockTable: row.blockTable, adapterSlot: row.adapterSlot, sampleNext: true };
    // Positions start .. start + steps - 1 are written: the same checks as a step that feeds `steps` tokens.
    const problem = checkSequence({ ...work, tokenIds: new Array<number>(steps).fill(row.tokenId) }, this.layout);
    if (problem) return problem;
    const s = row.sampling;
    if (!(Number.isFinite(s.temperature) && s.temperature >= 0)) return `temperature ${s.temperature} is not a finite number >= 0`;
    if (!Number.isSafeInteger(s.topK) || s.topK < 0) return `top-k ${s.topK} is not an integer >= 0`;
    if (!Number.isSafeInteger(s.seed) || s.seed < 0 || s.seed > MAX_SEED) return `seed ${s.seed} is not an integer in [0, 2^53)`;
    return null;
  }

  private async runStep(group: SequenceWork[]): Promise<{ logits: Float32Array; logSumExp: Float32Array; sampled: Set<number> }> {
    const { numKvHeads, headDim, numLayers } = this.manifest.config;
    const inputs = stepInputs(group);
    const { batch, stepLength, pastLength, kvRows } = inputs;
    const feeds: Record<string, ort.Tensor> = {
      [GRAPH_IO.inputIds]: new ort.Tensor('int64', inputs.inputIds, [batch, stepLength]),
      [GRAPH_IO.positionIds]: new ort.Tensor('int64', inputs.positionIds, [batch, stepLength]),
      [GRAPH_IO.attentionBias]: new ort.Tensor('float32', inputs.attentionBias, [batch, 1, stepLength, pastLength + stepLength]),
      [GRAPH_IO.logitsIndex]: new ort.Tensor('int64', inputs.logitsIndex, [inputs.logitsIndex.length]),
    };
    for (let layer = 0; layer < numLayers; layer++) {
      const past = this.kv.past(layer, kvRows, pastLength, stepLength === 1 ? 'decode' : 'prefill');
      feeds[GRAPH_IO.pastKey(layer)] = new ort.Tensor('float32', past.keys, [batch, numKvHeads, pastLength, headDim]);
      feeds[GRAPH_IO.pastValue(layer)] = new ort.Tensor('float32', past.values, [batch, numKvHeads, pastLength, headDim]);
    }
    const useLora = group.some((s) => s.adapterSlot !== 0);
    if (useLora) this.addLoraFeeds(feeds, group.map((s) => s.adapterSlot));
    const out = await (useLora ? this.sessions.lora : this.sessions.base).run(feeds);
    for (let layer = 0; layer < numLayers; layer++) {
      this.kv.scatter(layer, kvRows, stepLength, out[GRAPH_IO.newKey(layer)].data as Float32Array, out[GRAPH_IO.newValue(layer)].data as Float32Array);
    }
    return { logits: out[GRAPH_IO.logits].data as Float32Array, logSumExp: out[GRAPH_IO.logitsLogSumExp].data as Float32Array, sampled: new Set(inputs.sampledSeqIds) };
  }

  /** The converted LoRA graph's slot inputs, passed through as they are (same names and layout as ModelRunner feeds). */
  private addLoraFeeds(feeds: Record<string, ort.Tensor>, rowSlots: number[]): void {
    const config = this.manifest.config;
    const { numSlots, maxRank } = this.slots;
    feeds[GRAPH_IO.loraSlot] = new ort.Tensor('int64', BigInt64Array.from(rowSlots, (s) => BigInt(s)), [rowSlots.length]);
    feeds[GRAPH_IO.loraScale] = new ort.Tensor('float32', Float32Array.from(rowSlots, (s) => this.slots.scales[s]), [rowSlots.length, 1, 1]);
    for (let layer = 0; layer < config.numLayers; layer++) {
      for (const target of LORA_TARGETS) {
        const [inF, outF] = loraTargetShape(config, target);
        feeds[GRAPH_IO.loraA(layer, target)] = new ort.Tensor('float32', this.slots.stackA(layer, target), [numSlots, inF, maxRank]);
        feeds[GRAPH_IO.loraB(layer, target)] = new ort.Tensor('float32', this.slots.stackB(layer, target), [numSlots, maxRank, outF]);
      }
    }
  }
}
