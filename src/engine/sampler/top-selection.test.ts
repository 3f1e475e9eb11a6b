import { describe, expect, it } from 'vitest';
import { argmax, selectNucleus, selectTopK, topNSorted } from './top-selection.ts';
import { createPrng } from './prng.ts';

function randomValues(n: number, seed: number, distinct: number): Float64Array {
  const prng = createPrng(seed);
  const v = new Float64Array(n);
  for (let i = 0; i < n; i++) v[i] = Math.floor(prng.nextFloat() * distinct) / 7; // repeated values: ties
  return v;
}

const identity = (n: number): Int32Array => Int32Array.from({ length: n }, (_, i) => i);

describe('top selection', () => {
  it('argmax breaks ties to the lowest index', () => {
    expect(argmax(Float32Array.of(1, 5, 5, 2), 4)).toBe(1);
    expect(argmax(Float32Array.of(-3, -1, -2), 3)).toBe(1);
  });

  it('selectTopK keeps exactly the k largest values (ties allowed) for many random arrays', () => {
    for (let seed = 0; seed < 40; seed++) {
      const n = 1 + (seed * 37) % 300;
      const values = randomValues(n, seed, seed % 2 === 0 ? 10 : 1000);
      const k = 1 + (seed * 13) % n;
      const idx = identity(n);
      expect(selectTopK(values, idx, n, k)).toBe(k);
      const chosen = Array.from(idx.subarray(0, k), (i) => values[i]).sort((a, b) => b - a);
      const expected = Array.from(values).sort((a, b) => b - a).slice(0, k);
      expect(chosen).toEqual(expected);
      expect(new Set(idx).size).toBe(n); // still a permutation
    }
  });

  it('selectNucleus returns the smallest top set reaching the target mass', () => {
    for (let seed = 0; seed < 40; seed++) {
      const n = 1 + (seed * 53) % 400;
      const w = randomValues(n, seed + 100, seed % 3 === 0 ? 5 : 10000).map((x) => Math.exp(x));
      const total = w.reduce((a, b) => a + b, 0);
      const p = 0.05 + ((seed * 0.17) % 0.9);
      const idx = identity(n);
      const m = selectNucleus(w, idx, n, p * total);
      const sorted = Array.from(w).sort((a, b) => b - a);
      let acc = 0;
      let expectedM = 0;
      while (expectedM < n && acc < p * total) acc += sorted[expectedM++];
      expect(m).toBe(expectedM);
      const chosen = Array.from(idx.subarray(0, m), (i) => w[i]).sort((a, b) => b - a);
      expect(chosen).toEqual(sorted.slice(0, m));
    }
  });

  it('topNSorted returns the n largest sorted descending, lower id first on ties', () => {
    const v = Float32Array.of(3, 9, 1, 9, 7, 3);
    expect(topNSorted(v, v.length, 4)).toEqual([1, 3, 4, 0]);
    expect(topNSorted(v, v.length, 0)).toEqual([]);
    expect(topNSorted(v, v.length, 10)).toEqual([1, 3, 4, 0, 5, 2]);
  });
});
