/**
 * Parsing and validation of a safetensors header (the format's spec, in short):
 *   bytes [0, 8)        N, little-endian unsigned 64-bit: length of the JSON header
 *   bytes [8, 8 + N)    UTF-8 JSON: { "<tensor>": { dtype, shape, data_offsets: [begin, end] }, "__metadata__"?: {str: str} }
 *   bytes [8 + N, EOF)  data region; each tensor's bytes are [begin, end) relative to the region's start, row-major,
 *                       little-endian.
 * Every check throws TesseraError('CHECKPOINT_INVALID') naming the file and, where there is one, the tensor.
 */
import { TesseraError } from '../../errors.ts';
import type { DType } from './tensor.ts';

/** Bytes per element of each dtype Tessera recognises. */
export const DTYPE_BYTES: Readonly<Record<DType, number>> = {
  F64: 8,
  F32: 4,
  F16: 2,
  BF16: 2,
  I64: 8,
  I32: 4,
  I16: 2,
  I8: 1,
  U8: 1,
  BOOL: 1,
};

/** Headers longer than this are refused as corrupt (real ones are a few hundred KiB at most). */
export const MAX_HEADER_BYTES = 100 * 1024 * 1024;

export interface HeaderEntry {
  name: string;
  dtype: DType;
  shape: number[];
  numElements: number;
  /** Offset of the first byte in the file (8 + header length + begin). */
  fileOffset: number;
  byteLength: number;
}

export interface ParsedHeader {
  headerBytes: number;
  /** Entries sorted by their position in the data region. */
  entries: HeaderEntry[];
  metadata: Record<string, string>;
}

function invalid(file: string, what: string): TesseraError {
  return new TesseraError('CHECKPOINT_INVALID', `safetensors file ${file}: ${what}`);
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function isDType(v: unknown): v is DType {
  return typeof v === 'string' && Object.hasOwn(DTYPE_BYTES, v);
}

/** Validates the 8-byte length prefix against the file size; returns the header length N. */
export function readHeaderLength(file: string, prefix: Uint8Array, fileBytes: number): number {
  if (fileBytes < 8) throw invalid(file, `file is ${fileBytes} bytes, shorter than the 8-byte header length prefix`);
  const n = new DataView(prefix.buffer, prefix.byteOffset, 8).getBigUint64(0, true);
  if (n > BigInt(MAX_HEADER_BYTES)) {
    throw invalid(file, `header length ${n} bytes exceeds the ${MAX_HEADER_BYTES}-byte limit (corrupt or not a safetensors file)`);
  }
  const headerBytes = Number(n);
  if (8 + headerBytes > fileBytes) {
    throw invalid(file, `header length ${headerBytes} bytes runs past the end of the file (${fileBytes} bytes)`);
  }
  return headerBytes;
}

function parseShape(file: string, name: string, shape: unknown): { shape: number[]; numElements: number } {
  if (!Array.isArray(shape)) throw invalid(file, `tensor "${name}": shape must be an array, got ${JSON.stringify(shape)}`);
  let numElements = 1;
  for (const dim of shape) {
    if (!Number.isSafeInteger(dim) || (dim as number) < 0) {
      throw invalid(file, `tensor "${name}": shape must hold non-negative integers, got ${JSON.stringify(shape)}`);
    }
    numElements *= dim as number;
    if (!Number.isSafeInteger(numElements)) {
      throw invalid(file, `tensor "${name}": shape ${JSON.stringify(shape)} has too many elements`);
    }
  }
  return { shape: shape as number[], numElements };
}

function parseOffsets(file: string, name: string, offsets: unknown, dataBytes: number): [number, number] {
  if (
    !Array.isArray(offsets) ||
    offsets.length !== 2 ||
    !offsets.every((o) => Number.isSafeInteger(o) && (o as number) >= 0) ||
    offsets[0] > offsets[1]
  ) {
    throw invalid(file, `tensor "${name}": data_offsets must be [begin, end] integers with 0 <= begin <= end, got ${JSON.stringify(offsets)}`);
  }
  if (offsets[1] > dataBytes) {
    throw invalid(file, `tensor "${name}": data_offsets end ${offsets[1]} is past the end of the data region (${dataBytes} bytes); file truncated?`);
  }
  return [offsets[0], offsets[1]];
}

/** Parses and checks the JSON header; `fileBytes` is the whole file's size. */
export function parseHeader(file: string, headerJson: Uint8Array, fileBytes: number): ParsedHeader {
  const headerBytes = headerJson.length;
  const dataStart = 8 + headerBytes;
  const dataBytes = fileBytes - dataStart;
  let parsed: unknown;
  try {
    parsed = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(headerJson));
  } catch (err) {
    throw invalid(file, `header is not valid UTF-8 JSON (${(err as Error).message})`);
  }
  if (!isPlainObject(parsed)) throw invalid(file, 'header must be a JSON object');

  let metadata: Record<string, string> = {};
  const entries: HeaderEntry[] = [];
  const ranges: Array<{ name: string; begin: number; end: number }> = [];
  for (const [name, raw] of Object.entries(parsed)) {
    if (name === '__metadata__') {
      if (!isPlainObject(raw) || !Object.values(raw).every((v) => typeof v === 'string')) {
        throw invalid(file, '"__metadata__" must be an object of string values');
      }
      metadata = raw as Record<string, string>;
      continue;
    }
    if (!isPlainObject(raw)) throw invalid(file, `tensor "${name}": entry must be an object, got ${JSON.stringify(raw)}`);
    if (!isDType(raw.dtype)) {
      throw invalid(file, `tensor "${name}": unsupported dtype ${JSON.stringify(raw.dtype)} (supported: ${Object.keys(DTYPE_BYTES).join(', ')})`);
    }
    const { shape, numElements } = parseShape(file, name, raw.shape);
    const [begin, end] = parseOffsets(file, name, raw.data_offsets, dataBytes);
    const expectedBytes = numElements * DTYPE_BYTES[raw.dtype];
    if (end - begin !== expectedBytes) {
      throw invalid(
        file,
        `tensor "${name}": byte length ${end - begin} does not match shape ${JSON.stringify(shape)} x ${raw.dtype} (${expectedBytes} bytes)`,
      );
    }
    entries.push({ name, dtype: raw.dtype, shape, numElements, fileOffset: dataStart + begin, byteLength: end - begin });
    ranges.push({ name, begin, end });
  }

  // Overlap check: sort by begin; each non-empty tensor must start at or after the previous non-empty one's end.
  const order = ranges.map((_, i) => i).sort((a, b) => ranges[a].begin - ranges[b].begin || ranges[a].end - ranges[b].end);
  let prev: { name: string; begin: number; end: number } | null = null;
  for (const i of order) {
    const r = ranges[i];
    if (r.begin === r.end) continue;
    if (prev !== null && r.begin < prev.end) {
      throw invalid(file, `tensors "${prev.name}" [${prev.begin}, ${prev.end}) and "${r.name}" [${r.begin}, ${r.end}) overlap`);
    }
    prev = r;
  }
  return { headerBytes, entries: order.map((i) => entries[i]), metadata };
}
