import { describe, expect, it } from 'vitest';
import { createPrng, prngFromState } from './prng.ts';

describe('prng', () => {
  it('is a pure function of the seed, and distinct seeds (also above 2^32) give distinct streams', () => {
    const draw = (seed: number): number[] => {
      const p = createPrng(seed);
      return Array.from({ length: 8 }, () => p.nextFloat());
    };
    expect(draw(42)).toEqual(draw(42));
    const seeds = [0, 1, 2, 2 ** 32, 2 ** 32 + 1, Number.MAX_SAFE_INTEGER];
    const firsts = new Set(seeds.map((s) => draw(s)[0]));
    expect(firsts.size).toBe(seeds.length);
  });

  it('draws look uniform in [0, 1) and state round-trips', () => {
    const p = createPrng(3);
    const bins = new Array<number>(10).fill(0);
    for (let i = 0; i < 50_000; i++) {
      const u = p.nextFloat();
      if (!(u >= 0 && u < 1)) throw new Error(`draw ${u} outside [0, 1)`);
      bins[Math.floor(u * 10)]++;
    }
    bins.forEach((b) => expect(Math.abs(b / 50_000 - 0.1)).toBeLessThan(0.006));
    const q = prngFromState(p.state());
    expect(q.nextFloat()).toBe(p.nextFloat());
  });
});
