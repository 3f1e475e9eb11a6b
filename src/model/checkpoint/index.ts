/** Public surface of checkpoint reading and generation (other folders import from here or from the files). */
export { expectedTensorShapes, openCheckpoint, type Checkpoint } from './checkpoint.ts';
export { parseHfConfig, SUPPORTED_MODEL_TYPES } from './hf-config.ts';
export { linearModuleName, peftLoraTensorName } from './hf-tensor-names.ts';
export { defaultModelDir, ensureDefaultModel, makeModel, modelName, type MadeModel, type MakeModelOptions, type ModelPreset } from './make-model.ts';
export { openCheckpointTensors, openSafetensors, type SafetensorsSource } from './safetensors-reader.ts';
export { writeSafetensors, type TensorToWrite, type WritableDType } from './safetensors-writer.ts';
export type { DType, Float32Tensor, TensorInfo, TensorSource } from './tensor.ts';
