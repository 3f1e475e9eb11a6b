import * as ort from 'onnxruntime-node';
import { TesseraError } from '../../errors.ts';
import type { ExecutorLayout, SequenceWork, StepPlan, StepResult } from '../../engine/executor.ts';
import type { ModelManifest } from '../converted-model.ts';
import { DECODE_LOOP_IO, decodeLoopModel } from '../graph/decode-loop-graph.ts';
import type { AdapterSlotStacks, LoraWeights } from './adapter-slot-stacks.ts';
import { addGatherLoraFeeds } from './lora-feeds.ts';
import { ModelRunner } from './model-runner.ts';
import { openSession, runnerSessionOptions, withExternalWeightsIn } from './open-session.ts';
import type { KvRow } from './paged-kv-cache.ts';
import { executeStep, type BatchOutput } from './step-batches.ts';
import { alignedPastLength, graphSampling, PAST_ALIGN_TOKENS } from './step-inputs.ts';
import type { RunnerMemory, RunnerOptions, StepRunner } from './step-runner.ts';

/**
 * The loop-decode StepRunner (step-runner.ts), for `--device cuda` (and, for tests and CPU measurements, on the CPU
 * provider): a ModelRunner (host paged KV cache, adapter slots, single steps: prefill, and decodes that are not
 * loop-eligible) plus k decode steps in one session.run through the Loop graph of decode-loop-graph.ts. Per k-step run
 * the rows' past goes in once, and the k sampled ids, their logprobs and the k new keys/values per row come back; the
 * host then writes those into its cache. onnxruntime-node has no IO binding for CUDA, so this divides the per-token PCIe
 * traffic of the past by k (transfer-bytes.ts, design 'loop-k-steps'). The Loop runs the exact (gather) LoRA graph on
 * every model.
 */
export class LoopDecodeRunner implements StepRunner {
  readonly kind = 'loop-decode';
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

  static async create(options: RunnerOptions): Promise<LoopDecodeRunner> {
    const maxSteps = options.maxDecodeStepsPerRun ?? 64;
    if (!Number.isSafeInteger(maxSteps) || maxSteps < 1) throw new TesseraError('CONFIG_INVALID', `\`maxDecodeStepsPerRun\` must be an integer >= 1. Given: ${maxSteps}`);
    const step = await ModelRunner.create(options);
    const { modelDir } = options;
    const graphs = step.manifest.graphs;
    const sessionOptions = withExternalWeightsIn(runnerSessionOptions(options.device ?? 'cpu', options), modelDir);
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

  /** `decodeSteps` > 1: every row runs that many decode steps in one session.run and comes back 'sampled'. */
  execute(plan: StepPlan): Promise<StepResult> {
    return executeStep(this, plan);
  }

  /** One step: the ModelRunner's batch. k > 1 steps (every row 'sampled', one token fed): the Loop graph. */
  runBatch(rows: SequenceWork[], decodeSteps: number): Promise<BatchOutput> {
    return decodeSteps === 1 ? this.step.runBatch(rows, 1) : this.runLoop(rows, decodeSteps);
  }

  async release(): Promise<void> {
    await this.step.release();
    for (const s of Object.values(this.loops)) await s.release();
  }

  /**
   * `steps` decode steps of `rows` (checked, one token fed each, with loopSampling) in one session.run of the Loop graph;
   * see decode-loop-graph.ts. runBatch takes it for k > 1; any k >= 1 here (bench/cases/decode-loop.ts measures k = 1).
   */
  async runLoop(rows: SequenceWork[], steps: number): Promise<BatchOutput> {
    const { numKvHeads, headDim, numLayers } = this.manifest.config;
    const kv = this.step.kvCache;
    const batch = rows.length;
    const sampling = rows.map((r) => graphSampling(r.loopSampling!, this.layout.vocabSize));
    const pastLength = alignedPastLength(rows, PAST_ALIGN_TOKENS);
    const kvRows: KvRow[] = rows.map((r) => ({ seqId: r.seqId, blockTable: r.blockTable, startPosition: r.startPosition, numNewTokens: steps }));
    const int64 = (values: number[]) => new ort.Tensor('int64', BigInt64Array.from(values, (v) => BigInt(v)), [values.length]);
    const feeds: Record<string, ort.Tensor> = {
      [DECODE_LOOP_IO.steps]: new ort.Tensor('int64', BigInt64Array.of(BigInt(steps)), []),
      [DECODE_LOOP_IO.anySampled]: new ort.Tensor('bool', Uint8Array.of(sampling.some((s) => s.temperature > 0) ? 1 : 0), []),
      [DECODE_LOOP_IO.inputIds]: int64(rows.map((r) => r.tokenIds[0])),
      [DECODE_LOOP_IO.startPositions]: int64(rows.map((r) => r.startPosition)),
      [DECODE_LOOP_IO.temperature]: new ort.Tensor('float32', Float32Array.from(sampling, (s) => s.temperature), [batch]),
      [DECODE_LOOP_IO.topK]: int64(sampling.map((s) => s.topK)),
      [DECODE_LOOP_IO.seed]: int64(sampling.map((s) => s.seed)),
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
    return { logits: new Float32Array(0), logSumExp: null, sampled: { steps, tokenIds, logprobs } };
  }
}
