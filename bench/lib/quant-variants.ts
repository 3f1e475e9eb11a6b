/** The storage variants the benchmarks convert the same checkpoint into. */
import type { QuantKind } from '../../src/model/converted-model.ts';

export interface QuantVariant {
  /** Short stable id used in tables, JSON and directory names. */
  id: string;
  quant: QuantKind;
  /** int4/int8 block size; null for fp32. */
  blockSize: number | null;
  /** Fraction of each linear's input channels kept in fp32 (SpQR-style outliers). */
  outlierFraction: number;
  /** int4 MatMulNBits accuracy level (default 4: int8 activations; 0: fp32 activations). */
  int4AccuracyLevel?: 0 | 4;
}

export const FP32: QuantVariant = { id: 'fp32', quant: 'fp32', blockSize: null, outlierFraction: 0 };
export const INT8: QuantVariant = { id: 'int8-b32', quant: 'int8', blockSize: 32, outlierFraction: 0 };
export const INT4: QuantVariant = { id: 'int4-b32', quant: 'int4', blockSize: 32, outlierFraction: 0 };
export const INT4_ACCURACY0: QuantVariant = { id: 'int4-b32-acc0', quant: 'int4', blockSize: 32, outlierFraction: 0, int4AccuracyLevel: 0 };
export const INT4_OUTLIERS_HALF_PERCENT: QuantVariant = { id: 'int4-b32+o0.5%', quant: 'int4', blockSize: 32, outlierFraction: 0.005 };
export const INT4_OUTLIERS_ONE_PERCENT: QuantVariant = { id: 'int4-b32+o1%', quant: 'int4', blockSize: 32, outlierFraction: 0.01 };
export const INT8_OUTLIERS_ONE_PERCENT: QuantVariant = { id: 'int8-b32+o1%', quant: 'int8', blockSize: 32, outlierFraction: 0.01 };

/** A file-system-safe form of the id. */
export function variantDirName(v: QuantVariant): string {
  return v.id.replace(/[^a-z0-9.-]+/gi, '_');
}
