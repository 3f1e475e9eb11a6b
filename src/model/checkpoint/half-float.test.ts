import { describe, expect, test } from 'vitest';
import { bf16ToF32, f16BitsOf, f16ToF32, f16Value, f32ToBf16, f32ToF16 } from './half-float.ts';

describe('F16', () => {
  test('exact values map to their known bit patterns', () => {
    const cases: Array<[number, number]> = [
      [0, 0x0000],
      [-0, 0x8000],
      [1, 0x3c00],
      [-2, 0xc000],
      [0.5, 0x3800],
      [65504, 0x7bff], // largest finite
      [2 ** -14, 0x0400], // smallest normal
      [2 ** -24, 0x0001], // smallest subnormal
      [Infinity, 0x7c00],
      [-Infinity, 0xfc00],
    ];
    for (const [value, bits] of cases) {
      expect(f16BitsOf(value), `bits of ${value}`).toBe(bits);
      expect(Object.is(f16Value(bits), value), `value of ${bits.toString(16)}`).toBe(true);
    }
  });

  test('rounds to nearest, ties to even, overflow to infinity, tiny to zero', () => {
    expect(f16BitsOf(1 + 2 ** -11)).toBe(0x3c00); // tie between 1 and 1+2^-10: even mantissa (1) wins
    expect(f16BitsOf(1 + 3 * 2 ** -11)).toBe(0x3c02); // tie between 1+2^-10 and 1+2^-9: even wins
    expect(f16BitsOf(1 + 2 ** -11 + 2 ** -20)).toBe(0x3c01); // just above the tie
    expect(f16BitsOf(65520)).toBe(0x7c00); // halfway past the largest finite rounds up to infinity
    expect(f16BitsOf(2 ** -25)).toBe(0x0000); // exactly half the smallest subnormal: tie to even (zero)
    expect(f16BitsOf(1.5 * 2 ** -25)).toBe(0x0001);
    expect(f16BitsOf(3 * 2 ** -25)).toBe(0x0002); // tie between subnormals 1 and 2: even wins
    expect(Number.isNaN(f16Value(f16BitsOf(NaN)))).toBe(true);
  });

  test('every F16 bit pattern survives F16 -> F32 -> F16 (NaNs stay NaN)', () => {
    const all = new Uint16Array(65536).map((_, i) => i);
    const wide = f16ToF32(all);
    const back = f32ToF16(wide);
    const wrong: number[] = [];
    for (let bits = 0; bits < 65536; bits++) {
      const ok = Number.isNaN(wide[bits]) ? Number.isNaN(f16Value(back[bits])) : back[bits] === bits;
      if (!ok) wrong.push(bits);
    }
    expect(wrong).toEqual([]);
  });
});

describe('BF16', () => {
  test('widening is the top half of the float32 bits, narrowing rounds to nearest even', () => {
    const bits = new Uint16Array([0x3f80, 0xc000, 0x7f80, 0x0001]);
    expect(Array.from(bf16ToF32(bits))).toEqual([1, -2, Infinity, 2 ** -133]);
    const values = new Float32Array([1, 1 + 2 ** -8, 1 + 3 * 2 ** -8, 1 + 2 ** -8 + 2 ** -16, -3.5, 3.4e38]);
    expect(Array.from(f32ToBf16(values))).toEqual([0x3f80, 0x3f80, 0x3f82, 0x3f81, 0xc060, 0x7f80]);
    expect(Number.isNaN(bf16ToF32(f32ToBf16(new Float32Array([NaN])))[0])).toBe(true);
  });

  test('narrowing then widening is within half a BF16 ulp', () => {
    const values = new Float32Array(1000).map((_, i) => Math.sin(i) * 10 ** ((i % 7) - 3));
    const back = bf16ToF32(f32ToBf16(values));
    for (let i = 0; i < values.length; i++) {
      expect(Math.abs(back[i] - values[i])).toBeLessThanOrEqual(Math.abs(values[i]) * 2 ** -8);
    }
  });
});
