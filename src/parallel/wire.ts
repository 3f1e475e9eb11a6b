import type { ExecutorLayout, SampledTokens, SequenceWork } from '../engine/executor.ts';
import type { LoraWeights } from '../model/runner/adapter-slot-stacks.ts';
import type { Device, RunnerKind } from '../model/runner/step-runner.ts';
import type { ErrorCode } from '../errors.ts';
import type { SegmentKind } from './shard-graphs.ts';
import type { ShardPosition } from './shard-layout.ts';

/**
 * Messages between the controller and a shard worker, the same over both transports (worker threads: structured
 * clone with transferred/shared buffers; remote: tessera.shard.v1 protobuf frames). Typed, no string RPC names.
 */
export interface ShardSpec {
  /** Converted model directory as seen by the worker. */
  modelDir: string;
  position: ShardPosition;
  numKvBlocks: number;
  blockSizeTokens: number;
  numAdapterSlots: number;
  maxAdapterRank: number;
  device?: Device;
  intraOpThreads?: number;
  intraOpSpinning?: boolean;
  /**
   * The runner a whole-model worker (tp = pp = 1) hosts (model/runner/runner-kind.ts); a split model's workers are
   * host-kv. Thread workers only: the remote frames do not carry it (remote workers are host-kv).
   */
  runnerKind: RunnerKind;
  /** loop-decode: the largest k a run may ask for. */
  maxDecodeStepsPerRun?: number;
}

export interface ShardMemory {
  weightsBytes: number;
  kvCacheBytes: number;
  adapterSlotBytes: number;
}

/** One piece of work for one shard: a whole pipeline stage (tp = 1) or one tensor-parallel segment. */
export interface SegmentRef {
  kind: SegmentKind;
  /** Layer of an attention/mlp segment; 0 otherwise. */
  layer: number;
}

export interface RunRequest {
  stepId: number;
  segment: SegmentRef;
  rows: SequenceWork[];
  /** [B, S, hidden] float32 residual stream entering the segment; null where the segment starts from token ids. */
  hidden: Float32Array | null;
  /** Decode steps in this run (loop-decode workers only; default 1). */
  decodeSteps?: number;
}

/** A segment's result; for the last piece of the model, a BatchOutput (model/runner/step-batches.ts) in wire form. */
export interface RunReply {
  /**
   * hidden / partial [B, S, hidden], or logits [rows, vocab slice] for the last piece: of the request's rows whose
   * rowResult is 'logits', in request row order.
   */
  output: Float32Array;
  /** [rows] log-sum-exp of each logits row (of the vocab slice), when the last piece computes it in its graph. */
  logSumExp?: Float32Array;
  /** The tokens of the request's rows whose rowResult is 'sampled', [rows, steps] in request row order (thread workers). */
  sampledTokens?: SampledTokens;
  runtimeMs: number;
}

export type ControllerMessage =
  | { type: 'init'; id: number; spec: ShardSpec }
  | { type: 'run'; id: number; run: RunRequest }
  | { type: 'load-adapter'; id: number; slot: number; weights: LoraWeights }
  /** A whole `.cpeft` file, decoded in the worker (its shard of it) into the slot stacks. */
  | { type: 'load-compressed-adapter'; id: number; slot: number; bytes: Uint8Array }
  | { type: 'clear-adapter'; id: number; slot: number }
  | { type: 'shutdown'; id: number };

export type WorkerMessage =
  | { type: 'ready'; id: number; memory: ShardMemory; modelId: string; layout: Omit<ExecutorLayout, 'numKvBlocks' | 'blockSizeTokens'> }
  | { type: 'result'; id: number; reply: RunReply }
  | { type: 'done'; id: number }
  | { type: 'error'; id: number; code: ErrorCode; message: string };

/** Distributes the Omit over the union so `id` can be left out of a message. */
export type WithoutId<T> = T extends unknown ? Omit<T, 'id'> : never;
