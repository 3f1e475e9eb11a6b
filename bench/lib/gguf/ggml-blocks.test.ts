import { describe, expect, test } from 'vitest';
import { f16Value, f16BitsOf } from '../../../src/model/checkpoint/half-float.ts';
import { decodeGgml, encodeGgml } from './ggml-blocks.ts';

function gaussianish(n: number, seed: number): Float32Array {
  let s = seed >>> 0 || 1;
  const next = () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32);
  return Float32Array.from({ length: n }, () => (next() + next() + next() - 1.5) * 2);
}

/** f16 scale of each block as stored. */
function blockScale(bytes: Uint8Array, blockBytes: number, block: number): number {
  return f16Value(bytes[block * blockBytes] | (bytes[block * blockBytes + 1] << 8));
}

describe('ggml block encodings', () => {
  const x = gaussianish(32 * 24, 7);

  test('Q8_0: 34 bytes per 32 values, scale = max|x| / 127 (as f16), every value within half a step', () => {
    const bytes = encodeGgml('Q8_0', x, 96);
    expect(bytes.length).toBe((x.length / 32) * 34);
    const back = decodeGgml('Q8_0', bytes, x.length);
    for (let b = 0; b < x.length / 32; b++) {
      const block = x.subarray(b * 32, (b + 1) * 32);
      const amax = Math.max(...Array.from(block, Math.abs));
      const d = blockScale(bytes, 34, b);
      expect(d).toBe(f16Value(f16BitsOf(amax / 127)));
      // codes come from the float32 scale, decoding uses the f16 one: half a step plus the scale's rounding
      for (let j = 0; j < 32; j++) expect(Math.abs(back[b * 32 + j] - block[j])).toBeLessThanOrEqual(d / 2 + 127 * Math.abs(d - amax / 127) + 1e-7);
    }
  });

  test('Q4_0: 18 bytes per 32 values, value j in the low nibble of byte j and j + 16 in the high one, codes 0..15 around 8', () => {
    // One block whose largest-magnitude value is +4 (code 0 = -8 * d, d = -0.5) and whose other values are exact steps.
    const block = new Float32Array(32);
    for (let j = 0; j < 32; j++) block[j] = j === 0 ? 4 : -0.5 * ((j % 15) - 7); // codes 8 + (j % 15) - 7 in [1, 15]
    const bytes = encodeGgml('Q4_0', block, 32);
    expect(bytes.length).toBe(18);
    expect(blockScale(bytes, 18, 0)).toBe(-0.5);
    const code = (j: number) => (j === 0 ? 0 : 8 + (j % 15) - 7);
    for (let j = 0; j < 16; j++) expect(bytes[2 + j]).toBe(code(j) | (code(j + 16) << 4));
    expect(Array.from(decodeGgml('Q4_0', bytes, 32))).toEqual(Array.from(block));
  });

  test('Q4_0: on ordinary values every error is within half a step, except the clipped top of the opposite sign', () => {
    const bytes = encodeGgml('Q4_0', x, 32);
    const back = decodeGgml('Q4_0', bytes, x.length);
    for (let b = 0; b < x.length / 32; b++) {
      const block = x.subarray(b * 32, (b + 1) * 32);
      const d = Math.abs(blockScale(bytes, 18, b));
      for (let j = 0; j < 32; j++) {
        const err = Math.abs(back[b * 32 + j] - block[j]);
        if (Math.abs(block[j]) > 7 * d) expect(err).toBeLessThanOrEqual(Math.abs(block[j]) - 7 * d + 1e-3 * d); // clipped to 7 steps
        else expect(err).toBeLessThanOrEqual(d / 2 + 1e-3 * d);
      }
    }
  });

  test('all-zero blocks encode to zero scale and decode to zeros', () => {
    const zeros = new Float32Array(64);
    for (const type of ['Q8_0', 'Q4_0'] as const) expect(decodeGgml(type, encodeGgml(type, zeros, 64), 64).every((v) => v === 0)).toBe(true); // -0 counts
  });

  test('F32 is exact and F16 rounds to the nearest half', () => {
    expect(decodeGgml('F32', encodeGgml('F32', x, 32), x.length)).toEqual(x);
    const half = decodeGgml('F16', encodeGgml('F16', x, 32), x.length);
    for (let i = 0; i < x.length; i++) expect(half[i]).toBe(f16Value(f16BitsOf(x[i])));
  });

  test('rows that are not whole blocks are refused', () => {
    expect(() => encodeGgml('Q4_0', new Float32Array(48), 48)).toThrow(/multiple of 32/);
    expect(() => encodeGgml('Q8_0', new Float32Array(70), 32)).toThrow(/whole rows/);
  });
});
