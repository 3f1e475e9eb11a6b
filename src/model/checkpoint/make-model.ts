/**
 * Generates random Llama-family checkpoints in Hugging Face layout (config.json, model.safetensors, tokenizer.json,
 * tokenizer_config.json) plus PEFT LoRA adapters, deterministically from a seed: same options => identical bytes.
 *
 * Weight scales keep activations healthy through every layer and give a peaked next-token distribution:
 *   linears ~ N(0, 1/fan_in)            unit-rms input -> unit-rms output
 *   norm weights ~ 1 + N(0, 0.1^2)
 *   lm_head ~ N(0, LOGIT_STD^2 / hidden) final hidden state has unit rms -> logits with std ~LOGIT_STD
 *   embeddings ~ N(0, 1) when untied; when tied they are the lm_head, so they get the lm_head's scale instead.
 *   output rows of padding ids (past the tokenizer's vocabulary) x PADDING_ROW_SCALE: logits ~0, never the argmax.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { TesseraError } from '../../errors.ts';
import type { ModelConfig } from '../model-config.ts';
import { generateTokenizer } from '../tokenizer/generated-tokenizer.ts';
import { expectedTensorShapes } from './checkpoint.ts';
import { ensureDirOnce } from './atomic-dir.ts';
import { adapterTensors, writeRandomAdapter } from './make-adapter.ts';
import { SeededRandom } from '../../util/seeded-random.ts';
import { writeSafetensors, type TensorToWrite, type WritableDType } from './safetensors-writer.ts';

export type ModelPreset = 'tiny' | 'small';

export interface MakeModelOptions {
  preset: ModelPreset;
  outDir: string;
  /** LoRA adapters written to adapters/adapter-<i>/. Default 2. */
  numAdapters?: number;
  seed?: number;
  /** Base weights' dtype; default F32 for tiny, BF16 for small. Adapters are always F32. */
  dtype?: WritableDType;
  /** Elements (parameters) written so far, of all files together. */
  onProgress?: (doneElements: number, totalElements: number) => void;
}

export interface MadeModel {
  outDir: string;
  config: ModelConfig;
  adapterDirs: string[];
}

interface PresetSpec {
  hiddenSize: number;
  numLayers: number;
  numHeads: number;
  numKvHeads: number;
  intermediateSize: number;
  /** null: tokenizer size rounded up to a multiple of 64. */
  vocabSize: number | null;
  maxPositionEmbeddings: number;
  tieWordEmbeddings: boolean;
  dtype: WritableDType;
  numMerges: number;
  adapterRanks: [number, number];
}

const PRESETS: Record<ModelPreset, PresetSpec> = {
  tiny: {
    hiddenSize: 64,
    numLayers: 2,
    numHeads: 4,
    numKvHeads: 2,
    intermediateSize: 128,
    vocabSize: null,
    maxPositionEmbeddings: 512,
    tieWordEmbeddings: false,
    dtype: 'F32',
    numMerges: 300,
    adapterRanks: [4, 8],
  },
  // The shape of SmolLM-135M.
  small: {
    hiddenSize: 576,
    numLayers: 30,
    numHeads: 9,
    numKvHeads: 3,
    intermediateSize: 1536,
    vocabSize: 49152,
    maxPositionEmbeddings: 2048,
    tieWordEmbeddings: true,
    dtype: 'BF16',
    numMerges: 2000,
    adapterRanks: [8, 16],
  },
};

const LOGIT_STD = 4;
const PADDING_ROW_SCALE = 0.01;
const NORM_NOISE_STD = 0.1;
const ROPE_THETA = 10000;
const RMS_NORM_EPS = 1e-5;
const TORCH_DTYPE: Record<WritableDType, string> = { F32: 'float32', F16: 'float16', BF16: 'bfloat16' };

export function modelName(preset: ModelPreset, seed: number): string {
  return `tessera-${preset}-s${seed}`;
}

