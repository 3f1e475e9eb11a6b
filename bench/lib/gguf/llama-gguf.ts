/**
 * A Hugging Face Llama checkpoint (as `tessera make-model` writes it: config.json, model.safetensors, a byte-level BPE
 * tokenizer.json) written as a GGUF file that llama.cpp loads, with every weight matrix in one type (F32, F16, Q8_0 or
 * Q4_0) and the norm vectors in F32.
 *
 * - Tensor names: model.embed_tokens -> token_embd, layers.i.{input_layernorm, self_attn.{q,k,v,o}_proj,
 *   post_attention_layernorm, mlp.{gate,up,down}_proj} -> blk.i.{attn_norm, attn_q, attn_k, attn_v, attn_output,
 *   ffn_norm, ffn_gate, ffn_up, ffn_down}, model.norm -> output_norm, lm_head -> output (absent when tied: llama.cpp
 *   then uses token_embd for the output).
 * - Rotary: Hugging Face rotates the pairs (i, i + headDim/2) of each head, llama.cpp's `llama` architecture the pairs
 *   (2i, 2i + 1). Row r of each head of q_proj and k_proj is moved so that the two layouts compute the same scores:
 *   GGUF row 2i = HF row i, GGUF row 2i + 1 = HF row i + headDim/2 (q.k is unchanged when q and k are permuted alike).
 * - Vocabulary: every id below config.vocab_size gets a token; the tokenizer's tokens keep their ids and byte-level
 *   text, special tokens are control tokens, ids past the tokenizer (padding rows of the embedding) get unique
 *   placeholder names of type unused. Merges are copied ("a b" strings). BOS/EOS ids from config.json.
 */
import fs from 'node:fs';
import path from 'node:path';
import { openCheckpoint } from '../../../src/model/checkpoint/checkpoint.ts';
import type { ModelConfig } from '../../../src/model/model-config.ts';
import { encodeGgml } from './ggml-blocks.ts';
import { GGUF_FILE_TYPE, GGUF_TOKEN_TYPE, type GgmlTypeName, type GgufValue } from './gguf-format.ts';
import { gguf, writeGguf, type GgufTensorToWrite } from './gguf-writer.ts';

export interface LlamaGgufOptions {
  /** Hugging Face checkpoint directory. */
  hfDir: string;
  outFile: string;
  /** Type of every weight matrix (embedding and output included). */
  type: GgmlTypeName;
}

export interface GgufVocabulary {
  tokens: string[];
  tokenTypes: number[];
  merges: string[];
}

/** Prefix of the placeholder tokens written for ids past the tokenizer's vocabulary. */
export const PADDING_TOKEN_PREFIX = '<|tessera_unused_';

/** The vocabulary of `tokenizer.json` spread over `vocabSize` ids, as GGUF's tokenizer.ggml.* arrays hold it. */
export function ggufVocabulary(tokenizerJson: unknown, vocabSize: number): GgufVocabulary {
  const t = tokenizerJson as { model?: { type?: string; vocab?: Record<string, number>; merges?: Array<string | [string, string]> }; added_tokens?: Array<{ id: number; content: string; special?: boolean }> };
  if (t.model?.type !== 'BPE' || !t.model.vocab || !t.model.merges) throw new Error('tokenizer.json: expected a BPE model with vocab and merges');
  const tokens = new Array<string | undefined>(vocabSize);
  const tokenTypes = new Array<number>(vocabSize).fill(GGUF_TOKEN_TYPE.normal);
  const place = (text: string, id: number) => {
    if (!Number.isInteger(id) || id < 0 || id >= vocabSize) throw new Error(`tokenizer.json: token ${JSON.stringify(text)} has id ${id}, outside [0, ${vocabSize})`);
    if (tokens[id] !== undefined && tokens[id] !== text) throw new Error(`tokenizer.json: id ${id} is both ${JSON.stringify(tokens[id])} and ${JSON.stringify(text)}`);
    tokens[id] = text;
  };
  for (const [text, id] of Object.entries(t.model.vocab)) place(text, id);
  for (const added of t.added_tokens ?? []) {
    place(added.content, added.id);
    if (added.special) tokenTypes[added.id] = GGUF_TOKEN_TYPE.control;
  }
  const taken = new Set(tokens.filter((x) => x !== undefined));
  for (let id = 0; id < vocabSize; id++) {
    if (tokens[id] !== undefined) continue;
    let name = `${PADDING_TOKEN_PREFIX}${id}|>`;
    while (taken.has(name)) name = `${name}_`;
    tokens[id] = name;
    tokenTypes[id] = GGUF_TOKEN_TYPE.unused;
  }
  const merges = t.model.merges.map((m) => (typeof m === 'string' ? m : `${m[0]} ${m[1]}`));
  return { tokens: tokens as string[], tokenTypes, merges };
}

