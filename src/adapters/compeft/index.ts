/** ComPEFT-compressed LoRA adapters: codec, `.cpeft` container, strided decoder, compress/inspect commands. */
export { compressLoraTensors, type CompressTensorsOptions, type CompressedTensors, type ModuleError } from './compeft-codec.ts';
export { checkCompeftCompatible } from './compeft-compat.ts';
export { decodeTensorInto, decodeToPeftLike, type DestStrides, type PeftLikeAdapter, type DecodeDenseOptions } from './compeft-decode.ts';
export {
  COMPEFT_LIMITS,
  COMPEFT_MAJOR_VERSION,
  COMPEFT_MINOR_VERSION,
  type CompeftFile,
  type CompeftHeader,
  type CompeftTensorEntry,
} from './compeft-format.ts';
export { parseCompeft, type ParseCompeftOptions } from './compeft-reader.ts';
export type { ScaleMode } from './compeft-scales.ts';
export type { LoraKind, LoraTensor, TernaryTensor } from './compeft-types.ts';
export { writeCompeft, type CompeftMeta } from './compeft-writer.ts';
export { compressAdapterDir, describeCompeft, inspectCompeft, type CompressAdapterOptions, type CompressSummary, type InspectOptions } from './compress-command.ts';