function standardDeviationOf(name: string, shape: number[], config: ModelConfig): { std: number; mean: number } {
  if (name.endsWith('norm.weight')) return { std: NORM_NOISE_STD, mean: 1 };
  const lmHeadStd = LOGIT_STD / Math.sqrt(config.hiddenSize);
  if (name === 'lm_head.weight') return { std: lmHeadStd, mean: 0 };
  if (name === 'model.embed_tokens.weight') return { std: config.tieWordEmbeddings ? lmHeadStd : 1, mean: 0 };
  return { std: 1 / Math.sqrt(shape[1]), mean: 0 }; // Linear weight [out, in]
}

/** The output-projection matrix: lm_head, or the embeddings when tied. */
function outputMatrixName(config: ModelConfig): string {
  return config.tieWordEmbeddings ? 'model.embed_tokens.weight' : 'lm_head.weight';
}

function modelTensors(config: ModelConfig, seed: number, dtype: WritableDType, numTokens: number): TensorToWrite[] {
  return [...expectedTensorShapes(config)].map(([name, shape]) => ({
    name,
    dtype,
    shape,
    data: () => {
      const { std, mean } = standardDeviationOf(name, shape, config);
      const data = new SeededRandom(seed, name).fillNormal(new Float32Array(shape.reduce((a, b) => a * b, 1)), std, mean);
      // Rows past the tokenizer's vocabulary are padding: shrink them so their logits stay near 0, far below the
      // top real tokens (never the argmax, rarely sampled), since they decode to no text.
      if (name === outputMatrixName(config)) data.subarray(numTokens * config.hiddenSize).forEach((v, i, rows) => (rows[i] = v * PADDING_ROW_SCALE));
      return data;
    },
  }));
}

function configJson(config: ModelConfig, name: string, dtype: WritableDType): Record<string, unknown> {
  return {
    _name_or_path: name,
    architectures: ['LlamaForCausalLM'],
    model_type: 'llama',
    vocab_size: config.vocabSize,
    hidden_size: config.hiddenSize,
    intermediate_size: config.intermediateSize,
    num_hidden_layers: config.numLayers,
    num_attention_heads: config.numHeads,
    num_key_value_heads: config.numKvHeads,
    head_dim: config.headDim,
    hidden_act: 'silu',
    max_position_embeddings: config.maxPositionEmbeddings,
    initializer_range: 0.02,
    rms_norm_eps: config.rmsNormEps,
    rope_theta: config.ropeTheta,
    rope_scaling: null,
    attention_bias: false,
    attention_dropout: 0.0,
    mlp_bias: false,
    pretraining_tp: 1,
    tie_word_embeddings: config.tieWordEmbeddings,
    torch_dtype: TORCH_DTYPE[dtype],
    use_cache: true,
    bos_token_id: config.bosTokenId,
    eos_token_id: config.eosTokenIds[0],
  };
}

function numElements(tensors: TensorToWrite[]): number {
  return tensors.reduce((sum, t) => sum + t.shape.reduce((a, b) => a * b, 1), 0);
}

function writeJson(file: string, value: unknown): void {
  fs.writeFileSync(file, JSON.stringify(value, null, 2) + '\n');
}