/** Rows of a [numHeads * headDim, cols] projection reordered from Hugging Face's rotary layout to llama.cpp's (file comment). */
export function permuteRotaryRows(w: Float32Array, numHeads: number, headDim: number): Float32Array {
  const cols = w.length / (numHeads * headDim);
  const half = headDim / 2;
  const out = new Float32Array(w.length);
  for (let h = 0; h < numHeads; h++) {
    for (let i = 0; i < half; i++) {
      const base = h * headDim;
      out.set(w.subarray((base + i) * cols, (base + i + 1) * cols), (base + 2 * i) * cols);
      out.set(w.subarray((base + i + half) * cols, (base + i + half + 1) * cols), (base + 2 * i + 1) * cols);
    }
  }
  return out;
}

function modelMetadata(config: ModelConfig, name: string, type: GgmlTypeName, vocab: GgufVocabulary): Array<[string, GgufValue]> {
  const quantized = type === 'Q4_0' || type === 'Q8_0';
  return [
    ['general.architecture', gguf.str('llama')],
    ['general.name', gguf.str(name)],
    ['general.alignment', gguf.u32(32)],
    ['general.file_type', gguf.u32(GGUF_FILE_TYPE[type])],
    ...(quantized ? [['general.quantization_version', gguf.u32(2)] as [string, GgufValue]] : []),
    ['llama.vocab_size', gguf.u32(config.vocabSize)],
    ['llama.context_length', gguf.u32(config.maxPositionEmbeddings)],
    ['llama.embedding_length', gguf.u32(config.hiddenSize)],
    ['llama.block_count', gguf.u32(config.numLayers)],
    ['llama.feed_forward_length', gguf.u32(config.intermediateSize)],
    ['llama.attention.head_count', gguf.u32(config.numHeads)],
    ['llama.attention.head_count_kv', gguf.u32(config.numKvHeads)],
    ['llama.attention.key_length', gguf.u32(config.headDim)],
    ['llama.attention.value_length', gguf.u32(config.headDim)],
    ['llama.attention.layer_norm_rms_epsilon', gguf.f32(config.rmsNormEps)],
    ['llama.rope.dimension_count', gguf.u32(config.headDim)],
    ['llama.rope.freq_base', gguf.f32(config.ropeTheta)],
    ['tokenizer.ggml.model', gguf.str('gpt2')],
    ['tokenizer.ggml.pre', gguf.str('default')],
    ['tokenizer.ggml.tokens', gguf.strings(vocab.tokens)],
    ['tokenizer.ggml.token_type', gguf.i32s(vocab.tokenTypes)],
    ['tokenizer.ggml.merges', gguf.strings(vocab.merges)],
    ...(config.bosTokenId !== null ? [['tokenizer.ggml.bos_token_id', gguf.u32(config.bosTokenId)] as [string, GgufValue]] : []),
    ['tokenizer.ggml.eos_token_id', gguf.u32(config.eosTokenIds[0] ?? 0)],
    ['tokenizer.ggml.add_bos_token', gguf.bool(false)],
    ['tokenizer.ggml.add_eos_token', gguf.bool(false)],
  ];
}

