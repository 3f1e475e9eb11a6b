import { describe, expect, it } from 'vitest';
import { createAdapterPicker, createRng, createZipfSampler, exponentialGapMs, parseAdapterDist, parseLengthDist, sampleLength } from './random.ts';

const mean = (xs: number[]) => xs.reduce((s, x) => s + x, 0) / xs.length;
const variance = (xs: number[]) => {
  const m = mean(xs);
  return xs.reduce((s, x) => s + (x - m) ** 2, 0) / (xs.length - 1);
};

describe('Poisson arrivals', () => {
  it('gaps are exponential with mean 1/rate (coefficient of variation 1, memoryless tail)', () => {
    const rng = createRng(11);
    const ratePerS = 20;
    const gaps = Array.from({ length: 50_000 }, () => exponentialGapMs(rng, ratePerS));
    expect(Math.min(...gaps)).toBeGreaterThanOrEqual(0);
    expect(mean(gaps)).toBeGreaterThan(48.5);
    expect(mean(gaps)).toBeLessThan(51.5);
    expect(Math.sqrt(variance(gaps)) / mean(gaps)).toBeCloseTo(1, 1);
    // P(gap > t) = exp(-rate t): at t = 100 ms that is e^-2.
    expect(gaps.filter((g) => g > 100).length / gaps.length).toBeCloseTo(Math.exp(-2), 2);
  });

  it('counts per one-second window have mean == variance == rate (Poisson)', () => {
    const rng = createRng(12);
    const ratePerS = 8;
    const windows = 4000;
    const counts = new Array(windows).fill(0);
    for (let t = exponentialGapMs(rng, ratePerS); t < windows * 1000; t += exponentialGapMs(rng, ratePerS)) counts[Math.floor(t / 1000)]++;
    expect(mean(counts)).toBeGreaterThan(7.8);
    expect(mean(counts)).toBeLessThan(8.2);
    expect(variance(counts) / mean(counts)).toBeGreaterThan(0.9);
    expect(variance(counts) / mean(counts)).toBeLessThan(1.1);
  });
});

describe('Zipf', () => {
  it('draws rank k with probability proportional to 1/k^s', () => {
    const n = 8;
    const s = 1.2;
    const draw = createZipfSampler(n, s);
    const rng = createRng(5);
    const counts = new Array(n).fill(0);
    const draws = 200_000;
    for (let i = 0; i < draws; i++) counts[draw(rng)]++;
    let h = 0;
    for (let k = 1; k <= n; k++) h += k ** -s;
    for (let k = 1; k <= n; k++) {
      const expected = (k ** -s / h) * draws;
      // within 5 standard deviations of the binomial count
      const sd = Math.sqrt(expected * (1 - expected / draws));
      expect(Math.abs(counts[k - 1] - expected)).toBeLessThan(5 * sd);
    }
    expect(counts[0] / counts[1]).toBeCloseTo(2 ** s, 1);
  });

  it('s = 0 is uniform; one item always draws 0; bad n is rejected', () => {
    const draw = createZipfSampler(4, 0);
    const rng = createRng(9);
    const counts = [0, 0, 0, 0];
    for (let i = 0; i < 40_000; i++) counts[draw(rng)]++;
    for (const c of counts) expect(Math.abs(c - 10_000)).toBeLessThan(500);
    const one = createZipfSampler(1, 2);
    expect(Array.from({ length: 100 }, () => one(rng)).every((k) => k === 0)).toBe(true);
    expect(() => createZipfSampler(0, 1)).toThrow(/`n` must be an integer >= 1. Given: 0/);
  });

  it('the adapter picker favours the first id under zipf and returns null without adapters', () => {
    const pick = createAdapterPicker(['hot', 'warm', 'cold'], parseAdapterDist('zipf:2'))!;
    const rng = createRng(1);
    const seen: Record<string, number> = { hot: 0, warm: 0, cold: 0 };
    for (let i = 0; i < 10_000; i++) seen[pick(rng)]++;
    expect(seen.hot).toBeGreaterThan(seen.warm);
    expect(seen.warm).toBeGreaterThan(seen.cold);
    expect(seen.hot / seen.warm).toBeCloseTo(4, 0);
    expect(createAdapterPicker([], { kind: 'uniform' })).toBeNull();
    expect(() => parseAdapterDist('zipf:-1')).toThrow(/--adapter-dist must be uniform or zipf:s with s >= 0. Given: "zipf:-1"/);
    expect(() => parseAdapterDist('pareto')).toThrow(/--adapter-dist/);
  });
});

describe('length distributions', () => {
  it('parses fixed, uniform and normal and rejects the rest naming the flag and value', () => {
    expect(parseLengthDist('prompt-tokens', '64')).toEqual({ kind: 'fixed', tokens: 64 });
    expect(parseLengthDist('prompt-tokens-dist', 'uniform:4:9')).toEqual({ kind: 'uniform', minTokens: 4, maxTokens: 9 });
    expect(parseLengthDist('prompt-tokens-dist', 'normal:100:15.5')).toEqual({ kind: 'normal', meanTokens: 100, stddevTokens: 15.5 });
    expect(() => parseLengthDist('prompt-tokens', '0')).toThrow(/--prompt-tokens: the token count must be a number >= 1. Given: "0"/);
    expect(() => parseLengthDist('output-tokens-dist', 'uniform:9:4')).toThrow(/--output-tokens-dist: uniform:a:b needs a <= b. Given: "uniform:9:4"/);
    expect(() => parseLengthDist('output-tokens-dist', 'uniform:1.5:4')).toThrow(/must be an integer/);
    expect(() => parseLengthDist('output-tokens-dist', 'gamma:1:2')).toThrow(/--output-tokens-dist must be N, uniform:a:b or normal:mu:sigma/);
  });

  it('uniform covers [a, b] inclusive evenly; normal centres on mu; both clamp to [1, max]', () => {
    const rng = createRng(2);
    const u = parseLengthDist('x', 'uniform:3:6');
    const counts = new Map<number, number>();
    for (let i = 0; i < 8000; i++) {
      const n = sampleLength(u, rng, 1000);
      counts.set(n, (counts.get(n) ?? 0) + 1);
    }
    expect([...counts.keys()].sort()).toEqual([3, 4, 5, 6]);
    for (const c of counts.values()) expect(Math.abs(c - 2000)).toBeLessThan(200);
    const nrm = parseLengthDist('x', 'normal:50:10');
    const xs = Array.from({ length: 20_000 }, () => sampleLength(nrm, rng, 1000));
    expect(xs.every(Number.isInteger)).toBe(true);
    expect(mean(xs)).toBeCloseTo(50, 0);
    const wide = parseLengthDist('x', 'normal:5:50');
    const ws = Array.from({ length: 2000 }, () => sampleLength(wide, rng, 20));
    expect(Math.min(...ws)).toBe(1);
    expect(Math.max(...ws)).toBe(20);
    expect(sampleLength(parseLengthDist('x', '64'), rng, 16)).toBe(16);
  });
});
