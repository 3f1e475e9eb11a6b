/**
 * Reads a GGUF (version 3) file's header, metadata and tensor infos, and single tensors' bytes (layout in
 * gguf-format.ts). Used to check what gguf-writer.ts writes; reads any value type, nested arrays included.
 */
import fs from 'node:fs';
import { GGUF_DEFAULT_ALIGNMENT, GGUF_MAGIC, GGUF_VALUE_TYPE, alignUp, ggmlTensorBytes, ggmlTypeName, type GgmlTypeName, type GgufValue } from './gguf-format.ts';

export interface GgufTensorInfo {
  name: string;
  dims: number[];
  type: GgmlTypeName;
  /** Absolute position of the tensor's bytes in the file. */
  fileOffset: number;
  byteLength: number;
}

export interface GgufFile {
  version: number;
  metadata: Map<string, GgufValue>;
  tensors: GgufTensorInfo[];
  alignment: number;
}

const KIND_OF_TYPE = new Map<number, keyof typeof GGUF_VALUE_TYPE>(Object.entries(GGUF_VALUE_TYPE).map(([k, v]) => [v, k as keyof typeof GGUF_VALUE_TYPE]));

class ByteSource {
  private at = 0;
  private readonly view: DataView;
  constructor(private readonly bytes: Uint8Array, private readonly file: string) {
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }
  get position(): number {
    return this.at;
  }
  private take(n: number): number {
    if (this.at + n > this.bytes.length) throw new Error(`${this.file}: truncated GGUF (needs ${n} bytes at ${this.at}, has ${this.bytes.length - this.at})`);
    const at = this.at;
    this.at += n;
    return at;
  }
  u32(): number {
    return this.view.getUint32(this.take(4), true);
  }
  u64(): number {
    const v = this.view.getBigUint64(this.take(8), true);
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new Error(`${this.file}: count ${v} at ${this.at - 8} is not a safe integer`);
    return Number(v);
  }
  string(): string {
    const n = this.u64();
    const at = this.take(n);
    return Buffer.from(this.bytes.buffer, this.bytes.byteOffset + at, n).toString('utf8');
  }
  value(type: number): GgufValue {
    const kind = KIND_OF_TYPE.get(type);
    const v = this.view;
    switch (kind) {
      case 'uint8':
        return { kind, value: v.getUint8(this.take(1)) };
      case 'int8':
        return { kind, value: v.getInt8(this.take(1)) };
      case 'uint16':
        return { kind, value: v.getUint16(this.take(2), true) };
      case 'int16':
        return { kind, value: v.getInt16(this.take(2), true) };
      case 'uint32':
        return { kind, value: v.getUint32(this.take(4), true) };
      case 'int32':
        return { kind, value: v.getInt32(this.take(4), true) };
      case 'float32':
        return { kind, value: v.getFloat32(this.take(4), true) };
      case 'float64':
        return { kind, value: v.getFloat64(this.take(8), true) };
      case 'uint64':
        return { kind, value: v.getBigUint64(this.take(8), true) };
      case 'int64':
        return { kind, value: v.getBigInt64(this.take(8), true) };
      case 'bool': {
        const b = v.getUint8(this.take(1));
        if (b > 1) throw new Error(`${this.file}: bool value ${b} at ${this.at - 1}`);
        return { kind, value: b === 1 };
      }
      case 'string':
        return { kind, value: this.string() };
      case 'array': {
        const itemType = this.u32();
        const n = this.u64();
        const items: GgufValue[] = [];
        for (let i = 0; i < n; i++) items.push(this.value(itemType));
        return { kind, items };
      }
      default:
        throw new Error(`${this.file}: unknown metadata value type ${type} at ${this.at - 4}`);
    }
  }
}

/** Parses the part of the file before the tensor data (the file is read whole: meant for test-sized files). */
export function readGguf(file: string): GgufFile {
  const bytes = fs.readFileSync(file);
  const src = new ByteSource(bytes, file);
  const magic = bytes.subarray(0, 4).toString('ascii');
  if (magic !== GGUF_MAGIC) throw new Error(`${file}: not a GGUF file (magic ${JSON.stringify(magic)})`);
  src.u32();
  const version = src.u32();
  if (version !== 3) throw new Error(`${file}: GGUF version ${version}, this reader knows 3`);
  const numTensors = src.u64();
  const numKv = src.u64();
  const metadata = new Map<string, GgufValue>();
  for (let i = 0; i < numKv; i++) {
    const key = src.string();
    if (metadata.has(key)) throw new Error(`${file}: metadata key ${key} appears twice`);
    metadata.set(key, src.value(src.u32()));
  }
  const alignmentValue = metadata.get('general.alignment');
  const alignment = alignmentValue?.kind === 'uint32' ? alignmentValue.value : GGUF_DEFAULT_ALIGNMENT;
  const infos: Array<Omit<GgufTensorInfo, 'fileOffset' | 'byteLength'> & { offset: number }> = [];
  for (let i = 0; i < numTensors; i++) {
    const name = src.string();
    const numDims = src.u32();
    const dims = Array.from({ length: numDims }, () => src.u64());
    const typeId = src.u32();
    const type = ggmlTypeName(typeId);
    if (type === null) throw new Error(`${file}: tensor ${name} has ggml type ${typeId}, which this reader does not decode`);
    const offset = src.u64();
    if (offset % alignment !== 0) throw new Error(`${file}: tensor ${name} at data offset ${offset}, not a multiple of the alignment ${alignment}`);
    infos.push({ name, dims, type, offset });
  }
  const dataStart = alignUp(src.position, alignment);
  const tensors = infos.map(({ offset, ...t }) => {
    const byteLength = ggmlTensorBytes(t.type, t.dims);
    if (dataStart + offset + byteLength > bytes.length) throw new Error(`${file}: tensor ${t.name} runs past the end of the file`);
    return { ...t, fileOffset: dataStart + offset, byteLength };
  });
  return { version, metadata, tensors, alignment };
}

/** One tensor's bytes. */
export function readGgufTensorBytes(file: string, tensor: GgufTensorInfo): Uint8Array {
  const out = new Uint8Array(tensor.byteLength);
  const fd = fs.openSync(file, 'r');
  try {
    fs.readSync(fd, out, 0, out.length, tensor.fileOffset);
  } finally {
    fs.closeSync(fd);
  }
  return out;
}

/** A metadata value as a plain JS value (numbers, bigints, booleans, strings, arrays of them). */
export function plainValue(v: GgufValue): unknown {
  return v.kind === 'array' ? v.items.map(plainValue) : v.value;
}
