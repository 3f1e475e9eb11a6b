import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { writeSafetensors } from '../../model/checkpoint/safetensors-writer.ts';
import type { LoraTarget, ModelConfig } from '../../model/model-config.ts';
import { readPeftAdapter } from '../peft/peft-adapter.ts';
import { decodeToPeftLike } from './compeft-decode.ts';
import { parseCompeft } from './compeft-reader.ts';
import { SMALL_TEST_CONFIG, syntheticLoraTensors } from './compeft-synthetic.ts';
import { keptCount } from './compeft-topk.ts';
import { compressAdapterDir, inspectCompeft } from './compress-command.ts';

const CONFIG: ModelConfig = { ...SMALL_TEST_CONFIG, hiddenSize: 64, intermediateSize: 160, numHeads: 4, numKvHeads: 2, headDim: 16, numLayers: 3 };
const RANK = 8;
const root = fs.mkdtempSync(path.join(os.tmpdir(), 'tessera-compeft-'));
afterAll(() => fs.rmSync(root, { recursive: true, force: true }));

async function writePeftDir(dir: string): Promise<void> {
  fs.mkdirSync(dir, { recursive: true });
  const tensors = syntheticLoraTensors({ config: CONFIG, rank: RANK, seed: 31 });
  fs.writeFileSync(
    path.join(dir, 'adapter_config.json'),
    JSON.stringify({
      peft_type: 'LORA',
      base_model_name_or_path: 'tiny/base-model',
      r: RANK,
      lora_alpha: 16,
      target_modules: ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'],
      use_rslora: false,
      use_dora: false,
    }),
  );
  await writeSafetensors(
    path.join(dir, 'adapter_model.safetensors'),
    tensors.map((t) => ({ name: t.name, dtype: 'F16', shape: [t.rows, t.cols], data: t.data })),
    { format: 'pt' },
  );
}

describe('compressAdapterDir + inspectCompeft', () => {
  it('compresses a PEFT directory into a .cpeft that decodes to the top-k signs of the original factors', async () => {
    const adapterDir = path.join(root, 'peft');
    await writePeftDir(adapterDir);
    const outFile = path.join(root, 'out', 'adapter.cpeft');
    const progress: Array<[number, number]> = [];
    const summary = await compressAdapterDir({ adapterDir, config: CONFIG, density: 0.1, alpha: 'auto', outFile, onProgress: (d, t) => progress.push([d, t]) });

    expect(summary.numTensors).toBe(3 * 7 * 2);
    expect(progress.at(-1)).toEqual([42, 42]);
    expect(summary.compressedBytes).toBe(fs.statSync(outFile).size);
    // The source is an fp16 safetensors file written in the same order, so the fp16 estimate is exact.
    expect(summary.fp16SafetensorsBytes).toBe(summary.sourceBytes);
    expect(summary.ratioVsFp16).toBeGreaterThan(4); // tiny tensors: the ~170-byte header entry per tensor dominates
    expect(summary.relFrobeniusError).toBeGreaterThan(0.3);
    expect(summary.relFrobeniusError).toBeLessThan(1);
    expect(summary.maxModuleRelError).toBeGreaterThanOrEqual(summary.relFrobeniusError);
    expect(fs.readdirSync(path.dirname(outFile))).toEqual(['adapter.cpeft']); // no temp files left

    const original = readPeftAdapter(adapterDir, CONFIG);
    const file = parseCompeft(fs.readFileSync(outFile));
    expect(file.header.baseModel).toBe('tiny/base-model');
    expect(file.header.scale).toBe(2);
    expect(file.header.relFrobeniusError).toBeCloseTo(summary.relFrobeniusError, 12);
    const decoded = decodeToPeftLike(file);
    for (let layer = 0; layer < CONFIG.numLayers; layer++) {
      for (const [target, f] of Object.entries(original.layers[layer])) {
        const d = decoded.layers[layer][target as LoraTarget]!;
        for (const [src, got] of [[f!.a, d.a], [f!.b, d.b]] as const) {
          let kept = 0;
          let minKept = Infinity;
          let maxDropped = 0;
          for (let i = 0; i < src.length; i++) {
            if (got[i] !== 0) {
              kept++;
              expect(Math.sign(got[i])).toBe(Math.sign(src[i]));
              minKept = Math.min(minKept, Math.abs(src[i]));
            } else {
              maxDropped = Math.max(maxDropped, Math.abs(src[i]));
            }
          }
          expect(kept).toBe(keptCount(src.length, 0.1));
          expect(minKept).toBeGreaterThanOrEqual(maxDropped);
        }
      }
    }

    const text = inspectCompeft(outFile, { tensors: true });
    expect(text).toContain('base model      tiny/base-model');
    expect(text).toContain('rank / alpha    8 / 16 (scale 2)');
    expect(text).toContain(`${summary.ratioVsFp16.toFixed(1)}x vs fp16`);
    expect(text).toContain('base_model.model.model.layers.2.mlp.down_proj.lora_B.weight');
    expect(text.split('\n').filter((l) => /^\s+\d+\s+base_model/.test(l))).toHaveLength(42);

    // Fixed alpha: the paper's rule, never better than auto.
    const fixed = await compressAdapterDir({ adapterDir, config: CONFIG, density: 0.1, alpha: 2, outFile: path.join(root, 'fixed.cpeft') });
    expect(fixed.relFrobeniusError).toBeGreaterThanOrEqual(summary.relFrobeniusError);
    expect(parseCompeft(fs.readFileSync(path.join(root, 'fixed.cpeft'))).header.alpha).toBe(2);
  });

  it('rejects bad options before reading anything, and reports unreadable inputs', async () => {
    const outFile = path.join(root, 'never.cpeft');
    await expect(compressAdapterDir({ adapterDir: root, config: CONFIG, density: 0, alpha: 'auto', outFile })).rejects.toThrow(/`density` must be > 0/);
    await expect(compressAdapterDir({ adapterDir: root, config: CONFIG, density: 0.1, alpha: 0, outFile })).rejects.toThrow(/`alpha` must be/);
    await expect(compressAdapterDir({ adapterDir: path.join(root, 'missing'), config: CONFIG, density: 0.1, alpha: 'auto', outFile })).rejects.toThrow();
    expect(fs.existsSync(outFile)).toBe(false);
    expect(() => inspectCompeft(path.join(root, 'missing.cpeft'))).toThrow(/cannot read/);
    fs.writeFileSync(path.join(root, 'junk.cpeft'), 'not a cpeft file at all');
    expect(() => inspectCompeft(path.join(root, 'junk.cpeft'))).toThrow(/junk\.cpeft: bad magic/);
  });
});
