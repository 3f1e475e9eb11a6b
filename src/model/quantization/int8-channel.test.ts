import { describe, expect, it } from 'vitest';
import { dequantizeInt8, quantizeInt8 } from './int8-channel.ts';
import { seededNormals } from '../../util/seeded-random.ts';

describe('quantizeInt8', () => {
  it('writes B as [K, N] with one symmetric scale per output column', () => {
    // row 0: maxabs 2.54 -> scale 0.02 -> [50, -127, 15]; row 1: zeros -> scale 1
    const q = quantizeInt8(Float32Array.of(1, -2.54, 0.3, 0, 0, 0), 2, 3);
    expect(Array.from(q.weight)).toEqual([50, 0, -127, 0, 15, 0]);
    expect(q.scales[0]).toBeCloseTo(0.02, 7);
    expect(q.scales[1]).toBe(1);
    expect(Array.from(q.zeroPoints)).toEqual([0, 0]);
  });

  it('round trips within scale/2 and is odd-symmetric', () => {
    const N = 40;
    const K = 77;
    const w = seededNormals(N * K, 8, 0.1);
    const q = quantizeInt8(w, N, K);
    const back = dequantizeInt8(q);
    let worst = 0; // largest |x - deq| / scale
    for (let n = 0; n < N; n++) {
      for (let k = 0; k < K; k++) worst = Math.max(worst, Math.abs(back[n * K + k] - w[n * K + k]) / q.scales[n]);
    }
    expect(worst).toBeLessThanOrEqual(0.5 + 1e-6);
    expect(worst).toBeGreaterThan(0.4);
    const negated = quantizeInt8(w.map((x) => -x), N, K);
    expect(Array.from(negated.weight)).toEqual(Array.from(q.weight).map((x) => (x === 0 ? 0 : -x)));
    expect(Math.max(...Array.from(q.weight).map(Math.abs))).toBe(127);
  });
});
