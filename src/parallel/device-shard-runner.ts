import { TesseraError } from '../errors.ts';
import { decodeCompeftIntoSlot } from '../adapters/slot-decode-compeft.ts';
import { readManifest, type ModelManifest } from '../model/converted-model.ts';
import type { LoraWeights } from '../model/runner/adapter-slot-stacks.ts';
import { DeviceKvRunner } from '../model/runner/device-kv-runner.ts';
import { PagedKvCache } from '../model/runner/paged-kv-cache.ts';
import type { RunReply, RunRequest, ShardMemory, ShardSpec } from './wire.ts';

/**
 * A whole-model shard whose KV cache and adapter stacks stay on the device between steps (WebGPU keeps ORT outputs in
 * GPU buffers): DeviceKvRunner behind the same shard protocol as ShardRunner, so `--device webgpu` serves through the
 * ordinary controller, engine and server.
 */
export class DeviceShardRunner {
  private constructor(
    readonly manifest: ModelManifest,
    private readonly runner: DeviceKvRunner,
  ) {}

  static async create(spec: ShardSpec): Promise<DeviceShardRunner> {
    const p = spec.position;
    if (p.tpSize !== 1 || p.numStages !== 1) throw new TesseraError('CONFIG_INVALID', 'a device-resident KV cache needs the whole model on one worker (tp = pp = 1)');
    const manifest = readManifest(spec.modelDir);
    const c = manifest.config;
    const perBlock = PagedKvCache.bytesPerBlock({ numLayers: c.numLayers, numKvHeads: c.numKvHeads, headDim: c.headDim, blockSizeTokens: spec.blockSizeTokens });
    const runner = await DeviceKvRunner.create({
      modelDir: spec.modelDir,
      device: spec.device,
      intraOpThreads: spec.intraOpThreads,
      kvCacheBytes: spec.numKvBlocks * perBlock,
      blockSizeTokens: spec.blockSizeTokens,
      numAdapterSlots: spec.numAdapterSlots,
      maxAdapterRank: spec.maxAdapterRank,
    });
    return new DeviceShardRunner(manifest, runner);
  }

  memory(): ShardMemory {
    return this.runner.memory();
  }

  /** Runs the rows; returns the sampled rows' logits in request order, as the controller expects from a whole stage. */
  async run(req: RunRequest): Promise<RunReply> {
    if (req.segment.kind !== 'stage') throw new TesseraError('INTERNAL', `a device-resident shard runs whole steps, not ${req.segment.kind} segments`);
    const result = await this.runner.execute({ stepId: req.stepId, sequences: req.rows });
    const failed = result.outcomes.find((o) => o.error !== undefined);
    if (failed) throw new TesseraError('INTERNAL', `sequence ${failed.seqId}: ${failed.error}`);
    const vocab = result.vocabSize;
    const rowOf = new Map(result.outcomes.map((o) => [o.seqId, o.logitsRow]));
    const sampled = req.rows.filter((r) => r.sampleNext);
    const output = new Float32Array(sampled.length * vocab);
    const logSumExp = result.logSumExp ? new Float32Array(sampled.length) : undefined;
    sampled.forEach((r, i) => {
      const row = rowOf.get(r.seqId)!;
      output.set(result.logits.subarray(row * vocab, (row + 1) * vocab), i * vocab);
      if (logSumExp) logSumExp[i] = result.logSumExp![row];
    });
    return { output, ...(logSumExp ? { logSumExp } : {}), runtimeMs: result.runtimeMs };
  }

  loadAdapterSlot(slot: number, weights: LoraWeights): Promise<void> {
    return this.runner.loadAdapterSlot(slot, weights);
  }

  /** Decodes a `.cpeft` file through a host staging slot, then uploads the slot (one write per stack). */
  loadCompressedSlot(slot: number, bytes: Uint8Array): Promise<void> {
    let upload: Promise<void> = Promise.resolve();
    decodeCompeftIntoSlot(bytes, this.manifest.config, slot, (rank, scale, fill) => {
      upload = this.runner.fillAdapterSlot(slot, rank, scale, fill);
    });
    return upload;
  }

  clearAdapterSlot(slot: number): Promise<void> {
    return this.runner.clearAdapterSlot(slot);
  }

  release(): Promise<void> {
    return this.runner.release();
  }
}
