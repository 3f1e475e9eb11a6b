import { describe, expect, test } from 'vitest';
import { parseBenchArgs } from './cli-args.ts';

describe('parseBenchArgs', () => {
  test('defaults to quick mode and all cases', () => {
    expect(parseBenchArgs([])).toEqual({ mode: 'quick', only: null, help: false });
  });

  test('reads the mode and --only lists in both spellings', () => {
    expect(parseBenchArgs(['--full', '--only', 'quantization,memory-bandwidth'])).toEqual({ mode: 'full', only: ['quantization', 'memory-bandwidth'], help: false });
    expect(parseBenchArgs(['--only=a', '--only', 'b', '--quick'])).toEqual({ mode: 'quick', only: ['a', 'b'], help: false });
  });

  test('rejects conflicting modes, an empty --only and unknown flags, naming what was given', () => {
    expect(() => parseBenchArgs(['--quick', '--full'])).toThrow(/exclude each other/);
    expect(() => parseBenchArgs(['--only'])).toThrow(/`--only` needs/);
    expect(() => parseBenchArgs(['--only', '--full'])).toThrow(/`--only` needs/);
    expect(() => parseBenchArgs(['--only=,'])).toThrow(/Given: ","/);
    expect(() => parseBenchArgs(['--fast'])).toThrow(/Given: "--fast"/);
  });
});
