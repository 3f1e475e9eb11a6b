import type { LinearWeight } from '../../../kernels/linear.ts';
import type { QuantKind } from '../converted-model.ts';
import { quantizeInt4 } from '../quantization/int4-block.ts';
import { quantizeInt8 } from '../quantization/int8-block.ts';
import { int4OutlierQuantizer, int8OutlierQuantizer, selectOutlierColumns, splitOutliers } from '../quantization/outliers.ts';

export interface LinearStorage {
  quant: QuantKind;
  /** int4 and int8 block size (MatMulNBits block_size). */
  blockSize: number;
  outlierFraction: number;
  /** int4 only: MatMulNBits accuracy_level (4 = int8 activations, fast; 0 = fp32 activations, more accurate). */
  int4AccuracyLevel?: 0 | 4;
}

/** Stores a Hugging Face linear weight [out, in] in the requested precision, with SpQR-style outlier columns split off. */
export function toLinearWeight(w: Float32Array, outFeatures: number, inFeatures: number, storage: LinearStorage): LinearWeight {
  if (storage.quant === 'fp32') return { kind: 'fp32', inFeatures, outFeatures, weightInOut: transpose(w, outFeatures, inFeatures) };
  let main = w;
  let outliers: LinearWeight['outliers'];
  if (storage.outlierFraction > 0) {
    const quantizer = storage.quant === 'int4' ? int4OutlierQuantizer({ blockSize: storage.blockSize }) : int8OutlierQuantizer({ blockSize: storage.blockSize });
    const columns = selectOutlierColumns(w, outFeatures, inFeatures, storage.outlierFraction, quantizer);
    const split = splitOutliers(w, outFeatures, inFeatures, columns);
    main = split.main;
    outliers = { columns: split.columns, weight: split.outlier };
  }
  if (storage.quant === 'int4') {
    const q = quantizeInt4(main, outFeatures, inFeatures, { blockSize: storage.blockSize });
    return { kind: 'int4', inFeatures, outFeatures, blockSize: q.blockSize, packed: q.packed, scales: q.scales, zeroPoints: q.zeroPoints, accuracyLevel: storage.int4AccuracyLevel ?? 4, outliers };
  }
  const q = quantizeInt8(main, outFeatures, inFeatures, { blockSize: storage.blockSize });
  return { kind: 'int8', inFeatures, outFeatures, blockSize: q.blockSize, packed: q.packed, scales: q.scales, outliers };
}

/** [rows, cols] -> [cols, rows] */
export function transpose(m: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(m.length);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out[c * rows + r] = m[r * cols + c];
  return out;
}