/** Writes a random checkpoint (and adapters) into `outDir`, creating it; existing files there are overwritten. */
export async function makeModel(opts: MakeModelOptions): Promise<MadeModel> {
  const spec = PRESETS[opts.preset];
  if (spec === undefined) throw new TesseraError('INVALID_ARGUMENT', `\`preset\` must be "tiny" or "small". Given: ${JSON.stringify(opts.preset)}`);
  const seed = opts.seed ?? 0;
  const numAdapters = opts.numAdapters ?? 2;
  const dtype = opts.dtype ?? spec.dtype;
  if (!Number.isSafeInteger(seed) || seed < 0) throw new TesseraError('INVALID_ARGUMENT', `\`seed\` must be a non-negative integer. Given: ${seed}`);
  if (!Number.isSafeInteger(numAdapters) || numAdapters < 0) {
    throw new TesseraError('INVALID_ARGUMENT', `\`numAdapters\` must be a non-negative integer. Given: ${numAdapters}`);
  }
  const name = modelName(opts.preset, seed);
  const tokenizer = generateTokenizer({ numMerges: spec.numMerges, modelMaxLengthTokens: spec.maxPositionEmbeddings });
  const config: ModelConfig = {
    family: 'llama',
    modelType: 'llama',
    vocabSize: spec.vocabSize ?? Math.ceil(tokenizer.vocabSize / 64) * 64,
    hiddenSize: spec.hiddenSize,
    intermediateSize: spec.intermediateSize,
    numLayers: spec.numLayers,
    numHeads: spec.numHeads,
    numKvHeads: spec.numKvHeads,
    headDim: spec.hiddenSize / spec.numHeads,
    rmsNormEps: RMS_NORM_EPS,
    ropeTheta: ROPE_THETA,
    maxPositionEmbeddings: spec.maxPositionEmbeddings,
    tieWordEmbeddings: spec.tieWordEmbeddings,
    attentionBias: false,
    qkNorm: false,
    bosTokenId: tokenizer.bosTokenId,
    eosTokenIds: [tokenizer.eosTokenId],
  };

  fs.mkdirSync(opts.outDir, { recursive: true });
  writeJson(path.join(opts.outDir, 'config.json'), configJson(config, name, dtype));
  writeJson(path.join(opts.outDir, 'tokenizer.json'), tokenizer.tokenizerJson);
  writeJson(path.join(opts.outDir, 'tokenizer_config.json'), tokenizer.tokenizerConfigJson);

  const adapterRanks = Array.from({ length: numAdapters }, (_, i) => spec.adapterRanks[i % 2]);
  const baseTensors = modelTensors(config, seed, dtype, tokenizer.vocabSize);
  const totalElements =
    numElements(baseTensors) + adapterRanks.reduce((sum, r) => sum + numElements(adapterTensors(config, r, 0, '')), 0);
  let doneBefore = 0;
  const progress = (done: number) => opts.onProgress?.(doneBefore + done, totalElements);

  await writeSafetensors(path.join(opts.outDir, 'model.safetensors'), baseTensors, { format: 'pt' }, { onProgress: progress });
  doneBefore += numElements(baseTensors);

  const adapterDirs: string[] = [];
  for (let i = 0; i < numAdapters; i++) {
    const dir = path.join(opts.outDir, 'adapters', `adapter-${i}`);
    await writeRandomAdapter({ dir, config, rank: adapterRanks[i], seed, streamLabel: `adapter-${i}`, baseModel: name, onProgress: progress });
    doneBefore += numElements(adapterTensors(config, adapterRanks[i], 0, ''));
    adapterDirs.push(dir);
  }
  return { outDir: opts.outDir, config, adapterDirs };
}

/** Version of the generator output; bump when generated bytes change so caches regenerate. */
const DEFAULT_MODEL_VERSION = 'v1';

/** Where the default model lives: <cacheRoot>/default-small-s0-v1, cacheRoot = $TESSERA_CACHE_DIR or ~/.cache/tessera. */
export function defaultModelDir(cacheRoot?: string): string {
  const root = cacheRoot ?? process.env.TESSERA_CACHE_DIR ?? path.join(os.homedir(), '.cache', 'tessera');
  return path.join(root, `default-small-s0-${DEFAULT_MODEL_VERSION}`);
}

export interface EnsureDefaultModelOptions {
  cacheRoot?: string;
  onProgress?: (doneElements: number, totalElements: number) => void;
}

/**
 * Returns the default model's directory (small preset, seed 0, 4 adapters), generating it on first use into a
 * temporary sibling directory renamed into place, so readers never see a half-written model and racing processes
 * end with one complete copy.
 */
export async function ensureDefaultModel(opts: EnsureDefaultModelOptions = {}): Promise<string> {
  const dir = defaultModelDir(opts.cacheRoot);
  await ensureDirOnce(dir, async (tmpDir) => {
    await makeModel({ preset: 'small', outDir: tmpDir, numAdapters: 4, seed: 0, onProgress: opts.onProgress });
  });
  return dir;
}
