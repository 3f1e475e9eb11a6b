/**
 * Block-wise symmetric int8 quantization in the layout of ORT `com.microsoft.MatMulNBits` (bits = 8).
 *
 * Input W is in HF layout [N = out, K = in] (MatMulNBits' B layout: one quantized row per output column), K
 * zero-padded to kBlocks * blockSize. For each row n and block b of blockSize values x:
 *   scale = max |x| / 127 (1 when the block is all zeros), stored as float32
 *   q     = clamp(round(x / scale), -127, 127), stored as the byte q + 128   dequantized value = (byte - 128) * scale
 * Rounding is half away from zero, so W and -W quantize to exact negatives. No zero-point input is written: MatMulNBits
 * takes 2^(bits-1) = 128 when it is absent, which is what makes the code symmetric.
 *
 * Why this form (docs/quantization.md, "Why int8 is MatMulNBits"): with accuracy_level 4 the kernel quantizes each
 * row's activations per block of blockSize values to symmetric int8, so a row's result never depends on other rows
 * (a per-tensor activation scale, as in DynamicQuantizeMatMul, does), an outlier channel costs precision only in its
 * own block, and int8 x int8 products of symmetric codes cannot saturate the 16-bit pair sums of the AVX2 kernels.
 *
 * Layouts (what MatMulNBits reads):
 *   packed  [N, kBlocks, blockSize] uint8
 *   scales  [N * kBlocks] float32
 */
import { outOfRange } from '../../errors.ts';
import { checkMatrix } from './int4-block.ts';

export const INT8_BLOCK_SIZES = [16, 32, 64, 128] as const;
export const DEFAULT_INT8_BLOCK_SIZE = 32;

export interface Int8BlockWeight {
  packed: Uint8Array; // [N, kBlocks, blockSize]
  scales: Float32Array; // [N * kBlocks]
  N: number;
  K: number;
  blockSize: number;
}

const MAX_Q = 127;
/** The stored byte of code 0 (MatMulNBits' default zero point for 8 bits). */
export const INT8_ZERO_POINT = 128;

/** Quantizes a row-major [N, K] float32 matrix to MatMulNBits' 8-bit layout. */
export function quantizeInt8(weight: Float32Array /* [N, K] */, N: number, K: number, options: { blockSize?: number } = {}): Int8BlockWeight {
  const blockSize = options.blockSize ?? DEFAULT_INT8_BLOCK_SIZE;
  checkMatrix(weight, N, K);
  if (!(INT8_BLOCK_SIZES as readonly number[]).includes(blockSize)) throw outOfRange('blockSize', `one of ${INT8_BLOCK_SIZES.join(', ')}`, blockSize);
  const kBlocks = Math.ceil(K / blockSize);
  const packed = new Uint8Array(N * kBlocks * blockSize).fill(INT8_ZERO_POINT);
  const scales = new Float32Array(N * kBlocks);
  for (let n = 0; n < N; n++) {
    for (let b = 0; b < kBlocks; b++) {
      const start = n * K + b * blockSize;
      const length = Math.min(blockSize, K - b * blockSize);
      let maxAbs = 0;
      for (let i = 0; i < length; i++) maxAbs = Math.max(maxAbs, Math.abs(weight[start + i]));
      const scale = maxAbs > 0 ? Math.fround(maxAbs / MAX_Q) : 1;
      const at = (n * kBlocks + b) * blockSize;
      scales[n * kBlocks + b] = scale;
      for (let i = 0; i < length; i++) {
        const x = weight[start + i] / scale;
        const q = Math.min(MAX_Q, Math.round(Math.abs(x)));
        packed[at + i] = INT8_ZERO_POINT + (x < 0 ? -q : q);
      }
    }
  }
  return { packed, scales, N, K, blockSize };
}

/** (byte - 128) * scale back in HF layout [N, K], in float32 as MatMulNBits computes it; padding dropped. */
export function dequantizeInt8(q: Int8BlockWeight): Float32Array /* [N, K] */ {
  const { N, K, blockSize } = q;
  const kBlocks = Math.ceil(K / blockSize);
  const out = new Float32Array(N * K);
  for (let n = 0; n < N; n++) {
    for (let k = 0; k < K; k++) {
      const b = Math.floor(k / blockSize);
      out[n * K + k] = Math.fround((q.packed[(n * kBlocks + b) * blockSize + (k % blockSize)] - INT8_ZERO_POINT) * q.scales[n * kBlocks + b]);
    }
  }
  return out;
}

/** Quantize then dequantize: what the model will actually compute with. */
export function roundTripInt8(weight: Float32Array, N: number, K: number, options: { blockSize?: number } = {}): Float32Array {
  return dequantizeInt8(quantizeInt8(weight, N, K, options));
}
