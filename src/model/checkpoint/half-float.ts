/**
 * IEEE 754 binary16 (F16) and bfloat16 (BF16) <-> float32 conversions, written from the bit layouts:
 *   F16:  1 sign bit | 5 exponent bits (bias 15)  | 10 mantissa bits
 *   BF16: 1 sign bit | 8 exponent bits (bias 127) | 7 mantissa bits  (= the high 16 bits of a float32)
 *   F32:  1 sign bit | 8 exponent bits (bias 127) | 23 mantissa bits
 * Narrowing rounds to nearest, ties to even; NaN stays NaN, overflow becomes infinity.
 */

const f32Scratch = new Float32Array(1);
const u32Scratch = new Uint32Array(f32Scratch.buffer);

/** float32 value of each of the 65536 F16 bit patterns, built once on first use. */
let f16Table: Float32Array | null = null;

function f16BitsToFloat(bits: number): number {
  const sign = bits & 0x8000 ? -1 : 1;
  const exponent = (bits >> 10) & 0x1f;
  const mantissa = bits & 0x3ff;
  if (exponent === 0) return sign * mantissa * 2 ** -24; // zero and subnormals: mantissa * 2^-14 * 2^-10
  if (exponent === 0x1f) return mantissa === 0 ? sign * Infinity : NaN;
  return sign * (1 + mantissa / 1024) * 2 ** (exponent - 15);
}

function getF16Table(): Float32Array {
  if (f16Table === null) {
    const table = new Float32Array(65536);
    for (let bits = 0; bits < 65536; bits++) table[bits] = f16BitsToFloat(bits);
    f16Table = table;
  }
  return f16Table;
}

/** Widens F16 bit patterns to float32. `out` must have the same length as `src`. */
export function f16ToF32(src: Uint16Array, out: Float32Array = new Float32Array(src.length)): Float32Array {
  const table = getF16Table();
  for (let i = 0; i < src.length; i++) out[i] = table[src[i]];
  return out;
}

/** Widens BF16 bit patterns to float32 (exact: a BF16 is the top half of a float32). */
export function bf16ToF32(src: Uint16Array, out: Float32Array = new Float32Array(src.length)): Float32Array {
  const outBits = new Uint32Array(out.buffer, out.byteOffset, out.length);
  for (let i = 0; i < src.length; i++) outBits[i] = src[i] << 16;
  return out;
}

/** Narrows one float32 (given as its bit pattern) to F16 bits, round to nearest even. */
function f32BitsToF16Bits(x: number): number {
  const sign = (x >>> 16) & 0x8000;
  const exponent = (x >>> 23) & 0xff;
  const mantissa = x & 0x7fffff;
  if (exponent === 0xff) return sign | 0x7c00 | (mantissa !== 0 ? 0x200 | (mantissa >>> 13) : 0); // inf / NaN (kept quiet)
  const e = exponent - 127 + 15; // rebiased exponent
  if (e >= 0x1f) return sign | 0x7c00; // too large: infinity
  if (e <= 0) {
    // Subnormal (or zero) in F16: value = m * 2^-24, with the implicit leading 1 made explicit.
    if (e < -10) return sign; // below half the smallest subnormal: rounds to zero
    const full = mantissa | 0x800000;
    const shift = 14 - e; // 24-bit significand down to the subnormal grid
    const kept = full >>> shift;
    const rest = full & ((1 << shift) - 1);
    const half = 1 << (shift - 1);
    const rounded = rest > half || (rest === half && (kept & 1) === 1) ? kept + 1 : kept;
    return sign | rounded; // a carry into bit 10 correctly yields the smallest normal
  }
  const kept = (e << 10) | (mantissa >>> 13);
  const rest = mantissa & 0x1fff;
  const rounded = rest > 0x1000 || (rest === 0x1000 && (kept & 1) === 1) ? kept + 1 : kept;
  return sign | rounded; // a carry into the exponent correctly rounds up (to infinity at the top)
}

/** Narrows float32 values to F16 bit patterns. */
export function f32ToF16(src: Float32Array, out: Uint16Array = new Uint16Array(src.length)): Uint16Array {
  const srcBits = new Uint32Array(src.buffer, src.byteOffset, src.length);
  for (let i = 0; i < src.length; i++) out[i] = f32BitsToF16Bits(srcBits[i]);
  return out;
}

/** Narrows float32 values to BF16 bit patterns, round to nearest even. */
export function f32ToBf16(src: Float32Array, out: Uint16Array = new Uint16Array(src.length)): Uint16Array {
  const srcBits = new Uint32Array(src.buffer, src.byteOffset, src.length);
  for (let i = 0; i < src.length; i++) {
    const x = srcBits[i];
    if ((x & 0x7f800000) === 0x7f800000 && (x & 0x7fffff) !== 0) {
      out[i] = (x >>> 16) | 0x40; // NaN: keep it a (quiet) NaN after truncation
      continue;
    }
    const lsb = (x >>> 16) & 1;
    out[i] = ((x + 0x7fff + lsb) >>> 16) & 0xffff;
  }
  return out;
}

/** Single-value helpers, for tests and small scalars. */
export function f16BitsOf(value: number): number {
  f32Scratch[0] = value;
  return f32BitsToF16Bits(u32Scratch[0]);
}

export function f16Value(bits: number): number {
  return getF16Table()[bits & 0xffff];
}