/** The GGUF tensor of each HF tensor: name, and the transform applied to its values. */
function tensorPlan(config: ModelConfig): Array<{ gguf: string; hf: string; transform?: (w: Float32Array) => Float32Array }> {
  const plan: Array<{ gguf: string; hf: string; transform?: (w: Float32Array) => Float32Array }> = [{ gguf: 'token_embd.weight', hf: 'model.embed_tokens.weight' }];
  for (let i = 0; i < config.numLayers; i++) {
    const hf = `model.layers.${i}`;
    const blk = `blk.${i}`;
    plan.push(
      { gguf: `${blk}.attn_norm.weight`, hf: `${hf}.input_layernorm.weight` },
      { gguf: `${blk}.attn_q.weight`, hf: `${hf}.self_attn.q_proj.weight`, transform: (w) => permuteRotaryRows(w, config.numHeads, config.headDim) },
      { gguf: `${blk}.attn_k.weight`, hf: `${hf}.self_attn.k_proj.weight`, transform: (w) => permuteRotaryRows(w, config.numKvHeads, config.headDim) },
      { gguf: `${blk}.attn_v.weight`, hf: `${hf}.self_attn.v_proj.weight` },
      { gguf: `${blk}.attn_output.weight`, hf: `${hf}.self_attn.o_proj.weight` },
      { gguf: `${blk}.ffn_norm.weight`, hf: `${hf}.post_attention_layernorm.weight` },
      { gguf: `${blk}.ffn_gate.weight`, hf: `${hf}.mlp.gate_proj.weight` },
      { gguf: `${blk}.ffn_up.weight`, hf: `${hf}.mlp.up_proj.weight` },
      { gguf: `${blk}.ffn_down.weight`, hf: `${hf}.mlp.down_proj.weight` },
    );
  }
  plan.push({ gguf: 'output_norm.weight', hf: 'model.norm.weight' });
  if (!config.tieWordEmbeddings) plan.push({ gguf: 'output.weight', hf: 'lm_head.weight' });
  return plan;
}

/** Writes the checkpoint as GGUF; returns the file's size in bytes. */
export function writeLlamaGguf(opts: LlamaGgufOptions): number {
  const checkpoint = openCheckpoint(opts.hfDir);
  try {
    const config = checkpoint.config;
    if (config.family !== 'llama' || config.attentionBias || config.qkNorm) throw new Error(`${opts.hfDir}: only plain Llama checkpoints are written as GGUF (family ${config.family})`);
    const tokenizerFile = path.join(opts.hfDir, 'tokenizer.json');
    const vocab = ggufVocabulary(JSON.parse(fs.readFileSync(tokenizerFile, 'utf8')), config.vocabSize);
    const configJson = JSON.parse(fs.readFileSync(path.join(opts.hfDir, 'config.json'), 'utf8')) as { _name_or_path?: string };
    const tensors: GgufTensorToWrite[] = tensorPlan(config).map((p) => {
      const shape = checkpoint.tensors.info(p.hf).shape; // HF row-major [rows, cols] or [n]
      const dims = [...shape].reverse();
      const type: GgmlTypeName = shape.length === 1 ? 'F32' : opts.type;
      return {
        name: p.gguf,
        dims,
        type,
        data: () => {
          const values = checkpoint.tensors.readFloat32(p.hf).data;
          return encodeGgml(type, p.transform ? p.transform(values) : values, dims[0]);
        },
      };
    });
    return writeGguf(opts.outFile, { metadata: modelMetadata(config, configJson._name_or_path ?? path.basename(opts.hfDir), opts.type, vocab), tensors });
  } finally {
    checkpoint.tensors.close();
  }
}
