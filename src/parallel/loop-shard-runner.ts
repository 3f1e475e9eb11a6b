import { TesseraError } from '../errors.ts';
import { decodeCompeftIntoSlot } from '../adapters/slot-decode-compeft.ts';
import { readManifest, type ModelManifest } from '../model/converted-model.ts';
import type { LoraWeights } from '../model/runner/adapter-slot-stacks.ts';
import { LoopDecodeRunner } from '../model/runner/loop-decode-runner.ts';
import { PagedKvCache } from '../model/runner/paged-kv-cache.ts';
import type { RunReply, RunRequest, ShardMemory, ShardSpec } from './wire.ts';

/**
 * A whole-model shard that can run k decode steps per session.run (LoopDecodeRunner: `--device cuda`, or asked for with
 * `loopDecode`), behind the same shard protocol as ShardRunner. A run with `decodeSteps` > 1 answers with the sampled
 * tokens of each row (request order) instead of logits.
 */
export class LoopShardRunner {
  private constructor(
    readonly manifest: ModelManifest,
    private readonly runner: LoopDecodeRunner,
  ) {}

  static async create(spec: ShardSpec): Promise<LoopShardRunner> {
    const p = spec.position;
    if (p.tpSize !== 1 || p.numStages !== 1) throw new TesseraError('CONFIG_INVALID', 'k decode steps per run need the whole model on one worker (tp = pp = 1)');
    const manifest = readManifest(spec.modelDir);
    const c = manifest.config;
    const perBlock = PagedKvCache.bytesPerBlock({ numLayers: c.numLayers, numKvHeads: c.numKvHeads, headDim: c.headDim, blockSizeTokens: spec.blockSizeTokens });
    const runner = await LoopDecodeRunner.create({
      modelDir: spec.modelDir,
      device: spec.device,
      intraOpThreads: spec.intraOpThreads,
      kvCacheBytes: spec.numKvBlocks * perBlock,
      blockSizeTokens: spec.blockSizeTokens,
      numAdapterSlots: spec.numAdapterSlots,
      maxAdapterRank: spec.maxAdapterRank,
      ...(spec.maxDecodeStepsPerRun !== undefined ? { maxDecodeStepsPerRun: spec.maxDecodeStepsPerRun } : {}),
    });
    return new LoopShardRunner(manifest, runner);
  }

  memory(): ShardMemory {
    return this.runner.memory();
  }

  async run(req: RunRequest): Promise<RunReply> {
    if (req.segment.kind !== 'stage') throw new TesseraError('INTERNAL', `a loop-decode shard runs whole steps, not ${req.segment.kind} segments`);
    const result = await this.runner.execute({ stepId: req.stepId, sequences: req.rows, ...(req.decodeSteps !== undefined ? { decodeSteps: req.decodeSteps } : {}) });
    const failed = result.outcomes.find((o) => o.error !== undefined);
    if (failed) throw new TesseraError('INTERNAL', `sequence ${failed.seqId}: ${failed.error}`);
    const rowOf = new Map(result.outcomes.map((o) => [o.seqId, o.logitsRow]));
    const sampled = result.sampledTokens;
    if (sampled) {
      // Rows in request order, as the controller reads them.
      const k = sampled.steps;
      const tokenIds = new Int32Array(req.rows.length * k);
      const logprobs = new Float32Array(req.rows.length * k);
      req.rows.forEach((r, i) => {
        const row = rowOf.get(r.seqId)!;
        tokenIds.set(sampled.tokenIds.subarray(row * k, (row + 1) * k), i * k);
        logprobs.set(sampled.logprobs.subarray(row * k, (row + 1) * k), i * k);
      });
      return { output: new Float32Array(0), sampledTokens: { steps: k, tokenIds, logprobs }, runtimeMs: result.runtimeMs };
    }
    const vocab = result.vocabSize;
    const rows = req.rows.filter((r) => r.sampleNext);
    const output = new Float32Array(rows.length * vocab);
    const logSumExp = new Float32Array(rows.length);
    rows.forEach((r, i) => {
      const row = rowOf.get(r.seqId)!;
      output.set(result.logits.subarray(row * vocab, (row + 1) * vocab), i * vocab);
      logSumExp[i] = result.logSumExp![row];
    });
    return { output, logSumExp, runtimeMs: result.runtimeMs };
  }

  loadAdapterSlot(slot: number, weights: LoraWeights): void {
    this.runner.loadAdapterSlot(slot, weights);
  }

  loadCompressedSlot(slot: number, bytes: Uint8Array): void {
    decodeCompeftIntoSlot(bytes, this.manifest.config, slot, (rank, scale, fill) => this.runner.fillAdapterSlot(slot, rank, scale, fill));
  }

  clearAdapterSlot(slot: number): void {
    this.runner.clearAdapterSlot(slot);
  }

  release(): Promise<void> {
    return this.runner.release();
  }
}
