import { describe, expect, test } from 'vitest';
import { median, quantile, significant, timeMs } from './stats.ts';

describe('stats', () => {
  test('median of odd and even lists, unsorted input left untouched', () => {
    const values = [5, 1, 4, 2, 3];
    expect(median(values)).toBe(3);
    expect(values).toEqual([5, 1, 4, 2, 3]);
    expect(median([4, 1, 3, 2])).toBe(2.5);
  });

  test('quantile interpolates linearly and rejects bad input', () => {
    expect(quantile([10, 20, 30, 40, 50], 0)).toBe(10);
    expect(quantile([10, 20, 30, 40, 50], 1)).toBe(50);
    expect(quantile([10, 20, 30, 40, 50], 0.1)).toBeCloseTo(14, 10);
    expect(() => quantile([], 0.5)).toThrow(/values.length/);
    expect(() => quantile([1], 1.5)).toThrow(/`q` must be >= 0 and <= 1. Given: 1.5/);
  });

  test('significant rounds to significant digits', () => {
    expect(significant(123456, 3)).toBe(123000);
    expect(significant(0.00123456, 2)).toBe(0.0012);
    expect(significant(0)).toBe(0);
  });

  test('timeMs measures the awaited work', async () => {
    const ms = await timeMs(() => new Promise((resolve) => setTimeout(resolve, 30)));
    expect(ms).toBeGreaterThanOrEqual(25);
    expect(ms).toBeLessThan(2000);
  });
});
