import type { LoraTarget } from '../../model/model-config.ts';

export type LoraKind = 'A' | 'B';

/** Which LoRA factor a tensor is and its shape: A is [rank, inFeatures], B is [outFeatures, rank]. */
export interface LoraFactorId {
  /** PEFT-style tensor name, e.g. `base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight`. */
  name: string;
  layer: number;
  target: LoraTarget;
  kind: LoraKind;
  rows: number;
  cols: number;
}

/** One dense LoRA factor, row-major float32. */
export interface LoraTensor extends LoraFactorId {
  data: Float32Array; // [rows, cols] float32
}

/**
 * A ternary factor: value `sign * scale` at each kept position, zero elsewhere.
 * `positions` are flat row-major indices (i * cols + j), strictly increasing.
 */
export interface TernaryTensor extends LoraFactorId {
  scale: number;
  positions: Uint32Array; // [nnz] strictly increasing flat indices
  negative: Uint8Array; // [nnz] 1 where the kept value is -scale
}

/** A sign pattern without its scale (what top-k selection produces). */
export interface SignPattern {
  positions: Uint32Array;
  negative: Uint8Array;
}
