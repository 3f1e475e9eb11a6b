import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { beforeAll, describe, expect, onTestFinished, test } from 'vitest';
import { TesseraError, type ErrorCode } from '../../errors.ts';
import { makeModel, type MadeModel } from '../../model/checkpoint/make-model.ts';
import { openSafetensors } from '../../model/checkpoint/safetensors-reader.ts';
import { writeSafetensors } from '../../model/checkpoint/safetensors-writer.ts';
import { LORA_TARGETS, loraTargetShape } from '../../model/model-config.ts';
import { parsePeftAdapterConfig, readPeftAdapter, readPeftAdapterConfig } from './peft-adapter.ts';

let model: MadeModel;
let root: string;

beforeAll(async () => {
  root = fs.mkdtempSync(path.join(os.tmpdir(), 'tessera-peft-'));
  model = await makeModel({ preset: 'tiny', outDir: path.join(root, 'model'), numAdapters: 2, seed: 1 });
  return () => fs.rmSync(root, { recursive: true, force: true });
});

/** A copy of generated adapter `i` that a test may edit. */
function adapterCopy(i = 0): string {
  const dir = fs.mkdtempSync(path.join(root, 'copy-'));
  fs.cpSync(model.adapterDirs[i], dir, { recursive: true });
  onTestFinished(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

function patchConfig(dir: string, patch: Record<string, unknown>): void {
  const file = path.join(dir, 'adapter_config.json');
  fs.writeFileSync(file, JSON.stringify({ ...JSON.parse(fs.readFileSync(file, 'utf8')), ...patch }));
}

/** Rewrites the adapter weights through `edit` (name, shape, data) -> replacement list. */
async function editWeights(
  dir: string,
  edit: (t: { name: string; shape: number[]; data: Float32Array }) => Array<{ name: string; shape: number[]; data: Float32Array }>,
): Promise<void> {
  const file = path.join(dir, 'adapter_model.safetensors');
  const src = openSafetensors(file);
  const tensors = src.names().flatMap((name) => edit({ name, shape: src.info(name).shape, data: src.readFloat32(name).data }));
  src.close();
  await writeSafetensors(file, tensors.map((t) => ({ ...t, dtype: 'F32' as const })));
}

function expectError(fn: () => unknown, code: ErrorCode, ...fragments: string[]): void {
  let caught: unknown;
  try {
    fn();
  } catch (err) {
    caught = err;
  }
  expect(caught).toBeInstanceOf(TesseraError);
  expect((caught as TesseraError).code).toBe(code);
  for (const f of fragments) expect((caught as Error).message).toContain(f);
}

describe('readPeftAdapter on generated adapters', () => {
  test('reads rank, scale, targets and every factor with the model shapes', () => {
    const adapter = readPeftAdapter(model.adapterDirs[0], model.config);
    expect(adapter.rank).toBe(4);
    expect(adapter.loraAlpha).toBe(8);
    expect(adapter.scale).toBe(2);
    expect(adapter.targets).toEqual([...LORA_TARGETS]);
    expect(adapter.baseModel).toBe('tessera-tiny-s1');
    expect(adapter.layers.length).toBe(2);
    let bytes = 0;
    for (const layer of adapter.layers) {
      for (const target of LORA_TARGETS) {
        const [inF, outF] = loraTargetShape(model.config, target);
        const f = layer[target]!;
        expect(f.a.length).toBe(4 * inF);
        expect(f.b.length).toBe(outF * 4);
        expect(f.b.some((v) => v !== 0)).toBe(true);
        bytes += f.a.byteLength + f.b.byteLength;
      }
    }
    expect(adapter.sizeBytes).toBe(bytes);
    // The data is the file's: compare one factor with a direct read.
    const src = openSafetensors(path.join(model.adapterDirs[0], 'adapter_model.safetensors'));
    expect(adapter.layers[1].down_proj!.b).toEqual(src.readFloat32('base_model.model.model.layers.1.mlp.down_proj.lora_B.weight').data);
    src.close();
    expect(readPeftAdapter(model.adapterDirs[1], model.config).rank).toBe(8);
  });

  test('rsLoRA scale, a subset of targets, and layers_to_transform', async () => {
    const dir = adapterCopy();
    patchConfig(dir, { use_rslora: true, target_modules: ['q_proj', 'model.layers.0.mlp.down_proj'], layers_to_transform: [1] });
    await editWeights(dir, (t) => (t.name.includes('layers.1.') && /(q_proj|down_proj)/.test(t.name) ? [t] : []));
    const adapter = readPeftAdapter(dir, model.config);
    expect(adapter.scale).toBe(8 / 2);
    expect(adapter.targets).toEqual(['q_proj', 'down_proj']);
    expect(adapter.layers[0]).toEqual({});
    expect(Object.keys(adapter.layers[1]).sort()).toEqual(['down_proj', 'q_proj']);
  });

  test('"all-linear" targets every linear', () => {
    const dir = adapterCopy();
    patchConfig(dir, { target_modules: 'all-linear' });
    expect(readPeftAdapter(dir, model.config).targets).toEqual([...LORA_TARGETS]);
  });
});

describe('incompatible adapters -> ADAPTER_INCOMPATIBLE naming tensor, expected and actual', () => {
  test('a factor with the wrong shape', async () => {
    const dir = adapterCopy();
    const name = 'base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight';
    await editWeights(dir, (t) => (t.name === name ? [{ name, shape: [64, 4], data: new Float32Array(256) }] : [t]));
    expectError(() => readPeftAdapter(dir, model.config), 'ADAPTER_INCOMPATIBLE', `"${name}"`, 'shape [64,4]', 'expected [32,4]');
  });

  test('an adapter made for a different model size', async () => {
    const other = { ...model.config, hiddenSize: 96, headDim: 24 };
    expectError(() => readPeftAdapter(model.adapterDirs[0], other), 'ADAPTER_INCOMPATIBLE', 'q_proj.lora_A.weight', 'expected [4,96]');
  });

  test('rank in config differs from the tensors', () => {
    const dir = adapterCopy();
    patchConfig(dir, { r: 16 });
    expectError(() => readPeftAdapter(dir, model.config), 'ADAPTER_INCOMPATIBLE', 'shape [4,64]', 'expected [16,64]');
  });

  test('a missing tensor', async () => {
    const dir = adapterCopy();
    const name = 'base_model.model.model.layers.0.mlp.gate_proj.lora_A.weight';
    await editWeights(dir, (t) => (t.name === name ? [] : [t]));
    expectError(() => readPeftAdapter(dir, model.config), 'ADAPTER_INCOMPATIBLE', `missing tensor "${name}"`, '[4,64]');
  });

  test('unknown extra tensors, including layers past the model', async () => {
    const dir = adapterCopy();
    await editWeights(dir, (t) => [t, ...(t.name.endsWith('layers.1.mlp.down_proj.lora_B.weight') ? [{ ...t, name: t.name.replace('layers.1', 'layers.2') }] : [])]);
    expectError(() => readPeftAdapter(dir, model.config), 'ADAPTER_INCOMPATIBLE', 'unexpected tensor "base_model.model.model.layers.2.mlp.down_proj.lora_B.weight"');
    const extra = adapterCopy();
    await editWeights(extra, (t) => [t, ...(t.name.endsWith('layers.0.mlp.up_proj.lora_A.weight') ? [{ name: 'base_model.model.lm_head.weight', shape: [2], data: new Float32Array(2) }] : [])]);
    expectError(() => readPeftAdapter(extra, model.config), 'ADAPTER_INCOMPATIBLE', '"base_model.model.lm_head.weight"');
  });

  test('unsupported PEFT settings', () => {
    const cases: Array<[Record<string, unknown>, string]> = [
      [{ peft_type: 'IA3' }, '`peft_type`'],
      [{ use_dora: true }, '`use_dora`'],
      [{ bias: 'all' }, '`bias`'],
      [{ modules_to_save: ['lm_head'] }, '`modules_to_save`'],
      [{ rank_pattern: { q_proj: 4 } }, '`rank_pattern`'],
      [{ target_modules: ['q_proj', 'lm_head'] }, '"lm_head" is not supported'],
      [{ target_modules: '.*attn.*' }, 'regular expressions'],
      [{ layers_to_transform: [5] }, 'layers_to_transform'],
    ];
    for (const [patch, fragment] of cases) {
      const dir = adapterCopy();
      patchConfig(dir, patch);
      expectError(() => readPeftAdapter(dir, model.config), 'ADAPTER_INCOMPATIBLE', fragment);
    }
  });
});

describe('malformed adapters -> CHECKPOINT_INVALID', () => {
  test('bad adapter_config.json values', () => {
    const cases: Array<[Record<string, unknown>, string]> = [
      [{ r: 0 }, '`r`'],
      [{ r: 'eight' }, '`r`'],
      [{ lora_alpha: -1 }, '`lora_alpha`'],
      [{ target_modules: [] }, '`target_modules`'],
      [{ target_modules: [3] }, '`target_modules`'],
      [{ use_rslora: 'yes' }, '`use_rslora`'],
      [{ base_model_name_or_path: 5 }, '`base_model_name_or_path`'],
    ];
    for (const [patch, fragment] of cases) {
      const dir = adapterCopy();
      patchConfig(dir, patch);
      expectError(() => readPeftAdapter(dir, model.config), 'CHECKPOINT_INVALID', 'adapter_config.json', fragment);
    }
    expectError(() => parsePeftAdapterConfig('LORA', 'x.json'), 'CHECKPOINT_INVALID', 'x.json');
  });

  test('unreadable config, corrupt or missing weights', () => {
    const dir = adapterCopy();
    fs.writeFileSync(path.join(dir, 'adapter_config.json'), '{');
    expectError(() => readPeftAdapterConfig(dir), 'CHECKPOINT_INVALID', 'adapter_config.json');

    const corrupt = adapterCopy();
    fs.writeFileSync(path.join(corrupt, 'adapter_model.safetensors'), Buffer.from([1, 0, 0]));
    expectError(() => readPeftAdapter(corrupt, model.config), 'CHECKPOINT_INVALID', 'adapter_model.safetensors');

    const bin = adapterCopy();
    fs.renameSync(path.join(bin, 'adapter_model.safetensors'), path.join(bin, 'adapter_model.bin'));
    expectError(() => readPeftAdapter(bin, model.config), 'CHECKPOINT_INVALID', 'adapter_model.bin');

    expectError(() => readPeftAdapterConfig(path.join(root, 'nope')), 'ADAPTER_NOT_FOUND', 'adapter_config.json');
  });
});

describe('adapters that cannot be served -> ADAPTER_INVALID naming tensor and index', () => {
  for (const [label, value] of [['+Inf', Number.POSITIVE_INFINITY], ['-Inf', Number.NEGATIVE_INFINITY], ['NaN', Number.NaN]] as const) {
    test(`a factor holding ${label}`, async () => {
      const dir = adapterCopy();
      const name = 'base_model.model.model.layers.1.mlp.up_proj.lora_B.weight';
      await editWeights(dir, (t) => (t.name === name ? [{ ...t, data: t.data.map((x, i) => (i === 9 ? value : x)) }] : [t]));
      // [out, r] = [.., 4]: index 9 is row 2, column 1
      expectError(() => readPeftAdapter(dir, model.config), 'ADAPTER_INVALID', `"${name}"`, `(${value})`, 'index 9 ([2, 1])');
    });
  }

  test('a scale lora_alpha / r that is not a finite float32', () => {
    const dir = adapterCopy();
    patchConfig(dir, { lora_alpha: 1e300 });
    expectError(() => readPeftAdapter(dir, model.config), 'ADAPTER_INVALID', 'lora_alpha / r', 'not a finite float32');
  });

  test('huge but finite factors are accepted (their effect is confined to the rows that use them)', async () => {
    const dir = adapterCopy();
    await editWeights(dir, (t) => [{ ...t, data: t.data.map(() => 1e30) }]);
    expect(readPeftAdapter(dir, model.config).layers[0].q_proj!.b[0]).toBe(Math.fround(1e30));
  });
});
