/**
 * Hugging Face config.json -> ModelConfig for the Llama, Qwen2, Qwen3 and Mistral families.
 * Every key is checked; problems throw TesseraError('CHECKPOINT_INVALID') naming the file, the key and the value.
 */
import { TesseraError } from '../../errors.ts';
import type { ModelConfig, ModelFamily } from '../model-config.ts';

export const SUPPORTED_MODEL_TYPES: readonly ModelFamily[] = ['llama', 'qwen2', 'qwen3', 'mistral'];

type Json = Record<string, unknown>;

function fail(file: string, key: string, problem: string, given: unknown): TesseraError {
  return new TesseraError('CHECKPOINT_INVALID', `${file}: \`${key}\` ${problem}. Given: ${JSON.stringify(given) ?? 'undefined'}`);
}

/** A key is absent when missing or null (HF writes null for "use the default"). */
function absent(json: Json, key: string): boolean {
  return json[key] === undefined || json[key] === null;
}

/**
 * Upper bounds checked before anything is allocated or looped over. Far above every released model of the supported
 * families (largest: vocabularies ~256k, hidden 16384, intermediate 53248, 126 layers, 128 heads, head_dim 256,
 * contexts ~1M), low enough that a hostile config.json fails here with its value named instead of later in an
 * allocation, a loop or ONNX Runtime. The tensor shapes are then checked against these values (checkpoint.ts).
 */
export const CONFIG_BOUNDS = {
  vocab_size: 1 << 24,
  hidden_size: 1 << 16,
  intermediate_size: 1 << 18,
  num_hidden_layers: 1024,
  num_attention_heads: 1024,
  head_dim: 1024,
  max_position_embeddings: 1 << 20,
  /** max_position_embeddings x head_dim: the rotary cos/sin tables built into the graph (4 bytes x this). */
  rotaryTableElements: 1 << 27,
} as const;

const FLOAT32_MAX = 3.4028234663852886e38;

function positiveInt(json: Json, key: string, file: string, fallback?: number, max = Number.MAX_SAFE_INTEGER): number {
  if (absent(json, key)) {
    if (fallback !== undefined) return fallback;
    throw fail(file, key, 'is required (a positive integer)', json[key]);
  }
  const v = json[key];
  if (!Number.isSafeInteger(v) || (v as number) <= 0) throw fail(file, key, 'must be a positive integer', v);
  if ((v as number) > max) throw fail(file, key, `must be a positive integer <= ${max}`, v);
  return v as number;
}

/** A positive number that float32 holds (the graph stores it as one), at most `max`. */
function positiveNumber(json: Json, key: string, file: string, fallback: number, max = FLOAT32_MAX): number {
  if (absent(json, key)) return fallback;
  const v = json[key];
  if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0 || v > max) {
    throw fail(file, key, `must be a positive finite number <= ${max === FLOAT32_MAX ? '3.4e38 (float32)' : max}`, v);
  }
  return v;
}

function bool(json: Json, key: string, file: string, fallback: boolean): boolean {
  if (absent(json, key)) return fallback;
  const v = json[key];
  if (typeof v !== 'boolean') throw fail(file, key, 'must be true or false', v);
  return v;
}

function tokenId(v: unknown): boolean {
  return Number.isSafeInteger(v) && (v as number) >= 0;
}

function bosOf(json: Json, file: string, vocabSize: number): number | null {
  if (absent(json, 'bos_token_id')) return null;
  if (!tokenId(json.bos_token_id)) throw fail(file, 'bos_token_id', 'must be a non-negative integer or null', json.bos_token_id);
  if ((json.bos_token_id as number) >= vocabSize) throw fail(file, 'bos_token_id', `must be < vocab_size (${vocabSize})`, json.bos_token_id);
  return json.bos_token_id as number;
}

function eosOf(json: Json, file: string, vocabSize: number): number[] {
  const v = json.eos_token_id;
  if (v === undefined || v === null) return [];
  const ids = tokenId(v) ? [v as number] : Array.isArray(v) && v.every(tokenId) ? [...new Set(v as number[])] : null;
  if (ids === null) throw fail(file, 'eos_token_id', 'must be a non-negative integer, a list of them, or null', v);
  if (ids.some((id) => id >= vocabSize)) throw fail(file, 'eos_token_id', `must be < vocab_size (${vocabSize})`, v);
  return ids;
}

/** rope_theta from `rope_theta`, or from `rope_parameters` (newer transformers) when it describes default rotary. */
function ropeThetaOf(json: Json, file: string): number {
  if (!absent(json, 'rope_scaling')) {
    throw fail(file, 'rope_scaling', 'is not supported yet (only null: plain rotary embeddings)', json.rope_scaling);
  }
  const params = json.rope_parameters;
  if (params !== undefined && params !== null) {
    if (typeof params !== 'object' || Array.isArray(params)) throw fail(file, 'rope_parameters', 'must be an object', params);
    const p = params as Json;
    if (p.rope_type !== undefined && p.rope_type !== 'default') {
      throw fail(file, 'rope_parameters.rope_type', 'is not supported yet (only "default")', p.rope_type);
    }
    if (!absent(p, 'rope_theta')) return positiveNumber(p, 'rope_theta', file, 10000);
  }
  return positiveNumber(json, 'rope_theta', file, 10000);
}

