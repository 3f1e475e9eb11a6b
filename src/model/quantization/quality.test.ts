import { describe, expect, it } from 'vitest';
import { compareLogits } from './quality.ts';

describe('compareLogits', () => {
  it('identical logits: KL 0, full agreement, no difference', () => {
    const ref = Float32Array.of(0.1, 2, -1, 3, 3.5, 0);
    expect(compareLogits(ref, ref, 3)).toEqual({ positions: 2, top1Agreement: 1, meanKl: 0, maxAbsDiff: 0 });
  });

  it('matches a hand-computed KL', () => {
    // row 0: p = softmax([0, ln 3]) = [1/4, 3/4], q = softmax([0, 0]) = [1/2, 1/2]; argmax 1 vs 0
    // KL = 1/4 ln(1/2) + 3/4 ln(3/2); row 1 identical
    const ref = Float32Array.of(0, Math.log(3), 1, 2);
    const test = Float32Array.of(0, 0, 1, 2);
    const result = compareLogits(ref, test, 2);
    const kl = 0.25 * Math.log(0.5) + 0.75 * Math.log(1.5);
    expect(result.positions).toBe(2);
    expect(result.top1Agreement).toBe(0.5);
    expect(result.meanKl).toBeCloseTo(kl / 2, 7);
    expect(result.maxAbsDiff).toBeCloseTo(Math.log(3), 6);
  });

  it('a constant shift of the logits leaves the distribution, so KL, unchanged', () => {
    const ref = Float32Array.of(1, -2, 0.5, 4);
    const shifted = ref.map((x) => x + 5);
    const result = compareLogits(ref, shifted, 4);
    expect(result.meanKl).toBeLessThan(1e-6);
    expect(result.top1Agreement).toBe(1);
    expect(result.maxAbsDiff).toBe(5);
  });

  it('rejects lengths that do not match', () => {
    expect(() => compareLogits(new Float32Array(4), new Float32Array(6), 2)).toThrowError(/`test.length` must equal ref.length \(4\)/);
    expect(() => compareLogits(new Float32Array(5), new Float32Array(5), 2)).toThrowError(/a positive multiple of vocab/);
  });
});
