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

function readConfig(dir: string): ModelConfig {
  const file = path.join(dir, 'config.json');
  let json: unknown;
  try {
    json = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (err) {
    throw new TesseraError('CHECKPOINT_INVALID', `${file}: cannot read JSON (${(err as Error).message})`, { cause: err });
  }
  return parseHfConfig(json, file);
}

/** EOS ids from generation_config.json (chat models often list several there), merged into the config's. */
function generationEosIds(dir: string, warnings: string[]): number[] {
  const file = path.join(dir, 'generation_config.json');
  if (!fs.existsSync(file)) return [];
  try {
    const json = JSON.parse(fs.readFileSync(file, 'utf8')) as { eos_token_id?: unknown };
    const v = json.eos_token_id;
    const ids = Array.isArray(v) ? v : v === undefined || v === null ? [] : [v];
    if (ids.every((id) => Number.isSafeInteger(id) && id >= 0)) return ids as number[];
    warnings.push(`${file}: ignoring eos_token_id ${JSON.stringify(v)} (not token ids)`);
  } catch (err) {
    warnings.push(`${file}: ignored, cannot read JSON (${(err as Error).message})`);
  }
  return [];
}

function checkTensors(config: ModelConfig, tensors: TensorSource, warnings: string[]): void {
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
  const config = readConfig(dir);
  const tokenizer = loadTokenizer(dir);
  if (tokenizer === null) warnings.push(`${dir} has no tokenizer.json: only token-id prompts can be served`);
  const eosTokenIds = [...new Set([...config.eosTokenIds, ...generationEosIds(dir, warnings), ...(tokenizer?.eosTokenIds ?? [])])];
  const bosTokenId = config.bosTokenId ?? tokenizer?.bosTokenId ?? null;
  if (tokenizer !== null && tokenizer.vocabSize > config.vocabSize) {
    warnings.push(`tokenizer has ${tokenizer.vocabSize} token ids but config.json vocab_size is ${config.vocabSize}: ids >= ${config.vocabSize} cannot be fed to the model`);
  }
  const tensors = openCheckpointTensors(dir);
  try {
    checkTensors(config, tensors, warnings);
  } catch (err) {
    tensors.close();
    throw err;
  }
  return { dir, config: { ...config, eosTokenIds, bosTokenId }, tensors, tokenizer, warnings };
}