function checkUnsupportedFlags(json: Json, family: ModelFamily, file: string): void {
  if (!absent(json, 'hidden_act') && json.hidden_act !== 'silu') {
    throw fail(file, 'hidden_act', 'is not supported (only "silu")', json.hidden_act);
  }
  if (bool(json, 'mlp_bias', file, false)) throw fail(file, 'mlp_bias', 'is not supported (only false)', json.mlp_bias);
  // Qwen2 always has q/k/v biases and no o bias; elsewhere attention_bias would add biases on q/k/v/o.
  if (family !== 'qwen2' && bool(json, 'attention_bias', file, false)) {
    throw fail(file, 'attention_bias', `is not supported for model_type ${family} (only false)`, json.attention_bias);
  }
  if ((family === 'qwen2' || family === 'qwen3') && bool(json, 'use_sliding_window', file, false)) {
    throw fail(file, 'use_sliding_window', 'is not supported (only false)', json.use_sliding_window);
  }
}

/**
 * Normalises a parsed config.json. `file` is used in messages only.
 * Defaults follow the families' HF config classes for optional keys (num_key_value_heads = num_attention_heads,
 * head_dim = hidden_size / num_attention_heads, rms_norm_eps 1e-6, rope_theta 10000, tie_word_embeddings false).
 * Mistral's `sliding_window`, when set, caps maxPositionEmbeddings: within the window, windowed and full attention agree.
 */
export function parseHfConfig(json: unknown, file: string): ModelConfig {
  if (typeof json !== 'object' || json === null || Array.isArray(json)) {
    throw new TesseraError('CHECKPOINT_INVALID', `${file}: must hold a JSON object`);
  }
  const c = json as Json;
  const modelType = c.model_type;
  if (typeof modelType !== 'string' || !(SUPPORTED_MODEL_TYPES as readonly string[]).includes(modelType)) {
    throw fail(file, 'model_type', `is not supported (supported: ${SUPPORTED_MODEL_TYPES.join(', ')})`, modelType);
  }
  const family = modelType as ModelFamily;
  checkUnsupportedFlags(c, family, file);

  const B = CONFIG_BOUNDS;
  const vocabSize = positiveInt(c, 'vocab_size', file, undefined, B.vocab_size);
  const hiddenSize = positiveInt(c, 'hidden_size', file, undefined, B.hidden_size);
  const intermediateSize = positiveInt(c, 'intermediate_size', file, undefined, B.intermediate_size);
  const numLayers = positiveInt(c, 'num_hidden_layers', file, undefined, B.num_hidden_layers);
  const numHeads = positiveInt(c, 'num_attention_heads', file, undefined, B.num_attention_heads);
  const numKvHeads = positiveInt(c, 'num_key_value_heads', file, numHeads, B.num_attention_heads);
  if (numHeads % numKvHeads !== 0) {
    throw fail(file, 'num_key_value_heads', `must divide num_attention_heads (${numHeads})`, numKvHeads);
  }
  if (absent(c, 'head_dim') && hiddenSize % numHeads !== 0) {
    throw fail(file, 'hidden_size', `must be a multiple of num_attention_heads (${numHeads}) when head_dim is not given`, hiddenSize);
  }
  const headDim = positiveInt(c, 'head_dim', file, hiddenSize / numHeads, B.head_dim);
  if (headDim % 2 !== 0) throw fail(file, 'head_dim', 'must be even (rotary embeddings rotate pairs)', headDim);

  let maxPositionEmbeddings = positiveInt(c, 'max_position_embeddings', file, undefined, B.max_position_embeddings);
  if (family === 'mistral' && !absent(c, 'sliding_window')) {
    const window = positiveInt(c, 'sliding_window', file);
    maxPositionEmbeddings = Math.min(maxPositionEmbeddings, window);
  }
  if (maxPositionEmbeddings * headDim > B.rotaryTableElements) {
    throw fail(file, 'max_position_embeddings', `times head_dim (${headDim}) must be <= ${B.rotaryTableElements} (the rotary tables)`, maxPositionEmbeddings);
  }

  return {
    family,
    modelType,
    vocabSize,
    hiddenSize,
    intermediateSize,
    numLayers,
    numHeads,
    numKvHeads,
    headDim,
    rmsNormEps: positiveNumber(c, 'rms_norm_eps', file, 1e-6, 1),
    ropeTheta: ropeThetaOf(c, file),
    maxPositionEmbeddings,
    tieWordEmbeddings: bool(c, 'tie_word_embeddings', file, false),
    attentionBias: family === 'qwen2',
    qkNorm: family === 'qwen3',
    bosTokenId: bosOf(c, file, vocabSize),
    eosTokenIds: eosOf(c, file, vocabSize),
  };
}
