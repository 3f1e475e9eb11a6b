/**
 * A Hugging Face checkpoint directory: config.json, safetensors weights (single or sharded), tokenizer.
 * openCheckpoint checks that every tensor the architecture needs is present with the right shape before anything
 * else touches the weights.
 */
import fs from 'node:fs';
import path from 'node:path';
import { TesseraError } from '../../errors.ts';
import type { ModelConfig } from '../model-config.ts';
import { loadTokenizer, type Tokenizer } from '../tokenizer/tokenizer.ts';
import { parseHfConfig } from './hf-config.ts';
import { readJsonFile } from './regular-file.ts';
import { openCheckpointTensors } from './safetensors-reader.ts';
import type { TensorSource } from './tensor.ts';

export interface Checkpoint {
  dir: string;
  config: ModelConfig;
  tensors: TensorSource;
  tokenizer: Tokenizer | null;
  /** Things that load but deserve a log line (no tokenizer, unused tensors, ...). */
  warnings: string[];
}

const FLOAT_DTYPES = new Set(['F32', 'F16', 'BF16', 'F64']);

/** Every tensor the architecture reads, by Hugging Face name, with its shape (Linear weights as [out, in]). */
export function expectedTensorShapes(config: ModelConfig): Map<string, number[]> {
  const { hiddenSize: h, headDim: d, numHeads, numKvHeads, intermediateSize: inter, vocabSize: v } = config;
  const q = numHeads * d;
  const kv = numKvHeads * d;
  const shapes = new Map<string, number[]>();
  shapes.set('model.embed_tokens.weight', [v, h]);
  for (let i = 0; i < config.numLayers; i++) {
    const p = `model.layers.${i}`;
    shapes.set(`${p}.input_layernorm.weight`, [h]);
    shapes.set(`${p}.self_attn.q_proj.weight`, [q, h]);
    shapes.set(`${p}.self_attn.k_proj.weight`, [kv, h]);
    shapes.set(`${p}.self_attn.v_proj.weight`, [kv, h]);
    if (config.attentionBias) {
      shapes.set(`${p}.self_attn.q_proj.bias`, [q]);
      shapes.set(`${p}.self_attn.k_proj.bias`, [kv]);
      shapes.set(`${p}.self_attn.v_proj.bias`, [kv]);
    }
    if (config.qkNorm) {
      shapes.set(`${p}.self_attn.q_norm.weight`, [d]);
      shapes.set(`${p}.self_attn.k_norm.weight`, [d]);
    }
    shapes.set(`${p}.self_attn.o_proj.weight`, [h, q]);
    shapes.set(`${p}.post_attention_layernorm.weight`, [h]);
    shapes.set(`${p}.mlp.gate_proj.weight`, [inter, h]);
    shapes.set(`${p}.mlp.up_proj.weight`, [inter, h]);
    shapes.set(`${p}.mlp.down_proj.weight`, [h, inter]);
  }
  shapes.set('model.norm.weight', [h]);
  if (!config.tieWordEmbeddings) shapes.set('lm_head.weight', [v, h]);
  return shapes;
}

/** config.json of `dir`: the raw JSON (for the model id) and the checked config. */
export function readHfConfig(dir: string): { json: unknown; config: ModelConfig } {
  const file = path.join(dir, 'config.json');
  const json = readJsonFile(file);
  return { json, config: parseHfConfig(json, file) };
}

/**
 * EOS ids from generation_config.json (chat models often list several there), merged into the config's. Values that
 * are not token ids are ignored with a warning; ids past the vocabulary are CHECKPOINT_INVALID (they would never stop).
 */
