/**
 * Reads a PEFT LoRA adapter directory (adapter_config.json + adapter_model.safetensors) into float32 factors,
 * checked against the base model's architecture:
 *   y = W x + scale * B (A x),   A: [r, in],  B: [out, r],  scale = alpha / r  (alpha / sqrt(r) with rsLoRA).
 */
import fs from 'node:fs';
import path from 'node:path';
import { TesseraError } from '../../errors.ts';
import { peftLoraTensorName } from '../../model/checkpoint/hf-tensor-names.ts';
import { openSafetensors } from '../../model/checkpoint/safetensors-reader.ts';
import { firstNonFinite, type TensorSource } from '../../model/checkpoint/tensor.ts';
import { loraTargetShape, type LoraTarget, type ModelConfig } from '../../model/model-config.ts';
import { readPeftAdapterConfig, type PeftAdapterConfig } from './peft-config.ts';

export { parsePeftAdapterConfig, readPeftAdapterConfig, type PeftAdapterConfig } from './peft-config.ts';

export interface LoraFactors {
  a: Float32Array; // [r, in] float32
  b: Float32Array; // [out, r] float32
}

export interface PeftAdapter {
  rank: number;
  loraAlpha: number;
  /** alpha / r, or alpha / sqrt(r) with use_rslora. */
  scale: number;
  targets: LoraTarget[];
  baseModel: string | null;
  /** One entry per model layer; a layer outside layers_to_transform has no factors. */
  layers: Array<Partial<Record<LoraTarget, LoraFactors>>>;
  /** Bytes of the float32 factors held in memory. */
  sizeBytes: number;
}

function incompatible(message: string): TesseraError {
  return new TesseraError('ADAPTER_INCOMPATIBLE', message);
}

function readFactor(weights: TensorSource, file: string, name: string, expected: [number, number]): Float32Array {
  if (!weights.has(name)) throw incompatible(`${file}: missing tensor "${name}" (expected shape ${JSON.stringify(expected)})`);
  const info = weights.info(name);
  if (info.shape.length !== 2 || info.shape[0] !== expected[0] || info.shape[1] !== expected[1]) {
    throw incompatible(`${file}: tensor "${name}" has shape ${JSON.stringify(info.shape)}, expected ${JSON.stringify(expected)} for this model and rank`);
  }
  const data = weights.readFloat32(name).data;
  const bad = firstNonFinite(data);
  if (bad >= 0) {
    const cols = expected[1];
    throw new TesseraError('ADAPTER_INVALID', `${file}: tensor "${name}" holds a non-finite value (${data[bad]}) at index ${bad} ([${Math.floor(bad / cols)}, ${bad % cols}]); an adapter's factors must be finite`);
  }
  return data;
}


/** Reads `dir` as a LoRA adapter for a model with `config`. */
export function readPeftAdapter(dir: string, config: ModelConfig): PeftAdapter {
  const adapterConfig = readPeftAdapterConfig(dir);
  const file = path.join(dir, 'adapter_model.safetensors');
  if (!fs.existsSync(file)) {
    const hasBin = fs.existsSync(path.join(dir, 'adapter_model.bin'));
    throw new TesseraError(
      'CHECKPOINT_INVALID',
      hasBin ? `${dir}: adapter_model.bin (pickle) is not supported; save the adapter as safetensors` : `${file} does not exist`,
    );
  }
  return readPeftAdapterFrom({ adapterConfig, weights: openSafetensors(file), weightsName: file, dirName: dir }, config);
}

/** A PEFT adapter whose files are already open (e.g. through descriptors checked beneath an adapter root). */
export interface OpenedPeftAdapter {
  adapterConfig: PeftAdapterConfig;
  /** adapter_model.safetensors; closed by readPeftAdapterFrom. */
  weights: TensorSource;
  /** Names of the weights file and of the directory, for messages. */
  weightsName: string;
  dirName: string;
}

/** Reads the LoRA factors of an opened adapter, checked against the model; closes `weights`. */
export function readPeftAdapterFrom(opened: OpenedPeftAdapter, config: ModelConfig): PeftAdapter {
  const { adapterConfig, weights, weightsName: file, dirName: dir } = opened;
  try {
    const { rank, targets } = adapterConfig;
    const layerSet = adapterConfig.layers === null ? null : new Set(adapterConfig.layers);
    if (adapterConfig.layers !== null && adapterConfig.layers.some((l) => l >= config.numLayers)) {
      throw incompatible(`${dir}: layers_to_transform ${JSON.stringify(adapterConfig.layers)} names layers past the model's ${config.numLayers}`);
    }

    const used = new Set<string>();
    const layers: PeftAdapter['layers'] = [];
    let sizeBytes = 0;
    for (let layer = 0; layer < config.numLayers; layer++) {
      const factors: Partial<Record<LoraTarget, LoraFactors>> = {};
      if (layerSet === null || layerSet.has(layer)) {
        for (const target of targets) {
          const [inFeatures, outFeatures] = loraTargetShape(config, target);
          const aName = peftLoraTensorName(layer, target, 'A');
          const bName = peftLoraTensorName(layer, target, 'B');
          const a = readFactor(weights, file, aName, [rank, inFeatures]);
          const b = readFactor(weights, file, bName, [outFeatures, rank]);
          used.add(aName).add(bName);
          sizeBytes += a.byteLength + b.byteLength;
          factors[target] = { a, b };
        }
      }
      layers.push(factors);
    }
    const extra = weights.names().filter((n) => !used.has(n));
    if (extra.length > 0) {
      throw incompatible(
        `${file}: unexpected tensor "${extra[0]}"${extra.length > 1 ? ` (and ${extra.length - 1} more)` : ''}: not a LoRA factor of the configured targets and layers of this model`,
      );
    }
    const scale = adapterConfig.useRslora ? adapterConfig.loraAlpha / Math.sqrt(rank) : adapterConfig.loraAlpha / rank;
    if (!Number.isFinite(Math.fround(scale))) throw new TesseraError('ADAPTER_INVALID', `${dir}: the adapter scale lora_alpha / r = ${scale} is not a finite float32 (lora_alpha ${adapterConfig.loraAlpha})`);
    return { rank, loraAlpha: adapterConfig.loraAlpha, scale, targets, baseModel: adapterConfig.baseModel, layers, sizeBytes };
  } finally {
    weights.close();
  }
}
