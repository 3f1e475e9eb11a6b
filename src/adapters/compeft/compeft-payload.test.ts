import { describe, expect, it } from 'vitest';
import { bitmapBytes, encodePayload, encodeRicePositions, MAX_RICE_K, signBytes, visitPayload, type PayloadLayout } from './compeft-payload.ts';
import { SeededRandom } from '../../util/seeded-random.ts';

function randomPattern(rng: SeededRandom, n: number, density: number): { positions: Uint32Array; negative: Uint8Array } {
  const pos: number[] = [];
  for (let i = 0; i < n; i++) if (rng.nextUniform() < density) pos.push(i);
  const negative = new Uint8Array(pos.length);
  for (let m = 0; m < pos.length; m++) negative[m] = rng.nextUniform() < 0.5 ? 1 : 0;
  return { positions: Uint32Array.from(pos), negative };
}

function decodeAll(bytes: Uint8Array, layout: PayloadLayout): { positions: number[]; negative: number[] } {
  const positions: number[] = [];
  const negative: number[] = [];
  visitPayload(bytes, 0, bytes.length, layout, (p, neg) => {
    positions.push(p);
    negative.push(neg);
  });
  return { positions, negative };
}

describe('compeft payload', () => {
  it('round-trips positions and signs exactly at many densities and sizes', () => {
    const rng = new SeededRandom(11);
    for (const n of [1, 7, 8, 9, 100, 1000, 20000]) {
      for (const density of [0, 0.001, 0.05, 0.1, 0.3, 0.6, 1]) {
        const { positions, negative } = randomPattern(rng, n, density);
        const enc = encodePayload(positions, negative, n);
        const got = decodeAll(enc.bytes, { encoding: enc.encoding, riceK: enc.riceK, nnz: positions.length, numElements: n });
        expect(got.positions).toEqual([...positions]);
        expect(got.negative).toEqual([...negative]);
      }
    }
  });

  it('handles extreme gaps: first and last element of a large tensor', () => {
    const n = 1 << 26;
    const positions = Uint32Array.of(0, n - 1);
    const enc = encodePayload(positions, Uint8Array.of(1, 0), n);
    expect(enc.encoding).toBe('rice');
    const got = decodeAll(enc.bytes, { encoding: 'rice', riceK: enc.riceK, nnz: 2, numElements: n });
    expect(got.positions).toEqual([0, n - 1]);
    expect(got.negative).toEqual([1, 0]);
    expect(enc.bytes.length).toBeLessThan(12);
  });

  it('picks the Rice parameter that gives the fewest bytes, and bitmap only when it is smaller', () => {
    const rng = new SeededRandom(5);
    const n = 16 * 1536;
    for (const density of [0.01, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.7]) {
      const { positions, negative } = randomPattern(rng, n, density);
      const enc = encodePayload(positions, negative, n);
      let bestRice = Infinity;
      for (let k = 0; k <= MAX_RICE_K; k++) bestRice = Math.min(bestRice, encodeRicePositions(positions, k).length);
      const posBytes = enc.bytes.length - signBytes(positions.length);
      expect(posBytes).toBe(Math.min(bestRice, bitmapBytes(n)));
      expect(enc.encoding).toBe(bestRice < bitmapBytes(n) ? 'rice' : 'bitmap');
      if (enc.encoding === 'rice') expect(encodeRicePositions(positions, enc.riceK).length).toBe(bestRice);
    }
    // Sparse patterns use Rice, dense ones the bitmap.
    expect(encodePayload(randomPattern(rng, n, 0.05).positions, new Uint8Array(0), n).encoding).toBe('rice');
    const dense = randomPattern(rng, n, 0.7);
    expect(encodePayload(dense.positions, dense.negative, n).encoding).toBe('bitmap');
  });

  it('Rice-coded positions come close to the entropy of a random pattern', () => {
    const rng = new SeededRandom(9);
    const n = 200_000;
    const p = 0.1;
    const { positions } = randomPattern(rng, n, p);
    const bitsPerElement = (encodeRicePositions(positions, 3).length * 8) / n;
    const q = positions.length / n; // empirical density: log2 C(n, nnz) ~ n H(q) is the bound
    const entropy = -q * Math.log2(q) - (1 - q) * Math.log2(1 - q);
    expect(bitsPerElement).toBeGreaterThan(entropy);
    expect(bitsPerElement).toBeLessThan(entropy * 1.1);
  });
});
