import { TesseraError } from '../errors.ts';
import { decodeCompeftIntoSlot } from '../adapters/slot-decode-compeft.ts';
import { sampledInGraph, type SequenceWork, type StepPlan, type StepResult } from '../engine/executor.ts';
import { readManifest, type ModelManifest } from '../model/converted-model.ts';
import type { AdapterSlotStacks, LoraWeights } from '../model/runner/adapter-slot-stacks.ts';
import { DeviceKvRunner } from '../model/runner/device-kv-runner.ts';
import { LoopDecodeRunner } from '../model/runner/loop-decode-runner.ts';
import type { RunnerMemory, RunnerOptions } from '../model/runner/model-runner.ts';
import { PagedKvCache } from '../model/runner/paged-kv-cache.ts';
import type { RunReply, RunRequest, ShardMemory, ShardSpec } from './wire.ts';

/** A runner that holds the whole model and runs engine plans itself (its adapter writes may be asynchronous). */
interface WholeModelRunner {
  execute(plan: StepPlan): Promise<StepResult>;
  memory(): RunnerMemory;
  loadAdapterSlot(slot: number, weights: LoraWeights): void | Promise<void>;
  fillAdapterSlot(slot: number, rank: number, scale: number, fill: (stacks: AdapterSlotStacks) => void): void | Promise<void>;
  clearAdapterSlot(slot: number): void | Promise<void>;
  release(): Promise<void>;
}

export type WholeModelRunnerKind = 'device-kv' | 'loop-decode';

/**
 * A whole-model shard behind the same shard protocol as ShardRunner, so the controller, engine and server are unchanged:
 * - 'device-kv': DeviceKvRunner, KV cache and adapter stacks kept on the device between steps (`--device webgpu`);
 *   a run with `sampleInGraph` answers with the tokens of the rows sampled in the graph and the logits of the others;
 * - 'loop-decode': LoopDecodeRunner, k decode steps per session.run (`--device cuda`, or `--decode-steps-per-run` > 1);
 *   a run with `decodeSteps` > 1 answers with each row's sampled tokens (request order) instead of logits.
 */
export class WholeModelShardRunner {
  private constructor(
    readonly manifest: ModelManifest,
    private readonly kind: WholeModelRunnerKind,
    private readonly runner: WholeModelRunner,
  ) {}

  static async create(spec: ShardSpec, kind: WholeModelRunnerKind): Promise<WholeModelShardRunner> {
    const p = spec.position;
    if (p.tpSize !== 1 || p.numStages !== 1) {
      const what = kind === 'device-kv' ? 'a device-resident KV cache needs' : 'k decode steps per run need';
      throw new TesseraError('CONFIG_INVALID', `${what} the whole model on one worker (tp = pp = 1)`);
    }
    const manifest = readManifest(spec.modelDir);
    const c = manifest.config;
    const perBlock = PagedKvCache.bytesPerBlock({ numLayers: c.numLayers, numKvHeads: c.numKvHeads, headDim: c.headDim, blockSizeTokens: spec.blockSizeTokens });
    const options: RunnerOptions = {
      modelDir: spec.modelDir,
      device: spec.device,
      intraOpThreads: spec.intraOpThreads,
      kvCacheBytes: spec.numKvBlocks * perBlock,
      blockSizeTokens: spec.blockSizeTokens,
      numAdapterSlots: spec.numAdapterSlots,
      maxAdapterRank: spec.maxAdapterRank,
    };
    const runner =
      kind === 'device-kv'
        ? await DeviceKvRunner.create(options)
        : await LoopDecodeRunner.create({ ...options, ...(spec.maxDecodeStepsPerRun !== undefined ? { maxDecodeStepsPerRun: spec.maxDecodeStepsPerRun } : {}) });
    return new WholeModelShardRunner(manifest, kind, runner);
  }

  memory(): ShardMemory {
    return this.runner.memory();
  }

  /**
   * Runs the rows; returns, in request order as the controller expects, the logits of the rows the host samples and
   * the tokens of the rows the runner sampled (every sampling row of a k-step run, the `sampledInGraph` ones otherwise).
   */
  async run(req: RunRequest): Promise<RunReply> {
    if (req.segment.kind !== 'stage') throw new TesseraError('INTERNAL', `a ${this.kind} shard runs whole steps, not ${req.segment.kind} segments`);
    const result = await this.runner.execute({
      stepId: req.stepId,
      sequences: req.rows,
      ...(req.decodeSteps !== undefined ? { decodeSteps: req.decodeSteps } : {}),
      ...(req.sampleInGraph ? { sampleInGraph: true } : {}),
    });
    const failed = result.outcomes.find((o) => o.error !== undefined);
    if (failed) throw new TesseraError('INTERNAL', `sequence ${failed.seqId}: ${failed.error}`);
    const rowOf = new Map(result.outcomes.map((o) => [o.seqId, o.logitsRow]));
    const byRunner = (r: SequenceWork) => (req.decodeSteps ?? 1) > 1 || sampledInGraph(req, r);
    const tokenRows = req.rows.filter((r) => r.sampleNext && byRunner(r));
    const logitsRows = req.rows.filter((r) => r.sampleNext && !byRunner(r));
    const sampled = result.sampledTokens;
    if (tokenRows.length > 0 && sampled === undefined) throw new TesseraError('INTERNAL', `the ${this.kind} runner returned no sampled tokens for ${tokenRows.length} rows it was to sample`);
    const vocab = result.vocabSize;
    const output = new Float32Array(logitsRows.length * vocab);
    const logSumExp = result.logSumExp ? new Float32Array(logitsRows.length) : undefined;
    logitsRows.forEach((r, i) => {
      const row = rowOf.get(r.seqId)!;
      output.set(result.logits.subarray(row * vocab, (row + 1) * vocab), i * vocab);
      if (logSumExp) logSumExp[i] = result.logSumExp![row];
    });
    const reply: RunReply = { output, ...(logSumExp ? { logSumExp } : {}), runtimeMs: result.runtimeMs };
    if (sampled) {
      const k = sampled.steps;
      const tokenIds = new Int32Array(tokenRows.length * k);
      const logprobs = new Float32Array(tokenRows.length * k);
      tokenRows.forEach((r, i) => {
        const row = rowOf.get(r.seqId)!;
        tokenIds.set(sampled.tokenIds.subarray(row * k, (row + 1) * k), i * k);
        logprobs.set(sampled.logprobs.subarray(row * k, (row + 1) * k), i * k);
      });
      reply.sampledTokens = { steps: k, tokenIds, logprobs };
    }
    return reply;
  }

  async loadAdapterSlot(slot: number, weights: LoraWeights): Promise<void> {
    await this.runner.loadAdapterSlot(slot, weights);
  }

  /** Decodes a `.cpeft` file into the slot (through the runner's host staging stacks), then lets the runner write it. */
  async loadCompressedSlot(slot: number, bytes: Uint8Array): Promise<void> {
    let written: void | Promise<void> = undefined;
    decodeCompeftIntoSlot(bytes, this.manifest.config, slot, (rank, scale, fill) => {
      written = this.runner.fillAdapterSlot(slot, rank, scale, fill);
    });
    await written;
  }

  async clearAdapterSlot(slot: number): Promise<void> {
    await this.runner.clearAdapterSlot(slot);
  }

  release(): Promise<void> {
    return this.runner.release();
  }
}
