import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, test } from 'vitest';
import { openCheckpointTensors } from '../../src/model/checkpoint/safetensors-reader.ts';
import { BenchModels, OUTLIER_CHANNELS } from './bench-models.ts';
import { benchPrompts, collectTailLogits, openBenchRunner } from './model-runs.ts';
import { pickChannels } from './planted-outliers.ts';
import { FP32, INT4 } from './quant-variants.ts';
import { compareLogits } from '../../src/model/quantization/quality.ts';

const cacheDir = fs.mkdtempSync(path.join(os.tmpdir(), 'tessera-bench-planted-'));
afterAll(() => fs.rmSync(cacheDir, { recursive: true, force: true }));

describe('planted outlier channels (tiny model)', async () => {
  const models = new BenchModels({ cacheDir });
  afterAll(() => models.cleanup());
  const plainDir = await models.checkpoint('tiny', 'plain');
  const plantedDir = await models.checkpoint('tiny', 'outlier-channels');

  test('pickChannels: distinct, sorted, in range, deterministic', () => {
    const a = pickChannels(100, 7, 3);
    expect(a).toEqual(pickChannels(100, 7, 3));
    expect(new Set(a).size).toBe(7);
    expect([...a].sort((x, y) => x - y)).toEqual(a);
    for (const c of a) expect(c >= 0 && c < 100).toBe(true);
    expect(pickChannels(100, 7, 4)).not.toEqual(a);
  });

  test('some input columns of the linears grew by the scale, the norm weights shrank by it', () => {
    const plain = openCheckpointTensors(plainDir);
    const planted = openCheckpointTensors(plantedDir);
    const name = 'model.layers.0.mlp.down_proj.weight';
    const before = plain.readFloat32(name);
    const after = planted.readFloat32(name);
    const cols = before.shape[1];
    const ratios = new Set<number>();
    for (let i = 0; i < before.data.length; i++) if (before.data[i] !== 0) ratios.add(Math.round((after.data[i] / before.data[i]) * 1000) / 1000);
    expect([...ratios].sort((a, b) => a - b)).toEqual([1, OUTLIER_CHANNELS.scale]);
    const scaledColumns = new Set<number>();
    for (let i = 0; i < before.data.length; i++) if (after.data[i] !== before.data[i]) scaledColumns.add(i % cols);
    expect(scaledColumns.size).toBe(Math.max(1, Math.round(OUTLIER_CHANNELS.fraction * cols)));
    const normBefore = plain.readFloat32('model.layers.1.input_layernorm.weight').data;
    const normAfter = planted.readFloat32('model.layers.1.input_layernorm.weight').data;
    expect(normAfter.filter((x, i) => x !== normBefore[i]).length).toBeGreaterThan(0);
    for (let i = 0; i < normAfter.length; i++) expect([normBefore[i], normBefore[i] / OUTLIER_CHANNELS.scale]).toContain(normAfter[i]);
    plain.close();
    planted.close();
  });

  test('the planted checkpoint computes the same function in fp32 but quantizes worse in int4', async () => {
    const prompts = benchPrompts({ numPrompts: 2, lengthTokens: 24, vocabSize: (await models.converted('tiny', FP32)).manifest.config.vocabSize });
    const logitsOf = async (kind: 'plain' | 'outlier-channels', variant = FP32) => {
      const runner = await openBenchRunner((await models.converted('tiny', variant, kind)).dir, { maxSequences: 2, maxSequenceTokens: 24 });
      const l = await collectTailLogits(runner, prompts, 16);
      await runner.release();
      return l;
    };
    const vocab = (await models.converted('tiny', FP32)).manifest.config.vocabSize;
    const plain = await logitsOf('plain');
    const planted = await logitsOf('outlier-channels');
    const same = compareLogits(plain, planted, vocab);
    expect(same.maxAbsDiff).toBeLessThan(1e-3);
    const int4Plain = compareLogits(plain, await logitsOf('plain', INT4), vocab);
    const int4Planted = compareLogits(plain, await logitsOf('outlier-channels', INT4), vocab);
    expect(int4Planted.meanKl).toBeGreaterThan(2 * int4Plain.meanKl);
  });
});