function generationEosIds(dir: string, vocabSize: number, warnings: string[]): number[] {
  const file = path.join(dir, 'generation_config.json');
  if (!fs.existsSync(file)) return [];
  let json: { eos_token_id?: unknown };
  try {
    json = readJsonFile(file) as { eos_token_id?: unknown };
  } catch (err) {
    warnings.push(`${file}: ignored, ${(err as Error).message}`);
    return [];
  }
  const v = typeof json === 'object' && json !== null ? json.eos_token_id : undefined;
  const ids = Array.isArray(v) ? v : v === undefined || v === null ? [] : [v];
  if (!ids.every((id) => Number.isSafeInteger(id) && id >= 0)) {
    warnings.push(`${file}: ignoring eos_token_id ${JSON.stringify(v)} (not token ids)`);
    return [];
  }
  if (ids.some((id) => id >= vocabSize)) {
    throw new TesseraError('CHECKPOINT_INVALID', `${file}: \`eos_token_id\` must be < vocab_size (${vocabSize}) of config.json. Given: ${JSON.stringify(v)}`);
  }
  return ids as number[];
}

/**
 * The checkpoint's tokenizer checked against the model (every id within vocab_size), and the EOS ids of
 * generation_config.json and the tokenizer; null tokenizer when the directory has no tokenizer.json.
 */
export function loadCheckpointTokenizer(dir: string, config: ModelConfig, warnings: string[] = []): { tokenizer: Tokenizer | null; extraEosTokenIds: number[] } {
  const tokenizer = loadTokenizer(dir, { vocabSize: config.vocabSize });
  return { tokenizer, extraEosTokenIds: [...generationEosIds(dir, config.vocabSize, warnings), ...(tokenizer?.eosTokenIds ?? [])] };
}

/** Checks that every tensor the architecture needs is present with the shape config.json implies (header only). */
export function checkCheckpointTensors(config: ModelConfig, tensors: TensorSource, warnings: string[] = []): void {
  const expected = expectedTensorShapes(config);
  for (const [name, shape] of expected) {
    if (!tensors.has(name)) throw new TesseraError('CHECKPOINT_INVALID', `checkpoint is missing tensor "${name}" (expected shape ${JSON.stringify(shape)})`);
    const info = tensors.info(name);
    if (info.shape.length !== shape.length || info.shape.some((dim, i) => dim !== shape[i])) {
      throw new TesseraError(
        'CHECKPOINT_INVALID',
        `${info.file}: tensor "${name}" has shape ${JSON.stringify(info.shape)}, expected ${JSON.stringify(shape)} from config.json`,
      );
    }
    if (!FLOAT_DTYPES.has(info.dtype)) {
      throw new TesseraError('CHECKPOINT_INVALID', `${info.file}: tensor "${name}" has dtype ${info.dtype}, expected F32, F16, BF16 or F64`);
    }
  }
  const unused = tensors.names().filter((n) => !expected.has(n));
  if (unused.length > 0) {
    const shown = unused.slice(0, 5).map((n) => `"${n}"`).join(', ');
    warnings.push(`checkpoint has ${unused.length} tensor(s) the model does not use, ignored: ${shown}${unused.length > 5 ? ', ...' : ''}`);
  }
}

/** Opens and checks a checkpoint directory. Call `tensors.close()` when done reading weights. */
export function openCheckpoint(dir: string): Checkpoint {
  if (!fs.existsSync(dir) || !fs.statSync(dir).isDirectory()) {
    throw new TesseraError('MODEL_NOT_FOUND', `checkpoint directory ${dir} does not exist`);
  }
  const warnings: string[] = [];
  const { config } = readHfConfig(dir);
  const { tokenizer, extraEosTokenIds } = loadCheckpointTokenizer(dir, config, warnings);
  if (tokenizer === null) warnings.push(`${dir} has no tokenizer.json: only token-id prompts can be served`);
  const eosTokenIds = [...new Set([...config.eosTokenIds, ...extraEosTokenIds])];
  const bosTokenId = config.bosTokenId ?? tokenizer?.bosTokenId ?? null;
  const tensors = openCheckpointTensors(dir);
  try {
    checkCheckpointTensors(config, tensors, warnings);
  } catch (err) {
    tensors.close();
    throw err;
  }
  return { dir, config: { ...config, eosTokenIds, bosTokenId }, tensors, tokenizer, warnings };
}
