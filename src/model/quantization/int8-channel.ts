/**
 * Per-output-column symmetric int8 quantization in the layout of ORT `com.microsoft.DynamicQuantizeMatMul`.
 *
 * Input W in HF layout [N = out, K = in]; B is the logical MatMul operand [K, N] (W transposed). For each output n:
 *   scale_n = max_k |W[n, k]| / 127 (1 when the column is all zeros), stored as float32; zero point 0
 *   B[k, n] = clamp(round(W[n, k] / scale_n), -127, 127)     dequantized value = B[k, n] * scale_n
 * Rounding is half away from zero so that W and -W quantize to exact negatives.
 */
import { checkMatrix } from './int4-block.ts';

export interface Int8ChannelWeight {
  weight: Int8Array; // [K, N]
  scales: Float32Array; // [N]
  zeroPoints: Int8Array; // [N], all zero
  N: number;
  K: number;
}

const MAX_Q = 127;

export function quantizeInt8(weight: Float32Array /* [N, K] */, N: number, K: number): Int8ChannelWeight {
  checkMatrix(weight, N, K);
  const out = new Int8Array(K * N);
  const scales = new Float32Array(N);
  for (let n = 0; n < N; n++) {
    const row = n * K;
    let maxAbs = 0;
    for (let k = 0; k < K; k++) maxAbs = Math.max(maxAbs, Math.abs(weight[row + k]));
    const scale = maxAbs > 0 ? Math.fround(maxAbs / MAX_Q) : 1;
    scales[n] = scale;
    for (let k = 0; k < K; k++) {
      const x = weight[row + k] / scale;
      const q = Math.min(MAX_Q, Math.round(Math.abs(x)));
      out[k * N + n] = x < 0 ? -q : q;
    }
  }
  return { weight: out, scales, zeroPoints: new Int8Array(N), N, K };
}

/** B[k, n] * scale_n back in HF layout [N, K]. */
export function dequantizeInt8(q: Int8ChannelWeight): Float32Array /* [N, K] */ {
  const { N, K } = q;
  const out = new Float32Array(N * K);
  for (let n = 0; n < N; n++) {
    const scale = q.scales[n];
    const zp = q.zeroPoints[n];
    for (let k = 0; k < K; k++) out[n * K + k] = Math.fround((q.weight[k * N + n] - zp) * scale);
  }
  return out;
}

export function roundTripInt8(weight: Float32Array, N: number, K: number): Float32Array {
  return dequantizeInt8(quantizeInt8(weight, N, K));
}
