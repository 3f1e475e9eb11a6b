import { describe, expect, test } from 'vitest';
import { resolveRunnerKind } from './runner-kind.ts';

const ONE = { tp: 1, pp: 1, remoteWorkers: false };

describe('resolveRunnerKind', () => {
  test('from the device and the decode steps per run, for the whole model in one worker thread', () => {
    expect(resolveRunnerKind({ ...ONE })).toBe('host-kv');
    expect(resolveRunnerKind({ ...ONE, device: 'cpu' })).toBe('host-kv');
    expect(resolveRunnerKind({ ...ONE, device: 'cuda' })).toBe('loop-decode');
    expect(resolveRunnerKind({ ...ONE, device: 'cpu', decodeStepsPerRun: 4 })).toBe('loop-decode');
    expect(resolveRunnerKind({ ...ONE, device: 'webgpu' })).toBe('device-kv');
    expect(resolveRunnerKind({ ...ONE, device: 'webgpu', decodeStepsPerRun: 4 })).toBe('loop-decode');
  });

  test('a split model and remote workers are host-kv; asking them for another kind is CONFIG_INVALID', () => {
    expect(resolveRunnerKind({ device: 'webgpu', tp: 2, pp: 1, remoteWorkers: false })).toBe('host-kv');
    expect(resolveRunnerKind({ ...ONE, device: 'webgpu', remoteWorkers: true })).toBe('host-kv');
    expect(() => resolveRunnerKind({ device: 'cuda', tp: 1, pp: 2, remoteWorkers: false })).toThrow(/`tp` x `pp` must be 1 and no remote workers. Given: 1 x 2/);
    expect(() => resolveRunnerKind({ ...ONE, requested: 'device-kv', remoteWorkers: true })).toThrow(/device-resident KV cache .* Given: 1 x 1, remote workers/);
    expect(() => resolveRunnerKind({ requested: 'loop-decode', tp: 2, pp: 1, remoteWorkers: false })).toThrow(expect.objectContaining({ code: 'CONFIG_INVALID' }));
    expect(resolveRunnerKind({ ...ONE, device: 'cuda', requested: 'host-kv' })).toBe('host-kv');
  });
});
