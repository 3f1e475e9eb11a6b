/** Element types found in checkpoints. */
export type DType = 'F32' | 'F16' | 'BF16' | 'F64' | 'I64' | 'I32' | 'I16' | 'I8' | 'U8' | 'BOOL';

export interface TensorInfo {
  name: string;
  dtype: DType;
  shape: number[];
  /** File that holds the tensor (for error messages and sharded checkpoints). */
  file: string;
}

export type { Float32Tensor } from '../../../kernels/model-types.ts';
import type { Float32Tensor } from '../../../kernels/model-types.ts';

/**
 * Read access to a checkpoint's tensors without loading whole files: each read fetches one tensor's bytes.
 * Implemented by the safetensors reader (single file and sharded index).
 */
export interface TensorSource {
  /** Names of all tensors, in file order. */
  names(): string[];
  has(name: string): boolean;
  /** Throws TesseraError('CHECKPOINT_INVALID') naming file and tensor when missing. */
  info(name: string): TensorInfo;
  /** Reads and converts one tensor to float32 (F16/BF16/F32/F64 only). */
  readFloat32(name: string): Float32Tensor;
  close(): void;
}

/** Index of the first NaN or +-Inf in `values`, or -1 when every value is finite. */
export function firstNonFinite(values: Float32Array): number {
  for (let i = 0; i < values.length; i++) if (!Number.isFinite(values[i])) return i;
  return -1;
}
