import type { ExecutorLayout, StepPlan, StepResult } from '../engine/executor.ts';
import type { LoraWeights } from '../model/runner/adapter-slot-stacks.ts';
import type { RunnerMemory, RunnerOptions } from '../model/runner/model-runner.ts';
import type { ErrorCode } from '../errors.ts';

/** Messages between the controller (main thread) and a runner worker. Typed, no string RPC names elsewhere. */
export type ControllerMessage =
  | { type: 'execute'; id: number; plan: StepPlan }
  | { type: 'load-adapter'; id: number; slot: number; weights: LoraWeights }
  | { type: 'clear-adapter'; id: number; slot: number }
  /** A whole `.cpeft` file, decoded in the worker straight into the slot stacks. */
  | { type: 'load-compressed-adapter'; id: number; slot: number; bytes: Uint8Array }
  | { type: 'shutdown'; id: number };

export type WorkerMessage =
  | { type: 'ready'; layout: ExecutorLayout; memory: RunnerMemory; modelId: string }
  | { type: 'init-error'; code: ErrorCode; message: string }
  | { type: 'result'; id: number; result: StepResult }
  | { type: 'done'; id: number }
  | { type: 'error'; id: number; code: ErrorCode; message: string };

export interface RunnerWorkerData {
  runner: RunnerOptions;
}
