import type { ExecutorLayout, SequenceWork, StepPlan, StepResult } from '../../engine/executor.ts';
import type { ModelManifest } from '../converted-model.ts';
import type { AdapterSlotStacks, LoraWeights } from './adapter-slot-stacks.ts';
import type { HostKvHooks } from './host-kv-batch.ts';
import type { BatchOutput } from './step-batches.ts';

/**
 * The contract every whole-model runner implements: it holds the model, its KV cache and its adapter slots in one
 * worker, and runs engine plans. A step runs as
 *
 *   execute(plan) = executeStep(this, plan)                 step-batches.ts: check rows, split, gather outcomes
 *     for each batch (decode rows, then prefill rows):
 *       runBatch(rows, decodeSteps) -> BatchOutput          the hot path: inputs, one session.run, KV write-back
 *
 * The implementations, one per RunnerKind (runner-kind.ts chooses, create-step-runner.ts builds):
 *   'host-kv'     ModelRunner       KV cache in host memory, gathered into the graph's past inputs every run (CPU)
 *   'loop-decode' LoopDecodeRunner  a ModelRunner plus k decode steps per session.run in an ONNX Loop (CUDA)
 *   'device-kv'   DeviceKvRunner    KV cache and adapter stacks kept on the device between runs; samples in its graph (WebGPU)
 * Behind the shard protocol a worker hosts one of them (src/parallel/whole-model-shard-runner.ts); a model split over
 * several workers runs ShardRunner instead (src/parallel/shard-runner.ts), which shares ModelRunner's batch path
 * (host-kv-batch.ts).
 */
export interface StepRunner {
  readonly kind: RunnerKind;
  readonly manifest: ModelManifest;
  readonly layout: ExecutorLayout;
  /** One engine step: rows that fail their checks fail alone; the rest run as batches. */
  execute(plan: StepPlan): Promise<StepResult>;
  /**
   * One batch of checked rows (step-batches.ts checkRow against `layout`): returns the logits of its rows whose
   * rowResult is 'logits' and the tokens (decodeSteps per row) of those whose rowResult is 'sampled', in row order.
   */
  runBatch(rows: SequenceWork[], decodeSteps: number): Promise<BatchOutput>;
  memory(): RunnerMemory;
  /** Writes an adapter (PEFT layout) into a slot (1 .. numAdapterSlots - 1); the next run sees it. */
  loadAdapterSlot(slot: number, weights: LoraWeights): void | Promise<void>;
  /** Fills a slot in place through `fill` (the compressed-adapter decoder's interface, see AdapterSlotStacks.writeWith). */
  fillAdapterSlot(slot: number, rank: number, scale: number, fill: (stacks: AdapterSlotStacks) => void): void | Promise<void>;
  clearAdapterSlot(slot: number): void | Promise<void>;
  release(): Promise<void>;
}

/** How a runner keeps the KV cache and where it samples; resolved once from the config (runner-kind.ts). */
export type RunnerKind = 'host-kv' | 'loop-decode' | 'device-kv';

export type Device = 'cpu' | 'cuda' | 'webgpu';

export interface RunnerOptions {
  /** A converted model directory (manifest.json). */
  modelDir: string;
  device?: Device;
  /** ORT intra-op threads; default: all cores. */
  intraOpThreads?: number;
  /** Whether those threads spin between kernels (open-session.ts); default true (ONNX Runtime's default). */
  intraOpSpinning?: boolean;
  /** Memory for the KV cache, in bytes. */
  kvCacheBytes?: number;
  blockSizeTokens?: number;
  /** Adapter device slots including slot 0 (base model). */
  numAdapterSlots?: number;
  maxAdapterRank?: number;
  /**
   * A quantized model with a packed LoRA graph runs its LoRA batches on it (cheaper on decode batches; default true);
   * false: the per-row gather graph (e.g. as the reference for runners that use that graph).
   */
  packedLora?: boolean;
  /**
   * host-kv: open the multi-LoRA session on the first batch with an adapter instead of at create (the serving worker
   * does, so a server that serves no adapter holds one session; default false).
   */
  loraSessionOnFirstUse?: boolean;
  /** Pad one-row steps to two rows (step-inputs.ts padSingleRow); default: where this CPU's kernels need it (single-row-padding.ts). */
  padSingleRows?: boolean;
  /** loop-decode: the largest number of decode steps one run may take (StepPlan.decodeSteps). Default 64. */
  maxDecodeStepsPerRun?: number;
  /** In-process only (functions): the host-KV batch path's instrumentation for benchmarks; the device-KV runner has none. */
  hooks?: HostKvHooks;
}

export interface RunnerMemory {
  weightsBytes: number;
  kvCacheBytes: number;
  /** The fp32 slot stacks, plus the most the packed copies can take (PackedLoraStacks.maxBytes) when they are used. */
  adapterSlotBytes: number;
}

export const DEFAULT_KV_CACHE_BYTES = 512 * 1024 * 1024;
