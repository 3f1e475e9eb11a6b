import type { Executor, ExecutorLayout, StepPlan, StepResult } from '../engine/executor.ts';
import type { LoraWeights } from '../model/runner/adapter-slot-stacks.ts';
import type { RunnerMemory, RunnerOptions } from '../model/runner/model-runner.ts';
import { ShardController, type ControllerOptions } from './controller.ts';

/**
 * The engine's Executor for a model in worker threads on this host: a ShardController over thread links. The
 * default (tp = pp = 1) is one worker holding the whole model, the main thread staying free for gRPC and scheduling
 * while ORT runs. A worker that dies fails every pending call with WORKER_UNAVAILABLE instead of hanging, and is
 * restarted.
 */
export class ThreadExecutor implements Executor {
  private constructor(readonly controller: ShardController) {}

  static async start(options: RunnerOptions & Omit<ControllerOptions, 'openLink'>): Promise<ThreadExecutor> {
    return new ThreadExecutor(await ShardController.start(options));
  }

  get layout(): ExecutorLayout {
    return this.controller.layout;
  }

  get memory(): RunnerMemory {
    return this.controller.memory;
  }

  get modelId(): string {
    return this.controller.modelId;
  }

  execute(plan: StepPlan): Promise<StepResult> {
    return this.controller.execute(plan);
  }

  loadAdapterSlot(slot: number, weights: LoraWeights): Promise<void> {
    return this.controller.loadAdapterSlot(slot, weights);
  }

  /** Sends a `.cpeft` file's bytes; each worker checks and decodes its part straight into its slot stacks. */
  loadCompressedSlot(slot: number, bytes: Uint8Array): Promise<void> {
    return this.controller.loadCompressedSlot(slot, bytes);
  }

  clearAdapterSlot(slot: number): Promise<void> {
    return this.controller.clearAdapterSlot(slot);
  }

  shutdown(): Promise<void> {
    return this.controller.shutdown();
  }
}
