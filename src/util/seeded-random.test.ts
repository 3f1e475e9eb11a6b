import { describe, expect, it } from 'vitest';
import { SeededRandom, seededNormals } from './seeded-random.ts';

function mean(xs: ArrayLike<number>): number {
  let sum = 0;
  for (let i = 0; i < xs.length; i++) sum += xs[i];
  return sum / xs.length;
}

function variance(xs: ArrayLike<number>): number {
  const m = mean(xs);
  let sum = 0;
  for (let i = 0; i < xs.length; i++) sum += (xs[i] - m) ** 2;
  return sum / (xs.length - 1);
}

describe('seeded random', () => {
  it('is reproducible per (seed, label) and differs across seeds and labels', () => {
    const draw = (seed: number, label?: string) => {
      const r = new SeededRandom(seed, label);
      return Array.from({ length: 1000 }, () => r.nextUint32());
    };
    expect(draw(7, 'a')).toEqual(draw(7, 'a'));
    expect(draw(7, 'a')).not.toEqual(draw(8, 'a'));
    expect(draw(7, 'a')).not.toEqual(draw(7, 'b'));
    expect(draw(7)).toEqual(draw(7, ''));
  });

  it('refuses seeds that are not non-negative safe integers', () => {
    for (const seed of [-1, 0.5, Number.NaN, 2 ** 53]) expect(() => new SeededRandom(seed)).toThrow(/seed must be a non-negative integer/);
  });

  it('uniforms are in the open interval (0, 1), with mean 1/2, variance 1/12 and equal bins', () => {
    const r = new SeededRandom(7);
    const xs = Array.from({ length: 20_000 }, () => r.nextUniform());
    expect(Math.min(...xs)).toBeGreaterThan(0);
    expect(Math.max(...xs)).toBeLessThan(1);
    expect(mean(xs)).toBeCloseTo(0.5, 2);
    expect(variance(xs)).toBeCloseTo(1 / 12, 2);
    const bins = new Array(10).fill(0);
    for (const x of xs) bins[Math.floor(x * 10)]++;
    // chi-square with 9 degrees of freedom: p ~ 0.001 at 27.9
    expect(bins.reduce((s, o) => s + (o - 2000) ** 2 / 2000, 0)).toBeLessThan(27.9);
  });

  it('nextInt(n) covers [0, n) and nothing else', () => {
    const r = new SeededRandom(1);
    const seen = new Array(7).fill(0);
    for (let i = 0; i < 7000; i++) seen[r.nextInt(7)]++;
    expect(seen.every((c) => c > 800 && c < 1200)).toBe(true);
  });

  it('normals (Box–Muller and the polar bulk fill) have mean 0, variance 1 and ~68% within one sigma', () => {
    const r = new SeededRandom(3);
    const boxMuller = Float64Array.from({ length: 40_000 }, () => r.nextNormal());
    const polar = seededNormals(40_000, 3);
    for (const xs of [boxMuller, polar]) {
      expect(Math.abs(mean(xs))).toBeLessThan(0.02);
      expect(variance(xs)).toBeGreaterThan(0.97);
      expect(variance(xs)).toBeLessThan(1.03);
      expect(Array.from(xs).filter((x) => Math.abs(x) < 1).length / xs.length).toBeCloseTo(0.6827, 1);
    }
    const scaled = new SeededRandom(3).fillNormal(new Float32Array(20_000), 0.5, 2);
    expect(mean(scaled)).toBeCloseTo(2, 1);
    expect(Math.sqrt(variance(scaled))).toBeCloseTo(0.5, 1);
  });
});
