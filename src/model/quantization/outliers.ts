/**
 * SpQR-style outlier input channels: keep a few columns k of W [N, K] (input channels) in float and quantize the rest,
 * so the matmul splits by input columns:  y = x Wq_main^T + x[:, cols] @ outlier.
 *
 * Which columns: a group quantizer (int4 blocks along K, or one scale per row) spends its 2^bits levels on the
 * range of each group, so a value much larger than its group mates widens the step for all of them. The score of
 * column k is how strongly it dominates its groups, summed over rows:
 *   score_k = sum_n  W[n, k]^2 / mean_{k' in group(n, k)} W[n, k']^2
 * (about groupSize for a column that alone sets every range, about 1 for a typical one). Unlike leave-one-out
 * error, it still ranks two outlier columns that share a block high (removing either alone barely narrows the range),
 * and unlike the per-column round-trip error it does not miss the outlier itself, which min/max quantization
 * represents almost exactly while its block mates absorb the error. The tests check the selection against planted
 * outliers and against the round-trip error it achieves.
 */
import { TesseraError, outOfRange } from '../../errors.ts';
import { checkMatrix, roundTripInt4 } from './int4-block.ts';
import type { Int4QuantizeOptions } from './int4-block.ts';
import { DEFAULT_INT8_BLOCK_SIZE, roundTripInt8 } from './int8-block.ts';

export interface OutlierQuantizer {
  /** Input columns that share one scale within a row: the int4 block size; Infinity for one scale per row. */
  groupSizeK: number;
  /** Quantize -> dequantize round trip of a row-major [n, k] matrix. */
  roundTrip(weight: Float32Array, n: number, k: number): Float32Array;
}

export interface OutlierSplit {
  main: Float32Array; // [N, K] with the outlier columns zeroed
  outlier: Float32Array; // [columns.length, N]: rows of W^T for those columns, so y += x[:, columns] @ outlier
  columns: Int32Array; // sorted ascending
}

export function int4OutlierQuantizer(options: Int4QuantizeOptions = {}): OutlierQuantizer {
  return { groupSizeK: options.blockSize ?? 32, roundTrip: (w, n, k) => roundTripInt4(w, n, k, options) };
}

export function int8OutlierQuantizer(options: { blockSize?: number } = {}): OutlierQuantizer {
  const blockSize = options.blockSize ?? DEFAULT_INT8_BLOCK_SIZE;
  return { groupSizeK: blockSize, roundTrip: (w, n, k) => roundTripInt8(w, n, k, { blockSize }) };
}

/** Picks round(fraction * K) input columns by the dominance score above; returns them sorted. */
export function selectOutlierColumns(
  weight: Float32Array, // [N, K]
  N: number,
  K: number,
  fraction: number,
  quantize: OutlierQuantizer,
): Int32Array {
  checkMatrix(weight, N, K);
  if (!(fraction >= 0 && fraction <= 1)) throw outOfRange('fraction', '>= 0 and <= 1', fraction);
  if (!(quantize.groupSizeK >= 1)) throw outOfRange('groupSizeK', '>= 1', quantize.groupSizeK);
  const count = Math.round(fraction * K);
  if (count === 0) return new Int32Array(0);

  const groupSize = Math.min(K, quantize.groupSizeK);
  const scores = new Float64Array(K);
  for (let n = 0; n < N; n++) {
    const row = n * K;
    for (let start = 0; start < K; start += groupSize) {
      const end = Math.min(K, start + groupSize);
      let sumSq = 0;
      for (let k = start; k < end; k++) sumSq += weight[row + k] * weight[row + k];
      if (sumSq === 0) continue;
      const invMeanSq = (end - start) / sumSq;
      for (let k = start; k < end; k++) scores[k] += weight[row + k] * weight[row + k] * invMeanSq;
    }
  }
  const order = Array.from({ length: K }, (_, k) => k).sort((a, b) => scores[b] - scores[a] || a - b);
  return Int32Array.from(order.slice(0, count)).sort();
}

/** Splits W into the quantized part (outlier columns zeroed) and the float outlier rows of W^T. */
export function splitOutliers(weight: Float32Array /* [N, K] */, N: number, K: number, columns: ArrayLike<number>): OutlierSplit {
  checkMatrix(weight, N, K);
  for (let c = 0; c < columns.length; c++) {
    if (!Number.isInteger(columns[c])) throw outOfRange(`columns[${c}]`, 'an integer', columns[c]);
  }
  const sorted = Int32Array.from(columns).sort();
  for (let c = 0; c < sorted.length; c++) {
    if (sorted[c] < 0 || sorted[c] >= K) throw outOfRange('columns', `values >= 0 and < K (${K})`, sorted[c]);
    if (c > 0 && sorted[c] === sorted[c - 1]) {
      throw new TesseraError('INVALID_ARGUMENT', `\`columns\` must not repeat a column. Given: ${sorted[c]} twice`);
    }
  }
  const main = Float32Array.from(weight);
  const outlier = new Float32Array(sorted.length * N);
  for (let c = 0; c < sorted.length; c++) {
    const k = sorted[c];
    for (let n = 0; n < N; n++) {
      outlier[c * N + n] = weight[n * K + k];
      main[n * K + k] = 0;
    }
  }
  return { main, outlier, columns: sorted };
}

/** Sum of squared error of W vs (round trip of main) + outlier columns kept exactly. */
export function outlierSplitError(
  weight: Float32Array, // [N, K]
  N: number,
  K: number,
  columns: ArrayLike<number>,
  quantize: OutlierQuantizer,
): number {
  const split = splitOutliers(weight, N, K, columns);
  const approx = quantize.roundTrip(split.main, N, K);
  for (let c = 0; c < split.columns.length; c++) {
    const k = split.columns[c];
    for (let n = 0; n < N; n++) approx[n * K + k] = split.outlier[c * N + n];
  }
  let error = 0;
  for (let i = 0; i < weight.length; i++) error += (weight[i] - approx[i]) ** 2;
  return error;
}
