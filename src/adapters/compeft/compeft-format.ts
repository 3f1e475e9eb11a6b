import type { LoraTarget } from '../../model/model-config.ts';
import type { LoraFactorId, LoraKind } from './compeft-types.ts';
import type { PositionEncoding } from './compeft-payload.ts';

/**
 * `.cpeft` container layout (little-endian; full description in docs/compeft-format.md):
 *   0        8  magic 89 43 50 45 46 54 0D 0A  ("\x89CPEFT\r\n")
 *   8        2  u16 major version (readers reject majors they do not know)
 *   10       2  u16 minor version (additive changes only: unknown header fields are ignored)
 *   12       4  u32 header length H
 *   16       H  header, UTF-8 JSON (CompeftHeaderJson)
 *   16+H     4  u32 CRC-32 of bytes [0, 16+H)
 *   20+H     .  data section: tensor payloads back to back, in header order
 */
export const COMPEFT_MAGIC = Uint8Array.of(0x89, 0x43, 0x50, 0x45, 0x46, 0x54, 0x0d, 0x0a);
export const COMPEFT_MAJOR_VERSION = 1;
export const COMPEFT_MINOR_VERSION = 0;
export const COMPEFT_PREAMBLE_BYTES = 16;
export const COMPEFT_HEADER_CRC_BYTES = 4;

/** Sanity limits a reader enforces before trusting any count in a header. */
export const COMPEFT_LIMITS = {
  maxRank: 4096,
  maxFeatures: 1 << 20,
  maxTensorElements: 1 << 28,
  maxLayers: 4096,
  maxNameLength: 512,
} as const;

/** One tensor as described in the JSON header. */
export interface CompeftTensorEntry extends LoraFactorId {
  /** Magnitude of every kept value (value = +-scale). */
  scale: number;
  nnz: number;
  encoding: PositionEncoding;
  /** Rice parameter; 0 for bitmaps. */
  riceK: number;
  /** Byte offset of the payload from the start of the data section. */
  offset: number;
  length: number;
  /** CRC-32 of the payload bytes. */
  crc32: number;
}

export interface CompeftHeader {
  /** "major.minor", equal to the binary version fields. */
  formatVersion: string;
  baseModel: string | null;
  targets: LoraTarget[];
  numLayers: number;
  rank: number;
  loraAlpha: number;
  /** LoRA scaling applied to B A at inference (PEFT: loraAlpha / rank, or / sqrt(rank) for rsLoRA). */
  scale: number;
  density: number;
  /** How tensor scales were chosen: 'auto' or the paper's fixed alpha. */
  alpha: 'auto' | number;
  /** Relative Frobenius error of BA over the whole adapter, measured at compression time (null if unknown). */
  relFrobeniusError: number | null;
  /** Total bytes of the data section. */
  dataLength: number;
  tensors: CompeftTensorEntry[];
}

/** A parsed, fully validated `.cpeft` file. Payloads are read from `bytes` on demand. */
export interface CompeftFile {
  bytes: Uint8Array;
  majorVersion: number;
  minorVersion: number;
  header: CompeftHeader;
  /** Absolute offset of the data section in `bytes`. */
  dataOffset: number;
}

/** JSON form of a tensor entry: shape instead of rows/cols; `name` omitted when it is the canonical PEFT key. */
export interface CompeftTensorJson {
  name?: string;
  layer: number;
  target: LoraTarget;
  kind: LoraKind;
  shape: [number, number];
  scale: number;
  nnz: number;
  encoding: PositionEncoding;
  riceK: number;
  offset: number;
  length: number;
  crc32: number;
}

export type CompeftHeaderJson = Omit<CompeftHeader, 'tensors'> & { tensors: CompeftTensorJson[] };
