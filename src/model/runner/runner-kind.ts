import { TesseraError } from '../../errors.ts';
import type { Device, RunnerKind } from './step-runner.ts';

export interface RunnerKindInput {
  /** Asked for explicitly (tests, benches); checked against the topology. Default: chosen from the device. */
  requested?: RunnerKind;
  device?: Device;
  /** The engine's decode steps per run (> 1 needs the loop-decode runner). Default 1. */
  decodeStepsPerRun?: number;
  tp: number;
  pp: number;
  /** Workers are remote processes (their protocol carries no runner kind: they run host-kv). */
  remoteWorkers: boolean;
}

/**
 * The runner kind for a serving configuration, decided here once and carried to the workers in their ShardSpec:
 *   loop-decode  --device cuda or --decode-steps-per-run > 1 (every CUDA run copies its inputs over PCIe: k steps per copy)
 *   device-kv    --device webgpu (outputs can stay in GPU buffers between runs)
 *   host-kv      everything else, and every model split over several workers or served by remote workers
 * loop-decode and device-kv hold the whole model in one worker thread; asking for them otherwise is CONFIG_INVALID.
 */
export function resolveRunnerKind(input: RunnerKindInput): RunnerKind {
  const whole = input.tp === 1 && input.pp === 1;
  const chosen: RunnerKind =
    input.requested ??
    (input.device === 'cuda' || (input.decodeStepsPerRun ?? 1) > 1 ? 'loop-decode' : input.device === 'webgpu' && whole && !input.remoteWorkers ? 'device-kv' : 'host-kv');
  if (chosen !== 'host-kv' && (!whole || input.remoteWorkers)) {
    const what = chosen === 'loop-decode' ? 'k decode steps per run need' : 'a device-resident KV cache needs';
    throw new TesseraError(
      'CONFIG_INVALID',
      `${what} the whole model in one worker thread: \`tp\` x \`pp\` must be 1 and no remote workers. Given: ${input.tp} x ${input.pp}${input.remoteWorkers ? ', remote workers' : ''}`,
    );
  }
  return chosen;
}
