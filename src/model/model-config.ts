/** The model's shapes and types live in a leaf module below kernels/ (which must not import src/); re-exported here. */
export { LORA_TARGETS, loraTargetShape, type LoraTarget, type LoraWeights, type ModelConfig, type ModelFamily } from '../../kernels/model-types.ts';
