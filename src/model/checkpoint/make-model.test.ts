import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, onTestFinished, test } from 'vitest';
import { TesseraError } from '../../errors.ts';
import { ensureDirOnce } from './atomic-dir.ts';
import { expectedTensorShapes, openCheckpoint } from './checkpoint.ts';
import { defaultModelDir, makeModel } from './make-model.ts';
import { openSafetensors } from './safetensors-reader.ts';
import { writeSafetensors } from './safetensors-writer.ts';

function tempDir(): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tessera-mk-'));
  onTestFinished(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** Every file under `dir`, relative path -> bytes. */
function snapshot(dir: string): Map<string, Buffer> {
  const out = new Map<string, Buffer>();
  for (const rel of fs.readdirSync(dir, { recursive: true }) as string[]) {
    const full = path.join(dir, rel);
    if (fs.statSync(full).isFile()) out.set(rel, fs.readFileSync(full));
  }
  return out;
}

function stats(values: Float32Array): { mean: number; std: number } {
  let s = 0;
  let s2 = 0;
  for (const v of values) {
    s += v;
    s2 += v * v;
  }
  const mean = s / values.length;
  return { mean, std: Math.sqrt(s2 / values.length - mean * mean) };
}

describe('makeModel tiny', () => {
  test('writes an HF llama checkpoint with the tiny shape, tokenizer and PEFT adapters', async () => {
    const outDir = tempDir();
    const progress: Array<[number, number]> = [];
    const made = await makeModel({ preset: 'tiny', outDir, numAdapters: 3, seed: 7, onProgress: (d, t) => progress.push([d, t]) });
    expect(made.config).toMatchObject({ hiddenSize: 64, numLayers: 2, numHeads: 4, numKvHeads: 2, headDim: 16, intermediateSize: 128 });
    expect(made.config.vocabSize % 64).toBe(0);
    expect(made.adapterDirs).toEqual([0, 1, 2].map((i) => path.join(outDir, 'adapters', `adapter-${i}`)));

    const configJson = JSON.parse(fs.readFileSync(path.join(outDir, 'config.json'), 'utf8'));
    expect(configJson).toMatchObject({ architectures: ['LlamaForCausalLM'], model_type: 'llama', torch_dtype: 'float32', tie_word_embeddings: false, max_position_embeddings: 512, rope_theta: 10000 });

    const ck = openCheckpoint(outDir);
    onTestFinished(() => ck.tensors.close());
    expect(ck.warnings).toEqual([]);
    expect(ck.config).toEqual(made.config);
    expect(ck.tokenizer).not.toBeNull();
    expect(made.config.vocabSize - ck.tokenizer!.vocabSize).toBeGreaterThanOrEqual(0);
    expect(made.config.vocabSize - ck.tokenizer!.vocabSize).toBeLessThan(64);
    expect(ck.tensors.names().sort()).toEqual([...expectedTensorShapes(made.config).keys()].sort());
    expect(ck.tensors.info('lm_head.weight').dtype).toBe('F32');

    // Scales: linears ~ N(0, 1/fan_in), norms ~ 1 + small noise, lm_head ~ N(0, 16 / hidden).
    const q = stats(ck.tensors.readFloat32('model.layers.1.self_attn.q_proj.weight').data);
    expect(Math.abs(q.std - 1 / 8)).toBeLessThan(0.01);
    const down = stats(ck.tensors.readFloat32('model.layers.0.mlp.down_proj.weight').data);
    expect(Math.abs(down.std - 1 / Math.sqrt(128))).toBeLessThan(0.01);
    const norm = stats(ck.tensors.readFloat32('model.norm.weight').data);
    expect(Math.abs(norm.mean - 1)).toBeLessThan(0.05);
    const headData = ck.tensors.readFloat32('lm_head.weight').data;
    const numTokens = ck.tokenizer!.vocabSize;
    const head = stats(headData.subarray(0, numTokens * 64));
    expect(Math.abs(head.std - 0.5)).toBeLessThan(0.02);
    // Padding rows (ids the tokenizer never produces) are shrunk so they never win the argmax.
    const padding = stats(headData.subarray(numTokens * 64));
    expect(padding.std).toBeGreaterThan(0);
    expect(padding.std).toBeLessThan(0.01);

    const last = progress[progress.length - 1];
    expect(last[0]).toBe(last[1]);
    expect(progress.every(([d], i) => i === 0 || d >= progress[i - 1][0])).toBe(true);
  });

  test('same seed => byte-identical files; different seed => different weights', async () => {
    const a = tempDir();
    const b = tempDir();
    const c = tempDir();
    await makeModel({ preset: 'tiny', outDir: a, seed: 3, numAdapters: 2 });
    await makeModel({ preset: 'tiny', outDir: b, seed: 3, numAdapters: 2 });
    await makeModel({ preset: 'tiny', outDir: c, seed: 4, numAdapters: 2 });
    const sa = snapshot(a);
    const sb = snapshot(b);
    const sc = snapshot(c);
    expect([...sa.keys()].sort()).toEqual([...sb.keys()].sort());
    expect(sa.size).toBe(8); // config, weights, tokenizer, tokenizer config + 2 adapters x (config, weights)
    for (const [rel, bytes] of sa) expect(bytes.equals(sb.get(rel)!), rel).toBe(true);
    expect(sa.get('model.safetensors')!.equals(sc.get('model.safetensors')!)).toBe(false);
    expect(sa.get('tokenizer.json')!.equals(sc.get('tokenizer.json')!)).toBe(true);
    const adapter = path.join('adapters', 'adapter-0', 'adapter_model.safetensors');
    expect(sa.get(adapter)!.equals(sc.get(adapter)!)).toBe(false);
    // Adapters of one model differ from each other.
    const ra = openSafetensors(path.join(a, 'adapters', 'adapter-0', 'adapter_model.safetensors'));
    const rb = openSafetensors(path.join(a, 'adapters', 'adapter-1', 'adapter_model.safetensors'));
    const name = 'base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight';
    expect(ra.info(name).shape).toEqual([4, 64]);
    expect(rb.info(name).shape).toEqual([8, 64]);
    expect(ra.readFloat32(name).data.slice(0, 4)).not.toEqual(rb.readFloat32(name).data.slice(0, 4));
    ra.close();
    rb.close();
  });

  test('F16 and BF16 weights; generated tokenizer round-trips UTF-8', async () => {
    const outDir = tempDir();
    await makeModel({ preset: 'tiny', outDir, dtype: 'BF16', numAdapters: 0 });
    const ck = openCheckpoint(outDir);
    onTestFinished(() => ck.tensors.close());
    expect(ck.tensors.info('model.embed_tokens.weight').dtype).toBe('BF16');
    expect(JSON.parse(fs.readFileSync(path.join(outDir, 'config.json'), 'utf8')).torch_dtype).toBe('bfloat16');
    expect(fs.existsSync(path.join(outDir, 'adapters'))).toBe(false);
    const text = 'héllo wörld 世界 🙂\n\tx';
    expect(ck.tokenizer!.decode(ck.tokenizer!.encode(text))).toBe(text);
  });

  test('rejects bad options', async () => {
    const outDir = tempDir();
    await expect(makeModel({ preset: 'huge' as 'tiny', outDir })).rejects.toThrow(/`preset`/);
    await expect(makeModel({ preset: 'tiny', outDir, seed: -1 })).rejects.toThrow(/`seed`/);
    await expect(makeModel({ preset: 'tiny', outDir, numAdapters: 1.5 })).rejects.toThrow(/`numAdapters`/);
  });
});

describe('openCheckpoint', () => {
  async function tinyModel(): Promise<string> {
    const dir = tempDir();
    await makeModel({ preset: 'tiny', outDir: dir, numAdapters: 0 });
    return dir;
  }

  async function replaceTensor(dir: string, name: string, shape: number[] | null): Promise<void> {
    const src = openSafetensors(path.join(dir, 'model.safetensors'));
    const tensors = src.names().flatMap((n) => {
      if (n !== name) return [{ name: n, dtype: 'F32' as const, shape: src.info(n).shape, data: src.readFloat32(n).data }];
      if (shape === null) return [];
      return [{ name: n, dtype: 'F32' as const, shape, data: new Float32Array(shape.reduce((a, b) => a * b, 1)) }];
    });
    src.close();
    await writeSafetensors(path.join(dir, 'model.safetensors'), tensors);
  }

  function expectCheckpointError(dir: string, ...fragments: string[]): void {
    let caught: unknown;
    try {
      openCheckpoint(dir).tensors.close();
    } catch (err) {
      caught = err;
    }
    expect(caught).toBeInstanceOf(TesseraError);
    expect((caught as TesseraError).code).toBe('CHECKPOINT_INVALID');
    for (const f of fragments) expect((caught as Error).message).toContain(f);
  }

  test('detects a tensor with the wrong shape, naming tensor, actual and expected shapes', async () => {
    const dir = await tinyModel();
    await replaceTensor(dir, 'model.layers.1.self_attn.k_proj.weight', [64, 64]);
    expectCheckpointError(dir, '"model.layers.1.self_attn.k_proj.weight"', 'shape [64,64]', 'expected [32,64]');
  });

  test('detects a missing tensor', async () => {
    const dir = await tinyModel();
    await replaceTensor(dir, 'model.layers.0.mlp.up_proj.weight', null);
    expectCheckpointError(dir, 'missing tensor "model.layers.0.mlp.up_proj.weight"', '[128,64]');
  });

  test('config and tensors must agree: a different vocab_size fails on the embedding', async () => {
    const dir = await tinyModel();
    const file = path.join(dir, 'config.json');
    fs.writeFileSync(file, JSON.stringify({ ...JSON.parse(fs.readFileSync(file, 'utf8')), vocab_size: 640 }));
    expectCheckpointError(dir, '"model.embed_tokens.weight"', 'expected [640,64]');
  });

  test('extra tensors and a missing tokenizer load with warnings; generation_config adds eos ids', async () => {
    const dir = await tinyModel();
    const src = openSafetensors(path.join(dir, 'model.safetensors'));
    const tensors = src.names().map((n) => ({ name: n, dtype: 'F32' as const, shape: src.info(n).shape, data: src.readFloat32(n).data }));
    src.close();
    tensors.push({ name: 'model.layers.0.self_attn.rotary_emb.inv_freq', dtype: 'F32', shape: [8], data: new Float32Array(8) });
    await writeSafetensors(path.join(dir, 'model.safetensors'), tensors);
    fs.rmSync(path.join(dir, 'tokenizer.json'));
    fs.writeFileSync(path.join(dir, 'generation_config.json'), JSON.stringify({ eos_token_id: [0, 2] }));
    const ck = openCheckpoint(dir);
    ck.tensors.close();
    expect(ck.tokenizer).toBeNull();
    expect(ck.config.eosTokenIds).toEqual([0, 2]);
    expect(ck.warnings.some((w) => w.includes('no tokenizer.json'))).toBe(true);
    expect(ck.warnings.some((w) => w.includes('rotary_emb.inv_freq'))).toBe(true);
  });

  test('missing directory and missing config.json', () => {
    const dir = tempDir();
    expect(() => openCheckpoint(path.join(dir, 'nope'))).toThrow(expect.objectContaining({ code: 'MODEL_NOT_FOUND' }));
    expectCheckpointError(dir, 'config.json');
  });
});

describe('expectedTensorShapes', () => {
  test('qwen2 adds q/k/v biases, qwen3 adds per-head q/k norms, tied embeddings drop lm_head', () => {
    const base = {
      modelType: 'x',
      vocabSize: 100,
      hiddenSize: 32,
      intermediateSize: 48,
      numLayers: 1,
      numHeads: 4,
      numKvHeads: 2,
      headDim: 16,
      rmsNormEps: 1e-6,
      ropeTheta: 1e4,
      maxPositionEmbeddings: 64,
      bosTokenId: null,
      eosTokenIds: [],
    };
    const qwen2 = expectedTensorShapes({ ...base, family: 'qwen2', attentionBias: true, qkNorm: false, tieWordEmbeddings: true });
    expect(qwen2.get('model.layers.0.self_attn.q_proj.weight')).toEqual([64, 32]);
    expect(qwen2.get('model.layers.0.self_attn.k_proj.bias')).toEqual([32]);
    expect(qwen2.get('model.layers.0.self_attn.o_proj.weight')).toEqual([32, 64]);
    expect(qwen2.has('model.layers.0.self_attn.o_proj.bias')).toBe(false);
    expect(qwen2.has('lm_head.weight')).toBe(false);
    const qwen3 = expectedTensorShapes({ ...base, family: 'qwen3', attentionBias: false, qkNorm: true, tieWordEmbeddings: false });
    expect(qwen3.get('model.layers.0.self_attn.q_norm.weight')).toEqual([16]);
    expect(qwen3.get('model.layers.0.self_attn.k_norm.weight')).toEqual([16]);
    expect(qwen3.get('lm_head.weight')).toEqual([100, 32]);
    expect(qwen3.size).toBe(1 + 11 + 2);
  });
});

describe('default model location and one-time generation', () => {
  test('defaultModelDir is versioned under the cache root', () => {
    expect(defaultModelDir('/cache')).toBe(path.join('/cache', 'default-small-s0-v1'));
  });

  test('racing creators end with one complete directory and no temporary leftovers', async () => {
    const root = tempDir();
    const dir = path.join(root, 'model');
    let runs = 0;
    const fill = async (tmp: string, tag: string) => {
      runs++;
      await makeModel({ preset: 'tiny', outDir: tmp, numAdapters: 1 });
      fs.writeFileSync(path.join(tmp, 'who'), tag);
    };
    await Promise.all([ensureDirOnce(dir, (t) => fill(t, 'a')), ensureDirOnce(dir, (t) => fill(t, 'b'))]);
    expect(runs).toBe(2);
    expect(['a', 'b']).toContain(fs.readFileSync(path.join(dir, 'who'), 'utf8'));
    expect(fs.readdirSync(root)).toEqual(['model']);
    openCheckpoint(dir).tensors.close();
    // Once present, nothing runs again.
    await ensureDirOnce(dir, async () => {
      throw new Error('must not run');
    });
    // A failing fill leaves nothing behind.
    const other = path.join(root, 'other');
    await expect(ensureDirOnce(other, async () => {
      throw new Error('disk full');
    })).rejects.toThrow('disk full');
    expect(fs.readdirSync(root)).toEqual(['model']);
  });
});
