/**
 * Checks of the quantized kernels the CPU provider runs on this CPU, against bounds derived from the formats, not against
 * numbers seen on one machine. ORT's int8 GEMMs differ by CPU class (AVX2, AVX-512, VNNI, AMX, arm64): the AVX2 and
 * AVX-512-without-VNNI kernels add pairs of uint8 x int8 products in 16-bit lanes, which saturate when both operands
 * use their full range. Used by the tests (natively, and under valgrind, which shows ORT an AVX2-only CPU) and by the
 * quantization bench, so every result names the kernel path it came from.
 *
 * 1. Tessera's int8 linear (MatMulNBits bits = 8, accuracy level 4, symmetric block 32; kernels/linear.ts) on
 *    weights and activations that use the full code range, one row with an outlier channel:
 *      y_true[m, n] = sum_k x[m, k] W[n, k]                                  (float64)
 *      per element, the formats bound the error by
 *      bound[m, n] = sum_k |x| sW/2 + |Wq| sX/2 + sW sX/4                    sW = block max|W| / 127, sX = block max|x| / 127
 *      and, rounding errors being independent and uniform, its root mean square by
 *      rms[m, n]^2 = sum_k x^2 sW^2/12 + Wq^2 sX^2/12
 *    errorToBound = max |y - y_true| / bound (<= 1 for a correct kernel); rmsRatio = RMS error / expected RMS (about
 *    1 for a correct kernel; saturation pushes it up); batchDiff = max |row alone - row in the batch| (0: rows are
 *    computed from their own inputs only).
 * 2. The u8s8 kernel class itself (com.microsoft.DynamicQuantizeMatMul, what int8 used before): its integer result is
 *    emulated exactly here, so any difference beyond float32 rounding is pairwise 16-bit saturation.
 */
import * as ort from 'onnxruntime-node';
import { MS_DOMAIN, OnnxGraph } from '../../../kernels/onnx-graph.ts';
import { linear, type LinearWeight } from '../../../kernels/linear.ts';
import { serializeModel } from '../graph/onnx-serialize.ts';
import { quantizeInt4 } from './int4-block.ts';
import { INT8_ZERO_POINT, quantizeInt8 } from './int8-block.ts';

export interface Int8KernelCheck {
  errorToBound: number;
  rmsRatio: number;
  batchDiff: number;
  /** Whether the u8 x s8 kernel class saturates its pair sums on this CPU (AVX2 / AVX-512 without VNNI). */
  u8s8Saturates: boolean;
  /** Largest relative difference of DynamicQuantizeMatMul from its exact integer emulation. */
  u8s8Deviation: number;
}

const K = 512;
const N = 64;
const M = 4;
const BLOCK = 32;
const OUTLIER = 40;

/** Deterministic pseudo-random values in [-1, 1) (a fixed LCG: the check must see the same data on every machine). */
function values(count: number, seed: number): Float32Array {
  let s = seed >>> 0;
  return Float32Array.from({ length: count }, () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 31 - 1;
  });
}

async function run(g: OnnxGraph, y: string, x: Float32Array, rows: number): Promise<Float32Array> {
  const session = await ort.InferenceSession.create(serializeModel(g, null), { intraOpNumThreads: 1 });
  try {
    return (await session.run({ x: new ort.Tensor('float32', x, [rows, K]) }))[y].data as Float32Array;
  } finally {
    await session.release();
  }
}

export async function checkInt8Kernels(): Promise<Int8KernelCheck> {
  // Positive-leaning weights and activations (the worst case for u8 x s8 pairs), every block spanning its full range.
  const w = values(N * K, 1).map((v) => 0.25 + 0.75 * v);
  const x = values(M * K, 2).map((v) => 0.5 + 0.5 * v);
  x[3] = OUTLIER; // row 0: an outlier channel
  const q = quantizeInt8(w, N, K, { blockSize: BLOCK });
  const g = new OnnxGraph('int8_check');
  const xi = g.input('x', 'float32', ['rows', K]);
  const y = linear(g, xi, 'check', { kind: 'int8', inFeatures: K, outFeatures: N, blockSize: BLOCK, packed: q.packed, scales: q.scales });
  g.output(y, 'float32', ['rows', N]);
  const batch = await run(g, y, x, M);

  let errorToBound = 0;
  let squaredError = 0;
  let expectedSquared = 0;
  const kBlocks = K / BLOCK;
  for (let m = 0; m < M; m++) {
    for (let n = 0; n < N; n++) {
      let exact = 0;
      let bound = 0;
      let variance = 0;
      for (let b = 0; b < kBlocks; b++) {
        let xMax = 0;
        for (let k = b * BLOCK; k < (b + 1) * BLOCK; k++) xMax = Math.max(xMax, Math.abs(x[m * K + k]));
        const sX = xMax / 127;
        const sW = q.scales[n * kBlocks + b];
        for (let k = b * BLOCK; k < (b + 1) * BLOCK; k++) {
          const xv = x[m * K + k];
          const wq = (q.packed[n * K + k] - INT8_ZERO_POINT) * sW;
          exact += xv * w[n * K + k];
          bound += (Math.abs(xv) * sW) / 2 + (Math.abs(wq) * sX) / 2 + (sW * sX) / 4;
          variance += (xv * xv * sW * sW) / 12 + (wq * wq * sX * sX) / 12;
        }
      }
      const error = batch[m * N + n] - exact;
      errorToBound = Math.max(errorToBound, Math.abs(error) / bound);
      squaredError += error * error;
      expectedSquared += variance;
    }
  }
  let batchDiff = 0;
  for (let m = 0; m < M; m++) {
    const alone = await run(g, y, x.slice(m * K, (m + 1) * K), 1);
    for (let n = 0; n < N; n++) batchDiff = Math.max(batchDiff, Math.abs(alone[n] - batch[m * N + n]));
  }
  // Without the outlier: one per-tensor range for all rows would otherwise squeeze every code toward the zero point.
  const u8s8Deviation = await dynamicQuantizeMatMulDeviation(w, x.map((v, i) => (i === 3 ? 1 : v)));
  return { errorToBound, rmsRatio: Math.sqrt(squaredError / expectedSquared), batchDiff, u8s8Saturates: u8s8Deviation > 1e-3, u8s8Deviation };
}

