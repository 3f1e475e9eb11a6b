import { describe, expect, it } from 'vitest';
import { percentile, summarize } from './latency-stats.ts';

describe('percentile (linear interpolation between order statistics)', () => {
  it('matches hand-computed values', () => {
    const oneToTen = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10];
    // h = 9 * p / 100: p50 -> 4.5 -> between 5 and 6; p90 -> 8.1 -> 9 + 0.1; p99 -> 8.91 -> 9 + 0.91
    expect(percentile(oneToTen, 50)).toBeCloseTo(5.5, 12);
    expect(percentile(oneToTen, 90)).toBeCloseTo(9.1, 12);
    expect(percentile(oneToTen, 99)).toBeCloseTo(9.91, 12);
    expect(percentile(oneToTen, 0)).toBe(1);
    expect(percentile(oneToTen, 100)).toBe(10);
    expect(percentile([10, 20], 25)).toBeCloseTo(12.5, 12);
    expect(percentile([42], 99)).toBe(42);
    expect(percentile([], 50)).toBeNaN();
  });

  it('an exact order statistic needs no interpolation', () => {
    const xs = Array.from({ length: 101 }, (_, i) => i * 2); // h = p exactly
    for (const p of [1, 17, 50, 90, 99]) expect(percentile(xs, p)).toBe(2 * p);
  });
});

describe('summarize', () => {
  it('sorts a copy, and reports count, mean, min, max and ordered percentiles', () => {
    const values = [9, 1, 5, 3, 7, 100];
    const s = summarize(values)!;
    expect(values).toEqual([9, 1, 5, 3, 7, 100]);
    expect(s.count).toBe(6);
    expect(s.mean).toBeCloseTo(125 / 6, 12);
    expect(s.min).toBe(1);
    expect(s.max).toBe(100);
    expect(s.p50).toBeCloseTo(6, 12); // sorted 1 3 5 7 9 100: h = 2.5 -> 5 + 0.5 * 2
    expect(s.p90).toBeCloseTo(54.5, 12); // h = 4.5 -> 9 + 0.5 * 91
    expect(s.p50).toBeLessThanOrEqual(s.p90);
    expect(s.p90).toBeLessThanOrEqual(s.p99);
    expect(s.p99).toBeLessThanOrEqual(s.max);
    expect(summarize([])).toBeNull();
  });
});
