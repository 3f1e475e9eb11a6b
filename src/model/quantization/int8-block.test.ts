import { describe, expect, it } from 'vitest';
import { INT8_ZERO_POINT, dequantizeInt8, quantizeInt8 } from './int8-block.ts';
import { seededNormals } from '../../util/seeded-random.ts';

describe('quantizeInt8', () => {
  it('writes [N, kBlocks, blockSize] codes offset by 128 with one symmetric scale per block, padding = code 0', () => {
    // K = 20, block 16: row 0 block 0 maxabs 2.54 -> scale 0.02; block 1 holds 4 values and 12 padding codes
    const w = new Float32Array(2 * 20);
    w.set([1, -2.54, 0.3], 0);
    w[16] = -0.5; // row 0, block 1: scale 0.5/127
    const q = quantizeInt8(w, 2, 20, { blockSize: 16 });
    expect(q.packed.length).toBe(2 * 2 * 16);
    expect(Array.from(q.packed.subarray(0, 4))).toEqual([128 + 50, 128 - 127, 128 + 15, 128]);
    expect(q.scales[0]).toBeCloseTo(0.02, 7);
    expect(q.packed[16]).toBe(128 - 127);
    expect(Array.from(q.packed.subarray(20, 32))).toEqual(new Array(12).fill(INT8_ZERO_POINT));
    expect(q.scales[2]).toBe(1); // row 1, block 0: all zeros
  });

  it('round trips within scale/2 per block and is odd-symmetric', () => {
    const N = 40;
    const K = 77;
    const w = seededNormals(N * K, 8, 0.1);
    const q = quantizeInt8(w, N, K, { blockSize: 32 });
    const back = dequantizeInt8(q);
    const kBlocks = Math.ceil(K / 32);
    let worst = 0; // largest |x - deq| / scale
    for (let n = 0; n < N; n++) {
      for (let k = 0; k < K; k++) worst = Math.max(worst, Math.abs(back[n * K + k] - w[n * K + k]) / q.scales[n * kBlocks + Math.floor(k / 32)]);
    }
    expect(worst).toBeLessThanOrEqual(0.5 + 1e-6);
    expect(worst).toBeGreaterThan(0.4);
    const negated = quantizeInt8(w.map((x) => -x), N, K, { blockSize: 32 });
    expect(Array.from(negated.packed)).toEqual(Array.from(q.packed).map((b) => 2 * INT8_ZERO_POINT - b));
    const codes = Array.from(q.packed).map((b) => b - INT8_ZERO_POINT);
    expect(Math.max(...codes.map(Math.abs))).toBe(127);
    expect(Math.min(...codes)).toBeGreaterThanOrEqual(-127); // never -128: |code| <= 127 keeps products symmetric
  });

  it('refuses block sizes MatMulNBits does not take', () => {
    expect(() => quantizeInt8(new Float32Array(8), 1, 8, { blockSize: 24 })).toThrow(/blockSize/);
  });
});
