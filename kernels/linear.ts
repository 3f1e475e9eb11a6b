import type { OnnxGraph } from './onnx-graph.ts';
import { MS_DOMAIN } from './onnx-graph.ts';

/**
 * Linear layers y = x W^T (+ bias), W in Hugging Face layout [outFeatures, inFeatures], in one of several storage forms.
 * The weight data is produced by src/model/quantization; these types only describe its layout.
 */

/** fp32: weight stored transposed [in, out] so y = MatMul(x, weight). */
export interface Fp32Weight {
  kind: 'fp32';
  inFeatures: number;
  outFeatures: number;
  /** [in, out] float32 */
  weightInOut: Float32Array;
}

/**
 * int4 block-wise, the layout of com.microsoft.MatMulNBits (bits = 4):
 *   for output n, block b = k / blockSize, q = 4-bit code of W[n, k]:
 *     W[n, k] ~= (q - zeroPoint[n, b]) * scale[n * kBlocks + b]
 */
export interface Int4Weight {
  kind: 'int4';
  inFeatures: number;
  outFeatures: number;
  blockSize: number;
  /** [out, kBlocks, blockSize / 2] two codes per byte, low nibble first */
  packed: Uint8Array;
  /** [out * kBlocks] */
  scales: Float32Array;
  /** [out, ceil(kBlocks / 2)] two zero points per byte, low nibble first */
  zeroPoints: Uint8Array;
  /** MatMulNBits accuracy_level: 4 (default) quantizes activations to int8 inside the kernel (fast), 0 keeps them fp32. */
  accuracyLevel?: 0 | 4;
}

/**
 * int8 block-wise symmetric, the layout of com.microsoft.MatMulNBits (bits = 8), run with accuracy_level 4 (activations
 * quantized to int8 per row and per block of blockSize inside the kernel: a row's result depends on that row alone):
 *   for output n, block b = k / blockSize:   W[n, k] ~= (packed[n, b, k % blockSize] - 128) * scale[n * kBlocks + b]
 */
export interface Int8Weight {
  kind: 'int8';
  inFeatures: number;
  outFeatures: number;
  blockSize: number;
  /** [out, kBlocks, blockSize] codes + 128 */
  packed: Uint8Array;
  /** [out * kBlocks] */
  scales: Float32Array;
}

/**
 * SpQR-style outliers: a few input channels kept in full precision beside a quantized remainder.
 *   y = base(x) + x[..., columns] @ outlierWeight       (base was quantized with those columns zeroed)
 */
export interface OutlierColumns {
  /** sorted input-channel indices */
  columns: Int32Array;
  /** [columns.length, out] float32 */
  weight: Float32Array;
}

export type LinearWeight = (Fp32Weight | Int4Weight | Int8Weight) & { outliers?: OutlierColumns; bias?: Float32Array };

/** int4 MatMulNBits accuracy level 4 = int8 activations inside the kernel: ~3x faster than level 0 on CPU. */
export const INT4_ACCURACY_LEVEL = 4;

/** int8 MatMulNBits always runs at accuracy level 4: level 0 dequantizes to fp32 and is ~50x slower on CPU. */
export const INT8_ACCURACY_LEVEL = 4;

/** Adds the weight's initializers under `name` and returns y = x W^T (+ bias). x is [..., inFeatures]. */
export function linear(g: OnnxGraph, x: string, name: string, w: LinearWeight): string {
  let y: string;
  switch (w.kind) {
    case 'fp32': {
      const weight = g.initializer(`${name}.weight`, 'float32', [w.inFeatures, w.outFeatures], w.weightInOut);
      y = g.op('MatMul', [x, weight], { hint: name });
      break;
    }
    case 'int4':
      y = matMulNBits(g, x, name, w, 4, w.zeroPoints, w.accuracyLevel ?? INT4_ACCURACY_LEVEL);
      break;
    case 'int8':
      // No zero points: MatMulNBits' default for 8 bits is 128, the symmetric code 0.
      y = matMulNBits(g, x, name, w, 8, null, INT8_ACCURACY_LEVEL);
      break;
  }
  if (w.outliers && w.outliers.columns.length > 0) {
    const cols = g.initializer(`${name}.outlier_columns`, 'int64', [w.outliers.columns.length], BigInt64Array.from(w.outliers.columns, (c) => BigInt(c)));
    const ow = g.initializer(`${name}.outlier_weight`, 'float32', [w.outliers.columns.length, w.outFeatures], w.outliers.weight);
    const xOut = g.op('Gather', [x, cols], { attrs: { axis: { i: -1 } }, hint: `${name}_outlier_x` });
    y = g.op('Add', [y, g.op('MatMul', [xOut, ow], { hint: `${name}_outlier` })], { hint: `${name}_with_outliers` });
  }
  if (w.bias) {
    const bias = g.initializer(`${name}.bias`, 'float32', [w.outFeatures], w.bias);
    y = g.op('Add', [y, bias], { hint: `${name}_bias` });
  }
  return y;
}

/** com.microsoft.MatMulNBits over a block-quantized weight ([out, kBlocks, blockSize * bits / 8] codes). */
function matMulNBits(
  g: OnnxGraph,
  x: string,
  name: string,
  w: { inFeatures: number; outFeatures: number; blockSize: number; packed: Uint8Array; scales: Float32Array },
  bits: 4 | 8,
  zeroPoints: Uint8Array | null,
  accuracyLevel: number,
): string {
  const kBlocks = Math.ceil(w.inFeatures / w.blockSize);
  const inputs = [
    x,
    g.initializer(`${name}.qweight`, 'uint8', [w.outFeatures, kBlocks, (w.blockSize * bits) / 8], w.packed),
    g.initializer(`${name}.scales`, 'float32', [w.outFeatures * kBlocks], w.scales),
  ];
  if (zeroPoints) inputs.push(g.initializer(`${name}.zero_points`, 'uint8', [zeroPoints.length], zeroPoints));
  return g.op('MatMulNBits', inputs, {
    domain: MS_DOMAIN,
    attrs: { K: { i: w.inFeatures }, N: { i: w.outFeatures }, bits: { i: bits }, block_size: { i: w.blockSize }, accuracy_level: { i: accuracyLevel } },
    hint: name,
  });
}