/**
 * DynamicQuantizeMatMul against an exact emulation of its integer arithmetic: x quantized to uint8 per tensor
 * (scale = (max(0, max x) - min(0, min x)) / 255, zero point and codes rounded half to even), W per output column to
 * int8 (symmetric, the scale given), products summed in int32. Returns the largest |difference| / max |y|.
 */
async function dynamicQuantizeMatMulDeviation(w: Float32Array, x: Float32Array): Promise<number> {
  const codes = new Int8Array(K * N);
  const wScales = new Float32Array(N);
  for (let n = 0; n < N; n++) {
    let maxAbs = 0;
    for (let k = 0; k < K; k++) maxAbs = Math.max(maxAbs, Math.abs(w[n * K + k]));
    wScales[n] = Math.fround(maxAbs / 127);
    for (let k = 0; k < K; k++) codes[k * N + n] = Math.round(w[n * K + k] / wScales[n]);
  }
  const g = new OnnxGraph('u8s8_check');
  const xi = g.input('x', 'float32', ['rows', K]);
  const y = g.op('DynamicQuantizeMatMul', [xi, g.initializer('w', 'int8', [K, N], codes), g.initializer('s', 'float32', [N], wScales), g.initializer('z', 'int8', [N], new Int8Array(N))], { domain: MS_DOMAIN });
  g.output(y, 'float32', ['rows', N]);
  const got = await run(g, y, x, M);

  let lo = 0;
  let hi = 0;
  for (const v of x) [lo, hi] = [Math.min(lo, v), Math.max(hi, v)];
  const scale = Math.fround((hi - lo) / 255);
  const zeroPoint = clamp(roundHalfEven(-lo / scale), 0, 255);
  const xq = Int32Array.from(x, (v) => clamp(roundHalfEven(v / scale) + zeroPoint, 0, 255) - zeroPoint);
  let worst = 0;
  let largest = 0;
  for (let m = 0; m < M; m++) {
    for (let n = 0; n < N; n++) {
      let acc = 0;
      for (let k = 0; k < K; k++) acc += xq[m * K + k] * codes[k * N + n];
      const expected = acc * scale * wScales[n];
      worst = Math.max(worst, Math.abs(got[m * N + n] - expected));
      largest = Math.max(largest, Math.abs(expected));
    }
  }
  return worst / largest;
}

function roundHalfEven(v: number): number {
  const r = Math.round(v);
  return Math.abs(v % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

function clamp(v: number, lo: number, hi: number): number {
  return Math.min(hi, Math.max(lo, v));
}

/**
 * Whether MatMulNBits (`bits`, block 32, accuracy level 4) computes a row alone (M = 1) differently from the same row
 * among others. On AVX2-only x86 (seen under valgrind) the 4-bit kernel takes a one-row path whose sums are ordered
 * differently (differences ~1e-7 of the output) while every M >= 2 agrees bit for bit; ~1e-7 is harmless by itself,
 * but the next layer's activation quantization can round it to a different int8 code, so a request's logprobs move by
 * ~1e-2 between alone and batched. Runners pad one-row steps to two rows where this returns true.
 */
export async function singleRowPathDiffers(bits: 4 | 8): Promise<boolean> {
  const K = 128;
  const N = 64;
  const w = values(N * K, 3);
  const g = new OnnxGraph('single_row_check');
  const xi = g.input('x', 'float32', ['rows', K]);
  const weight = bits === 4 ? int4Weight(w, N, K) : int8Weight(w, N, K);
  const y = linear(g, xi, 'check', weight);
  g.output(y, 'float32', ['rows', N]);
  const session = await ort.InferenceSession.create(serializeModel(g, null), { intraOpNumThreads: 1 });
  try {
    const run = async (x: Float32Array, rows: number) => (await session.run({ x: new ort.Tensor('float32', x, [rows, K]) }))[y].data as Float32Array;
    const rows = values(4 * K, 4);
    for (let r = 0; r < 4; r++) {
      const row = rows.slice(r * K, (r + 1) * K);
      const pair = new Float32Array(2 * K);
      pair.set(row);
      const [alone, inPair] = [await run(row, 1), await run(pair, 2)];
      for (let n = 0; n < N; n++) if (alone[n] !== inPair[n]) return true;
    }
    return false;
  } finally {
    await session.release();
  }
}

function int4Weight(w: Float32Array, N: number, K: number): LinearWeight {
  const q = quantizeInt4(w, N, K, { blockSize: BLOCK });
  return { kind: 'int4', inFeatures: K, outFeatures: N, blockSize: BLOCK, packed: q.packed, scales: q.scales, zeroPoints: q.zeroPoints, accuracyLevel: 4 };
}

function int8Weight(w: Float32Array, N: number, K: number): LinearWeight {
  const q = quantizeInt8(w, N, K, { blockSize: BLOCK });
  return { kind: 'int8', inFeatures: K, outFeatures: N, blockSize: BLOCK, packed: q.packed, scales: q.scales };
}
