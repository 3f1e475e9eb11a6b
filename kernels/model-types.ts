/**
 * The model's shapes and types, shared by kernels/ (reference forward pass), src/model/ and src/adapters/: a leaf
 * module that imports nothing, so kernels never depend on src/model (src/model/model-config.ts re-exports it).
 */

/** Architecture families whose checkpoints Tessera reads (all: RMSNorm, rotary, GQA, SwiGLU). */
export type ModelFamily = 'llama' | 'qwen2' | 'qwen3' | 'mistral';

/** A model's architecture, normalised from a Hugging Face config.json. All fields are required and checked. */
export interface ModelConfig {
  family: ModelFamily;
  /** `model_type` as written in config.json. */
  modelType: string;
  vocabSize: number;
  hiddenSize: number;
  intermediateSize: number;
  numLayers: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  rmsNormEps: number;
  ropeTheta: number;
  /** Longest sequence (prompt + generated) the model supports, in tokens. */
  maxPositionEmbeddings: number;
  tieWordEmbeddings: boolean;
  /** Qwen2 family: biases on q/k/v projections. */
  attentionBias: boolean;
  /** Qwen3 family: RMSNorm over each head of q and k before rotary. */
  qkNorm: boolean;
  bosTokenId: number | null;
  /** One or several end-of-sequence ids. */
  eosTokenIds: number[];
}

/** LoRA target modules Tessera serves, in the order used everywhere (graph inputs, slot stacks). */
export const LORA_TARGETS = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'] as const;
export type LoraTarget = (typeof LORA_TARGETS)[number];

/** [inFeatures, outFeatures] of each target linear for a config. */
export function loraTargetShape(config: ModelConfig, target: LoraTarget): [number, number] {
  const q = config.numHeads * config.headDim;
  const kv = config.numKvHeads * config.headDim;
  switch (target) {
    case 'q_proj':
      return [config.hiddenSize, q];
    case 'k_proj':
    case 'v_proj':
      return [config.hiddenSize, kv];
    case 'o_proj':
      return [q, config.hiddenSize];
    case 'gate_proj':
    case 'up_proj':
      return [config.hiddenSize, config.intermediateSize];
    case 'down_proj':
      return [config.intermediateSize, config.hiddenSize];
  }
}

/** One adapter's LoRA weights in PEFT layout, as read from a PEFT directory or decoded from a compressed file. */
export interface LoraWeights {
  rank: number;
  /** lora_alpha / r (or the rsLoRA variant), applied to B(Ax). */
  scale: number;
  layers: Array<Partial<Record<LoraTarget, { a: Float32Array /* [r, in] */; b: Float32Array /* [out, r] */ }>>>;
}

/** A dense float32 tensor in row-major order. */
export interface Float32Tensor {
  shape: number[];
  data: Float32Array;
}
