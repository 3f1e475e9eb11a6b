import { DeviceKvRunner } from './device-kv-runner.ts';
import { LoopDecodeRunner } from './loop-decode-runner.ts';
import { ModelRunner } from './model-runner.ts';
import type { RunnerKind, RunnerOptions, StepRunner } from './step-runner.ts';

/** The StepRunner implementation of each kind (step-runner.ts). */
export function createStepRunner(kind: RunnerKind, options: RunnerOptions): Promise<StepRunner> {
  switch (kind) {
    case 'host-kv':
      return ModelRunner.create(options);
    case 'loop-decode':
      return LoopDecodeRunner.create(options);
    case 'device-kv':
      return DeviceKvRunner.create(options);
  }
}
