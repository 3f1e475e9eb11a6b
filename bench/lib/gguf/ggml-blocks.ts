/**
 * Encoding of float32 rows into the GGUF tensor types this project writes, and decoding back (for tests and checks).
 * Rows are encoded block by block along the fastest dimension; the block layouts are in gguf-format.ts.
 *
 *   Q8_0, per block of 32 values x:  d = max|x| / 127;  q_j = round(x_j / d) in [-127, 127];  x_j ~ q_j * d
 *   Q4_0, per block of 32 values x:  m = the x_j of largest magnitude (with its sign);  d = m / -8;
 *                                    q_j = min(15, floor(x_j / d + 8.5)) in [0, 15];  x_j ~ (q_j - 8) * d
 *     (so m itself is code 0 = -8 * d exactly, and the opposite extreme clips to +7 * d)
 * d is stored as an IEEE half; the codes are computed with the float32 d, as ggml's reference quantizers do.
 */
import { f16BitsOf, f16Value, f32ToF16, f16ToF32 } from '../../../src/model/checkpoint/half-float.ts';
import { GGML_TYPES, ggmlTensorBytes, type GgmlTypeName } from './gguf-format.ts';

const BLOCK = 32;

/** Rounds half away from zero (C's roundf), unlike Math.round which rounds -0.5 up to 0. */
function roundHalfAway(x: number): number {
  return x < 0 ? -Math.round(-x) : Math.round(x);
}

function encodeQ8_0(x: Float32Array, out: Uint8Array): void {
  const view = new DataView(out.buffer, out.byteOffset, out.byteLength);
  for (let b = 0; b < x.length / BLOCK; b++) {
    const at = b * GGML_TYPES.Q8_0.blockBytes;
    let amax = 0;
    for (let j = 0; j < BLOCK; j++) amax = Math.max(amax, Math.abs(x[b * BLOCK + j]));
    const d = Math.fround(amax / 127);
    const inv = d === 0 ? 0 : 1 / d;
    view.setUint16(at, f16BitsOf(d), true);
    for (let j = 0; j < BLOCK; j++) view.setInt8(at + 2 + j, roundHalfAway(x[b * BLOCK + j] * inv));
  }
}

function encodeQ4_0(x: Float32Array, out: Uint8Array): void {
  const view = new DataView(out.buffer, out.byteOffset, out.byteLength);
  for (let b = 0; b < x.length / BLOCK; b++) {
    const at = b * GGML_TYPES.Q4_0.blockBytes;
    let m = 0;
    for (let j = 0; j < BLOCK; j++) {
      const v = x[b * BLOCK + j];
      if (Math.abs(v) > Math.abs(m)) m = v;
    }
    const d = Math.fround(m / -8);
    const inv = d === 0 ? 0 : 1 / d;
    view.setUint16(at, f16BitsOf(d), true);
    const code = (v: number) => Math.min(15, Math.max(0, Math.floor(v * inv + 8.5)));
    for (let j = 0; j < BLOCK / 2; j++) {
      out[at + 2 + j] = code(x[b * BLOCK + j]) | (code(x[b * BLOCK + j + BLOCK / 2]) << 4);
    }
  }
}

/** Encodes `x` (a whole number of rows of `rowLength` values) as `type`; returns the tensor's bytes. */
export function encodeGgml(type: GgmlTypeName, x: Float32Array, rowLength: number): Uint8Array {
  if (rowLength <= 0 || x.length % rowLength !== 0) throw new Error(`${x.length} values are not whole rows of ${rowLength}`);
  const out = new Uint8Array(ggmlTensorBytes(type, [rowLength, x.length / rowLength]));
  switch (type) {
    case 'F32':
      out.set(new Uint8Array(x.buffer, x.byteOffset, x.byteLength));
      break;
    case 'F16': {
      const half = f32ToF16(x);
      out.set(new Uint8Array(half.buffer, half.byteOffset, half.byteLength));
      break;
    }
    case 'Q8_0':
      encodeQ8_0(x, out);
      break;
    case 'Q4_0':
      encodeQ4_0(x, out);
      break;
  }
  return out;
}

/** Decodes `numValues` values of `type` from `bytes` back to float32. */
export function decodeGgml(type: GgmlTypeName, bytes: Uint8Array, numValues: number): Float32Array {
  const out = new Float32Array(numValues);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  switch (type) {
    case 'F32':
      for (let i = 0; i < numValues; i++) out[i] = view.getFloat32(4 * i, true);
      break;
    case 'F16': {
      const bits = new Uint16Array(numValues);
      for (let i = 0; i < numValues; i++) bits[i] = view.getUint16(2 * i, true);
      f16ToF32(bits, out);
      break;
    }
    case 'Q8_0':
      for (let b = 0; b < numValues / BLOCK; b++) {
        const at = b * GGML_TYPES.Q8_0.blockBytes;
        const d = f16Value(view.getUint16(at, true));
        for (let j = 0; j < BLOCK; j++) out[b * BLOCK + j] = view.getInt8(at + 2 + j) * d;
      }
      break;
    case 'Q4_0':
      for (let b = 0; b < numValues / BLOCK; b++) {
        const at = b * GGML_TYPES.Q4_0.blockBytes;
        const d = f16Value(view.getUint16(at, true));
        for (let j = 0; j < BLOCK / 2; j++) {
          const byte = bytes[at + 2 + j];
          out[b * BLOCK + j] = ((byte & 0x0f) - 8) * d;
          out[b * BLOCK + j + BLOCK / 2] = ((byte >> 4) - 8) * d;
        }
      }
      break;
  }
  return out;
}
