import { TesseraError } from '../errors.ts';
import { decodeCompeftIntoSlot } from '../adapters/slot-decode-compeft.ts';
import { readManifest, type ModelManifest } from '../model/converted-model.ts';
import type { LoraWeights } from '../model/runner/adapter-slot-stacks.ts';
import { createStepRunner } from '../model/runner/create-step-runner.ts';
import type { HostKvHooks } from '../model/runner/host-kv-batch.ts';
import { PagedKvCache } from '../model/runner/paged-kv-cache.ts';
import { checkRow } from '../model/runner/step-batches.ts';
import type { StepRunner } from '../model/runner/step-runner.ts';
import type { RunReply, RunRequest, ShardMemory, ShardSpec } from './wire.ts';

/**
 * A worker holding the whole model (tp = pp = 1): the StepRunner of the spec's runner kind behind the shard protocol, so
 * the controller, engine and server are the same for every kind. A run request is one batch of the step
 * (model/runner/step-batches.ts): its reply is the runner's BatchOutput.
 */
export class WholeModelShardRunner {
  private constructor(readonly runner: StepRunner) {}

  get manifest(): ModelManifest {
    return this.runner.manifest;
  }

  /** `hooks`: in-process instrumentation of the host-KV batch path for benchmarks (bench/cases/profile.ts); serving passes none. */
  static async create(spec: ShardSpec, hooks?: HostKvHooks): Promise<WholeModelShardRunner> {
    const c = readManifest(spec.modelDir).config;
    const perBlock = PagedKvCache.bytesPerBlock({ numLayers: c.numLayers, numKvHeads: c.numKvHeads, headDim: c.headDim, blockSizeTokens: spec.blockSizeTokens });
    const runner = await createStepRunner(spec.runnerKind, {
      modelDir: spec.modelDir,
      device: spec.device,
      intraOpThreads: spec.intraOpThreads,
      intraOpSpinning: spec.intraOpSpinning,
      kvCacheBytes: spec.numKvBlocks * perBlock,
      blockSizeTokens: spec.blockSizeTokens,
      numAdapterSlots: spec.numAdapterSlots,
      maxAdapterRank: spec.maxAdapterRank,
      loraSessionOnFirstUse: true,
      ...(spec.maxDecodeStepsPerRun !== undefined ? { maxDecodeStepsPerRun: spec.maxDecodeStepsPerRun } : {}),
      ...(hooks ? { hooks } : {}),
    });
    return new WholeModelShardRunner(runner);
  }

  memory(): ShardMemory {
    return this.runner.memory();
  }

  /** One batch; its rows were checked by the controller against the same layout, and are checked again here. */
  async run(req: RunRequest): Promise<RunReply> {
    if (req.segment.kind !== 'stage') throw new TesseraError('INTERNAL', `a whole-model worker runs whole steps, not ${req.segment.kind} segments`);
    const started = performance.now();
    const steps = req.decodeSteps ?? 1;
    for (const row of req.rows) {
      const problem = checkRow(row, steps, this.runner.layout);
      if (problem !== null) throw new TesseraError('INTERNAL', `sequence ${row.seqId}: ${problem}`);
    }
    const out = await this.runner.runBatch(req.rows, steps);
    return {
      output: out.logits,
      ...(out.logSumExp ? { logSumExp: out.logSumExp } : {}),
      ...(out.sampled ? { sampledTokens: out.sampled } : {}),
      runtimeMs: performance.now() - started,
    };
  }

  async loadAdapterSlot(slot: number, weights: LoraWeights): Promise<void> {
    await this.runner.loadAdapterSlot(slot, weights);
  }

  /** Decodes a `.cpeft` file straight into the runner's slot stacks (a device runner's host staging), then lets it write them. */
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
