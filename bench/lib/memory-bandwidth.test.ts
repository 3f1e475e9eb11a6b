import { describe, expect, test } from 'vitest';
import { measureBandwidth } from './memory-bandwidth.ts';

describe('measureBandwidth', () => {
  // Small arrays: this checks the bookkeeping and that every thread did its share, not the machine.
  const arrayBytes = 1 << 20;
  const n = arrayBytes / 8;
  const source = (i: number) => (i % 1024) * 0.5;

  test('copy over 2 threads: each worker copied its own slice (checksums of the slice ends add up)', async () => {
    const r = await measureBandwidth({ op: 'copy', arrayBytes, numThreads: 2, repetitions: 3 });
    const half = n / 2;
    expect(r.checksum).toBe(source(0) + source(half - 1) + source(half) + source(n - 1));
    expect(r.repetitionMs).toHaveLength(3);
    expect(r.bestGBps).toBeGreaterThan(0);
    expect(r.bestGBps).toBeGreaterThanOrEqual(r.medianGBps);
    // counted bytes = 2 * arrayBytes per repetition
    expect(r.bestGBps).toBeCloseTo((2 * arrayBytes) / (Math.min(...r.repetitionMs) * 1e6), 6);
  });

  test('read sums the whole array across threads', async () => {
    const r = await measureBandwidth({ op: 'read', arrayBytes, numThreads: 3, repetitions: 1 });
    let expected = 0;
    for (let i = 0; i < n; i++) expected += source(i);
    expect(r.checksum).toBe(expected);
  });

  test('triad writes b + 3c (c = 1) and counts three arrays', async () => {
    const r = await measureBandwidth({ op: 'triad', arrayBytes, numThreads: 1, repetitions: 2 });
    expect(r.checksum).toBe(source(0) + 3 + source(n - 1) + 3);
    expect(r.bestGBps).toBeCloseTo((3 * arrayBytes) / (Math.min(...r.repetitionMs) * 1e6), 6);
  });

  test('rejects bad thread counts and arrays too small to split', async () => {
    await expect(measureBandwidth({ op: 'copy', arrayBytes, numThreads: 0, repetitions: 1 })).rejects.toThrow(/`numThreads` must be an integer >= 1. Given: 0/);
    await expect(measureBandwidth({ op: 'copy', arrayBytes: 64, numThreads: 4, repetitions: 1 })).rejects.toThrow(/`arrayBytes`/);
  });
});
