import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, test } from 'vitest';
import { openCheckpoint } from '../../../src/model/checkpoint/checkpoint.ts';
import { makeModel } from '../../../src/model/checkpoint/make-model.ts';
import { decodeGgml } from './ggml-blocks.ts';
import { GGUF_TOKEN_TYPE } from './gguf-format.ts';
import { plainValue, readGguf, readGgufTensorBytes, type GgufFile } from './gguf-reader.ts';
import { PADDING_TOKEN_PREFIX, permuteRotaryRows, writeLlamaGguf } from './llama-gguf.ts';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tessera-llama-gguf-'));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

describe('a Tessera checkpoint as llama.cpp GGUF (tiny model)', async () => {
  const hfDir = path.join(dir, 'hf');
  await makeModel({ preset: 'tiny', outDir: hfDir, numAdapters: 0, seed: 5 });
  const checkpoint = openCheckpoint(hfDir);
  const config = checkpoint.config;
  const hf = (name: string) => checkpoint.tensors.readFloat32(name).data;
  afterAll(() => checkpoint.tensors.close());
  const tokenizerJson = JSON.parse(fs.readFileSync(path.join(hfDir, 'tokenizer.json'), 'utf8')) as { model: { vocab: Record<string, number>; merges: string[] } };

  const written = new Map<string, GgufFile>();
  const fileFor = (type: 'F32' | 'Q8_0' | 'Q4_0'): { file: string; gguf: GgufFile } => {
    const file = path.join(dir, `tiny-${type}.gguf`);
    if (!written.has(type)) {
      writeLlamaGguf({ hfDir, outFile: file, type });
      written.set(type, readGguf(file));
    }
    return { file, gguf: written.get(type)! };
  };
  const tensor = (type: 'F32' | 'Q8_0' | 'Q4_0', name: string): Float32Array => {
    const { file, gguf } = fileFor(type);
    const info = gguf.tensors.find((t) => t.name === name)!;
    return decodeGgml(info.type, readGgufTensorBytes(file, info), info.dims.reduce((a, b) => a * b, 1));
  };

  test('hyperparameters as the llama architecture reads them', () => {
    const meta = (key: string) => plainValue(fileFor('F32').gguf.metadata.get(key)!);
    expect(meta('general.architecture')).toBe('llama');
    expect(meta('llama.block_count')).toBe(config.numLayers);
    expect(meta('llama.embedding_length')).toBe(config.hiddenSize);
    expect(meta('llama.feed_forward_length')).toBe(config.intermediateSize);
    expect(meta('llama.attention.head_count')).toBe(config.numHeads);
    expect(meta('llama.attention.head_count_kv')).toBe(config.numKvHeads);
    expect(meta('llama.rope.dimension_count')).toBe(config.headDim);
    expect(meta('llama.rope.freq_base')).toBe(Math.fround(config.ropeTheta));
    expect(meta('llama.attention.layer_norm_rms_epsilon')).toBe(Math.fround(config.rmsNormEps));
    expect(meta('llama.context_length')).toBe(config.maxPositionEmbeddings);
    expect(meta('tokenizer.ggml.eos_token_id')).toBe(config.eosTokenIds[0]);
    expect(fileFor('F32').gguf.metadata.has('general.quantization_version')).toBe(false);
    expect(plainValue(fileFor('Q4_0').gguf.metadata.get('general.file_type')!)).toBe(2);
  });

  test('the vocabulary: one unique token per id, tokenizer ids kept, specials control, padding ids unused', () => {
    const meta = fileFor('F32').gguf.metadata;
    const tokens = plainValue(meta.get('tokenizer.ggml.tokens')!) as string[];
    const types = plainValue(meta.get('tokenizer.ggml.token_type')!) as number[];
    expect(tokens.length).toBe(config.vocabSize);
    expect(types.length).toBe(config.vocabSize);
    expect(new Set(tokens).size).toBe(tokens.length);
    for (const [text, id] of Object.entries(tokenizerJson.model.vocab)) expect(tokens[id]).toBe(text);
    expect(types[0]).toBe(GGUF_TOKEN_TYPE.control); // <|endoftext|>
    const numReal = Object.keys(tokenizerJson.model.vocab).length;
    expect(numReal).toBeLessThan(config.vocabSize); // the tiny preset pads its vocabulary
    for (let id = numReal; id < config.vocabSize; id++) {
      expect(tokens[id].startsWith(PADDING_TOKEN_PREFIX)).toBe(true);
      expect(types[id]).toBe(GGUF_TOKEN_TYPE.unused);
    }
    expect(plainValue(meta.get('tokenizer.ggml.merges')!)).toEqual(tokenizerJson.model.merges);
  });

  test('every weight is there under its llama.cpp name, dims reversed, norms in F32, matrices in the chosen type', () => {
    const { gguf } = fileFor('Q8_0');
    const byName = new Map(gguf.tensors.map((t) => [t.name, t]));
    expect(gguf.tensors.length).toBe(2 + 9 * config.numLayers + (config.tieWordEmbeddings ? 0 : 1));
    expect(byName.get('token_embd.weight')).toMatchObject({ type: 'Q8_0', dims: [config.hiddenSize, config.vocabSize] });
    expect(byName.get('blk.1.ffn_down.weight')).toMatchObject({ type: 'Q8_0', dims: [config.intermediateSize, config.hiddenSize] });
    expect(byName.get('blk.0.attn_k.weight')).toMatchObject({ type: 'Q8_0', dims: [config.hiddenSize, config.numKvHeads * config.headDim] });
    expect(byName.get('blk.0.attn_norm.weight')).toMatchObject({ type: 'F32', dims: [config.hiddenSize] });
    expect(byName.get('output_norm.weight')).toMatchObject({ type: 'F32' });
  });

  test('F32 tensors hold the checkpoint values; q and k rows moved to the interleaved rotary layout', () => {
    expect(tensor('F32', 'blk.1.attn_v.weight')).toEqual(hf('model.layers.1.self_attn.v_proj.weight'));
    expect(tensor('F32', 'output_norm.weight')).toEqual(hf('model.norm.weight'));
    const q = hf('model.layers.0.self_attn.q_proj.weight');
    const gq = tensor('F32', 'blk.0.attn_q.weight');
    const cols = config.hiddenSize;
    const half = config.headDim / 2;
    const row = (w: Float32Array, r: number) => Array.from(w.subarray(r * cols, (r + 1) * cols));
    for (const h of [0, config.numHeads - 1]) {
      for (const i of [0, 1, half - 1]) {
        expect(row(gq, h * config.headDim + 2 * i)).toEqual(row(q, h * config.headDim + i));
        expect(row(gq, h * config.headDim + 2 * i + 1)).toEqual(row(q, h * config.headDim + half + i));
      }
    }
    expect(tensor('F32', 'blk.0.attn_k.weight')).toEqual(permuteRotaryRows(hf('model.layers.0.self_attn.k_proj.weight'), config.numKvHeads, config.headDim));
  });

  test('rotary permutation keeps every head\'s q.k scores (q and k permuted alike)', () => {
    const d = config.headDim;
    const q = Float32Array.from({ length: 2 * d * 3 }, (_, i) => Math.cos(i));
    const k = Float32Array.from({ length: 2 * d * 3 }, (_, i) => Math.sin(i * 1.3));
    const pq = permuteRotaryRows(q, 2, d);
    const pk = permuteRotaryRows(k, 2, d);
    const dot = (a: Float32Array, b: Float32Array, head: number, col: number) => {
      let s = 0;
      for (let r = 0; r < d; r++) s += a[(head * d + r) * 3 + col] * b[(head * d + r) * 3 + col];
      return s;
    };
    for (const head of [0, 1]) for (const col of [0, 2]) expect(dot(pq, pk, head, col)).toBeCloseTo(dot(q, k, head, col), 10);
  });

  test('quantized files decode to the checkpoint within their block error', () => {
    const w = hf('model.layers.0.mlp.up_proj.weight');
    for (const [type, stepsPerMax] of [['Q8_0', 127], ['Q4_0', 8]] as const) {
      const back = tensor(type, 'blk.0.ffn_up.weight');
      for (let b = 0; b < w.length / 32; b++) {
        const block = w.subarray(b * 32, (b + 1) * 32);
        const step = Math.max(...Array.from(block, Math.abs)) / stepsPerMax;
        for (let j = 0; j < 32; j++) expect(Math.abs(back[b * 32 + j] - block[j])).toBeLessThanOrEqual(step * 1.01 + 1e-6);
      }
    }
  });
});
