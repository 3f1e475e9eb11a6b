/**
 * Random PEFT LoRA adapters for generated models: adapter_config.json + adapter_model.safetensors (F32) with every
 * target linear of every layer, B non-zero so the adapter visibly changes the model's outputs.
 */
import fs from 'node:fs';
import path from 'node:path';
import { LORA_TARGETS, loraTargetShape, type ModelConfig } from '../model-config.ts';
import { peftLoraTensorName } from './hf-tensor-names.ts';
import { SeededRandom } from '../../util/seeded-random.ts';
import { writeSafetensors, type TensorToWrite } from './safetensors-writer.ts';

export interface RandomAdapterOptions {
  dir: string;
  config: ModelConfig;
  rank: number;
  seed: number;
  /** Names this adapter's random streams (with the seed), so adapters of one model differ. */
  streamLabel: string;
  /** base_model_name_or_path written into adapter_config.json. */
  baseModel: string;
  onProgress?: (doneElements: number, totalElements: number) => void;
}

/** Update size: scale * B A x has rms about B_RMS_TOTAL * scale for unit-rms x (A ~ N(0, 1/in), B ~ N(0, B_RMS_TOTAL^2 / r)). */
const B_RMS_TOTAL = 0.2;

export function adapterTensors(config: ModelConfig, rank: number, seed: number, streamLabel: string): TensorToWrite[] {
  const tensors: TensorToWrite[] = [];
  for (let layer = 0; layer < config.numLayers; layer++) {
    for (const target of LORA_TARGETS) {
      const [inFeatures, outFeatures] = loraTargetShape(config, target);
      const aName = peftLoraTensorName(layer, target, 'A');
      const bName = peftLoraTensorName(layer, target, 'B');
      tensors.push({
        name: aName,
        dtype: 'F32',
        shape: [rank, inFeatures],
        data: () => new SeededRandom(seed, `${streamLabel}/${aName}`).fillNormal(new Float32Array(rank * inFeatures), 1 / Math.sqrt(inFeatures)),
      });
      tensors.push({
        name: bName,
        dtype: 'F32',
        shape: [outFeatures, rank],
        data: () => new SeededRandom(seed, `${streamLabel}/${bName}`).fillNormal(new Float32Array(outFeatures * rank), B_RMS_TOTAL / Math.sqrt(rank)),
      });
    }
  }
  return tensors;
}

export async function writeRandomAdapter(opts: RandomAdapterOptions): Promise<void> {
  fs.mkdirSync(opts.dir, { recursive: true });
  const adapterConfig = {
    peft_type: 'LORA',
    task_type: 'CAUSAL_LM',
    base_model_name_or_path: opts.baseModel,
    r: opts.rank,
    lora_alpha: 2 * opts.rank,
    lora_dropout: 0.0,
    target_modules: [...LORA_TARGETS],
    bias: 'none',
    fan_in_fan_out: false,
    inference_mode: true,
    init_lora_weights: true,
    use_rslora: false,
    use_dora: false,
    modules_to_save: null,
    layers_to_transform: null,
    layers_pattern: null,
    rank_pattern: {},
    alpha_pattern: {},
  };
  fs.writeFileSync(path.join(opts.dir, 'adapter_config.json'), JSON.stringify(adapterConfig, null, 2) + '\n');
  await writeSafetensors(
    path.join(opts.dir, 'adapter_model.safetensors'),
    adapterTensors(opts.config, opts.rank, opts.seed, opts.streamLabel),
    { format: 'pt' },
    { onProgress: opts.onProgress },
  );
}
