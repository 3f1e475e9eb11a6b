/**
 * Constants of the GGUF file format (version 3), written from ggml's format description (docs/gguf.md):
 *   header        magic "GGUF" | version u32 | tensor_count u64 | metadata_kv_count u64
 *   metadata kv   key (string) | value type u32 | value
 *   tensor infos  name (string) | n_dims u32 | dims u64[n_dims] (ne[0] = fastest-varying) | ggml type u32 | offset u64
 *   padding       0x00 up to a multiple of general.alignment (default 32)
 *   tensor data   each tensor at its offset (relative to the data section, a multiple of the alignment)
 * Strings are a u64 byte length and UTF-8 bytes without a terminator; everything is little-endian.
 */

export const GGUF_MAGIC = 'GGUF';
export const GGUF_VERSION = 3;
export const GGUF_DEFAULT_ALIGNMENT = 32;

/** Metadata value types (gguf_metadata_value_type). */
export const GGUF_VALUE_TYPE = {
  uint8: 0,
  int8: 1,
  uint16: 2,
  int16: 3,
  uint32: 4,
  int32: 5,
  float32: 6,
  bool: 7,
  string: 8,
  array: 9,
  uint64: 10,
  int64: 11,
  float64: 12,
} as const;

export type GgufScalarKind = Exclude<keyof typeof GGUF_VALUE_TYPE, 'array'>;

/** A metadata value as written and read back: 64-bit integers are bigints, other numbers are numbers. */
export type GgufValue =
  | { kind: 'uint8' | 'int8' | 'uint16' | 'int16' | 'uint32' | 'int32' | 'float32' | 'float64'; value: number }
  | { kind: 'uint64' | 'int64'; value: bigint }
  | { kind: 'bool'; value: boolean }
  | { kind: 'string'; value: string }
  | { kind: 'array'; items: GgufValue[] };

/** The tensor types this project writes, with their ggml_type ids and block layouts. */
export const GGML_TYPES = {
  /** Plain float32. */
  F32: { id: 0, blockElements: 1, blockBytes: 4 },
  /** IEEE half. */
  F16: { id: 1, blockElements: 1, blockBytes: 2 },
  /** Blocks of 32: f16 scale d, 16 bytes of 4-bit codes q (element j in the low nibble of byte j, j + 16 in the high); x = (q - 8) * d. */
  Q4_0: { id: 2, blockElements: 32, blockBytes: 18 },
  /** Blocks of 32: f16 scale d, 32 int8 codes q; x = q * d. */
  Q8_0: { id: 8, blockElements: 32, blockBytes: 34 },
} as const;

export type GgmlTypeName = keyof typeof GGML_TYPES;

export function ggmlTypeName(id: number): GgmlTypeName | null {
  for (const [name, t] of Object.entries(GGML_TYPES)) if (t.id === id) return name as GgmlTypeName;
  return null;
}

/** Bytes of a tensor of `type` with ggml dims `dims` (dims[0] must be a whole number of blocks). */
export function ggmlTensorBytes(type: GgmlTypeName, dims: readonly number[]): number {
  const t = GGML_TYPES[type];
  if (dims.length === 0 || dims[0] % t.blockElements !== 0) {
    throw new Error(`a ${type} tensor needs dims[0] to be a multiple of ${t.blockElements}. Given: [${dims.join(', ')}]`);
  }
  const rows = dims.slice(1).reduce((a, b) => a * b, 1);
  return (dims[0] / t.blockElements) * t.blockBytes * rows;
}

/** `general.file_type` for a model whose weight matrices are all of one type (llama_ftype). */
export const GGUF_FILE_TYPE: Record<GgmlTypeName, number> = { F32: 0, F16: 1, Q4_0: 2, Q8_0: 7 };

/** `tokenizer.ggml.token_type` values. */
export const GGUF_TOKEN_TYPE = { normal: 1, unknown: 2, control: 3, userDefined: 4, unused: 5, byte: 6 } as const;

export function alignUp(offset: number, alignment: number): number {
  return offset + ((alignment - (offset % alignment)) % alignment);
}
