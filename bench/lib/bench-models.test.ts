import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, test } from 'vitest';
import { BenchModels, defaultBenchCacheDir } from './bench-models.ts';
import { categoryOf, readWeightBytes } from './weight-bytes.ts';
import { FP32, INT4, INT4_OUTLIERS_ONE_PERCENT, INT8 } from './quant-variants.ts';

const cacheDir = fs.mkdtempSync(path.join(os.tmpdir(), 'tessera-bench-models-'));
afterAll(() => fs.rmSync(cacheDir, { recursive: true, force: true }));

describe('BenchModels', () => {
  test('cache dir: $TESSERA_CACHE_DIR/bench, else ~/.cache/tessera/bench', () => {
    expect(defaultBenchCacheDir({ TESSERA_CACHE_DIR: '/x/y' })).toBe(path.join('/x/y', 'bench'));
    expect(defaultBenchCacheDir({})).toBe(path.join(os.homedir(), '.cache', 'tessera', 'bench'));
  });

  test('generates a checkpoint once and reuses it across instances; conversions are per run and cleaned up', async () => {
    const logs: string[] = [];
    const first = new BenchModels({ cacheDir, log: (m) => logs.push(m) });
    const dir = await first.checkpoint('tiny');
    expect(fs.existsSync(path.join(dir, 'model.safetensors'))).toBe(true);
    const mtime = fs.statSync(path.join(dir, 'model.safetensors')).mtimeMs;
    expect(logs.some((l) => l.startsWith('generating'))).toBe(true);

    const converted = await first.converted('tiny', FP32);
    expect(await first.converted('tiny', FP32)).toBe(converted); // converted once per run
    expect(converted.manifest.quant.kind).toBe('fp32');
    expect(converted.conversionWallMs).toBeGreaterThan(0);
    first.cleanup();
    expect(fs.existsSync(converted.dir)).toBe(false);
    first.cleanup(); // idempotent

    const secondLogs: string[] = [];
    const second = new BenchModels({ cacheDir, log: (m) => secondLogs.push(m) });
    expect(await second.checkpoint('tiny')).toBe(dir);
    expect(fs.statSync(path.join(dir, 'model.safetensors')).mtimeMs).toBe(mtime);
    expect(secondLogs.some((l) => l.startsWith('generating'))).toBe(false);
    second.cleanup();
  });
});

describe('readWeightBytes (tiny conversions)', () => {
  const models = new BenchModels({ cacheDir });
  afterAll(() => models.cleanup());

  test('names fall in the right categories', () => {
    expect(categoryOf('model.embed_tokens.weight')).toBe('embedding');
    expect(categoryOf('model.layers.0.input_layernorm.weight')).toBe('norm');
    expect(categoryOf('model.norm.weight')).toBe('norm');
    expect(categoryOf('model.layers.3.mlp.down_proj.qweight')).toBe('linear');
    expect(categoryOf('lm_head.outlier_weight')).toBe('linear');
    expect(categoryOf('rotary.cos')).toBe('rotary');
  });

  test('fp32 linears cost exactly 32 bits per weight; the parts add up to the file', async () => {
    const m = await models.converted('tiny', FP32);
    const b = readWeightBytes(m.dir);
    const c = m.manifest.config;
    expect(b.linearBitsPerWeight).toBe(32);
    expect(b.embeddingBytes).toBe(4 * c.vocabSize * c.hiddenSize);
    expect(b.normBytes).toBe(4 * c.hiddenSize * (2 * c.numLayers + 1));
    expect(b.embeddingBytes + b.rotaryBytes + b.linearBytes + b.normBytes + b.otherBytes + b.paddingBytes).toBe(b.weightsBytes + b.inGraphBytes);
    expect(b.paddingBytes).toBeGreaterThanOrEqual(0);
    expect(b.weightsBytes).toBe(m.manifest.weightsBytes);
    expect(b.bytesReadPerDecodeStep).toBe(b.linearBytes + b.normBytes + b.otherBytes);
  });

  test('block 32: int4 = 4 bits + fp32 scale and 4-bit zero point per 32 = 5.125 bits; int8 = 8 bits + fp32 scale per 32 = 9 bits; outliers add fp32 columns', async () => {
    const int4 = readWeightBytes((await models.converted('tiny', INT4)).dir);
    expect(int4.linearBitsPerWeight).toBe(5.125);
    const int8 = readWeightBytes((await models.converted('tiny', INT8)).dir);
    expect(int8.linearBitsPerWeight).toBe(9);
    const withOutliers = readWeightBytes((await models.converted('tiny', INT4_OUTLIERS_ONE_PERCENT)).dir);
    expect(withOutliers.linearBytes).toBeGreaterThan(int4.linearBytes);
  });
});
