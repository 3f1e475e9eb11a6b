import * as ort from 'onnxruntime-node';
import { TesseraError } from '../../errors.ts';
import type { ExecutorLayout, LoopSampling, SequenceWork, StepPlan, StepResult } from '../../engine/executor.ts';
import type { ModelManifest } from '../converted-model.ts';
import type { AdapterSlotStacks, LoraWeights } from './adapter-slot-stacks.ts';
import { DECODE_LOOP_IO, decodeLoopModel } from './decode-loop-graph.ts';
import { addGatherLoraFeeds } from './gather-lora-feeds.ts';
import { ModelRunner, type RunnerMemory, type RunnerOptions } from './model-runner.ts';
import { externalWeightsIn, openSession, runnerSessionOptions } from './open-session.ts';
import type { KvRow } from './paged-kv-cache.ts';
import { checkSequence, PAST_ALIGN_TOKENS } from './step-inputs.ts';
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

const MAX_SEED = 2 ** 53 - 1;

/**
 * The runner for `--device cuda` (and, for tests and CPU measurements, on the CPU provider): a ModelRunner (host paged
 * KV cache, adapter slots, single steps: prefill, and decodes that are not loop-eligible) plus k decode steps in one
 * session.run through the Loop graph of decode-loop-graph.ts. Per k-step run the rows' past goes in once, and the k
 * sampled ids, their logprobs and the k new keys/values per row come back; the host then writes those into its cache.
 * onnxruntime-node has no IO binding for CUDA, so this divides the per-token PCIe traffic of the past by k
 * (transfer-bytes.ts, design 'loop-k-steps'). The Loop runs the exact (gather) LoRA graph on every model.
 */
export class LoopDecodeRunner {
  readonly layout: ExecutorLayout;

  private constructor(
    private readonly step: ModelRunner,
    private readonly loops: { base: ort.InferenceSession; lora: ort.InferenceSession },
    readonly maxDecodeStepsPerRun: number,
  ) {
    this.layout = { ...step.layout, maxDecodeStepsPerRun };
  }

  get manifest(): ModelManifest {
    return this.step.manifest;
  }

  static async create(options: LoopDecodeRunnerOptions): Promise<LoopDecodeRunner> {
    const maxSteps = options.maxDecodeStepsPerRun ?? 64;
    if (!Number.isSafeInteger(maxSteps) || maxSteps < 1) throw new TesseraError('CONFIG_INVALID', `\`maxDecodeStepsPerRun\` must be an integer >= 1. Given: ${maxSteps}`);
    const step = await ModelRunner.create(options);
    const { modelDir } = options;
    const graphs = step.manifest.graphs;
    const sessionOptions = { ...runnerSessionOptions(options.device ?? 'cpu', options.intraOpThreads), ...externalWeightsIn(modelDir) };
    const open = (file: string, what: string) => openSession(decodeLoopModel(modelDir, file, step.manifest.config), `${modelDir}: the ${what} decode-loop graph`, sessionOptions);
    try {
      return new LoopDecodeRunner(step, { base: await open(graphs.base, 'base'), lora: await open(graphs.lora, 'LoRA') }, maxSteps);
    } catch (err) {
      await step.release();
      throw err;
    }
  }

  memory(): RunnerMemory {
    return this.step.memory();
  }

  loadAdapterSlot(slot: number, weights: LoraWeights): void {
    this.step.loadAdapterSlot(slot, weights);
  }

  fillAdapterSlot(slot: number, rank: number, scale: number, fill: (stacks: AdapterSlotStacks) => void): void {
    this.step.fillAdapterSlot(slot, rank, scale, fill);
  }

  clearAdapterSlot(slot: number): void {
    this.step.clearAdapterSlot(slot);
  }

  /**
   * Runs one plan. `decodeSteps` > 1: every row runs that many decode steps in one session.run and the result carries
   * `sampledTokens` (no logits). Otherwise one step of the ModelRunner (decode and prefill rows as separate batches).
   */
  execute(plan: StepPlan): Promise<StepResult> {
    const k = plan.decodeSteps ?? 1;
    return k === 1 ? this.step.execute(plan) : this.executeLoop(plan, k, performance.now());
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
    const kv = this.step.kvCache;
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
      const past = kv.past(layer, kvRows, pastLength, 'loop');
      feeds[DECODE_LOOP_IO.pastKey(layer)] = new ort.Tensor('float32', past.keys, [batch, numKvHeads, pastLength, headDim]);
      feeds[DECODE_LOOP_IO.pastValue(layer)] = new ort.Tensor('float32', past.values, [batch, numKvHeads, pastLength, headDim]);
    }
    const useLora = rows.some((r) => r.adapterSlot !== 0);
    if (useLora) addGatherLoraFeeds(feeds, this.step.adapterStacks, this.manifest.config, rows.map((r) => r.adapterSlot));
    const out = await (useLora ? this.loops.lora : this.loops.base).run(feeds);
    for (let layer = 0; layer < numLayers; layer++) {
      kv.scatter(layer, kvRows, steps, out[DECODE_LOOP_IO.newKey(layer)].data as Float32Array, out[DECODE_LOOP_IO.newValue(layer)].data as Float32Array);
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
    await this.step.release();
    for (const s of Object.values(this.loops)) await s.release();
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
}
