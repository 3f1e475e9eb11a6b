/**
 * Writes a GGUF (version 3) file: header, metadata, tensor infos, then each tensor's bytes at an aligned offset
 * (layout in gguf-format.ts). Tensor bytes are produced one tensor at a time by the caller's `data()`, so a model
 * never has to be in memory whole. The file is written beside its final name and renamed into place at the end.
 */
import fs from 'node:fs';
import { alignUp, GGML_TYPES, GGUF_DEFAULT_ALIGNMENT, GGUF_MAGIC, GGUF_VALUE_TYPE, GGUF_VERSION, ggmlTensorBytes, type GgmlTypeName, type GgufValue } from './gguf-format.ts';

export interface GgufTensorToWrite {
  /** At most 64 bytes (the format's limit). */
  name: string;
  /** ggml order: dims[0] varies fastest (a row-major [rows, cols] matrix is [cols, rows]). */
  dims: number[];
  type: GgmlTypeName;
  /** The tensor's encoded bytes; called once, while writing. */
  data(): Uint8Array;
}

export interface GgufToWrite {
  /** Metadata in file order; `general.alignment`, when given, sets the alignment used. */
  metadata: ReadonlyArray<[key: string, value: GgufValue]>;
  tensors: readonly GgufTensorToWrite[];
}

/** Little-endian byte builder for the header part of the file. */
class ByteSink {
  private bytes = new Uint8Array(1 << 16);
  private view = new DataView(this.bytes.buffer);
  length = 0;

  private reserve(n: number): number {
    if (this.length + n > this.bytes.length) {
      const grown = new Uint8Array(Math.max(2 * this.bytes.length, this.length + n));
      grown.set(this.bytes.subarray(0, this.length));
      this.bytes = grown;
      this.view = new DataView(grown.buffer);
    }
    const at = this.length;
    this.length += n;
    return at;
  }

  /** Reserves n bytes and writes them through the view (read after the reservation: growing replaces it). */
  private put(n: number, write: (view: DataView, offset: number) => void): void {
    const offset = this.reserve(n);
    write(this.view, offset);
  }

  u32(v: number): void {
    this.put(4, (d, o) => d.setUint32(o, v, true));
  }
  u64(v: number | bigint): void {
    this.put(8, (d, o) => d.setBigUint64(o, BigInt(v), true));
  }
  raw(b: Uint8Array): void {
    const offset = this.reserve(b.length);
    this.bytes.set(b, offset);
  }
  string(s: string): void {
    const b = Buffer.from(s, 'utf8');
    this.u64(b.length);
    this.raw(b);
  }

  scalar(v: Exclude<GgufValue, { kind: 'array' }>): void {
    switch (v.kind) {
      case 'uint8':
        return this.put(1, (d, o) => d.setUint8(o, v.value));
      case 'int8':
        return this.put(1, (d, o) => d.setInt8(o, v.value));
      case 'uint16':
        return this.put(2, (d, o) => d.setUint16(o, v.value, true));
      case 'int16':
        return this.put(2, (d, o) => d.setInt16(o, v.value, true));
      case 'uint32':
        return this.put(4, (d, o) => d.setUint32(o, v.value, true));
      case 'int32':
        return this.put(4, (d, o) => d.setInt32(o, v.value, true));
      case 'float32':
        return this.put(4, (d, o) => d.setFloat32(o, v.value, true));
      case 'float64':
        return this.put(8, (d, o) => d.setFloat64(o, v.value, true));
      case 'uint64':
        return this.put(8, (d, o) => d.setBigUint64(o, v.value, true));
      case 'int64':
        return this.put(8, (d, o) => d.setBigInt64(o, v.value, true));
      case 'bool':
        return this.put(1, (d, o) => d.setUint8(o, v.value ? 1 : 0));
      case 'string':
        return this.string(v.value);
    }
  }

  value(v: GgufValue): void {
    if (v.kind !== 'array') return this.scalar(v);
    const itemKind = v.items[0]?.kind ?? 'uint8';
    if (v.items.some((item) => item.kind !== itemKind)) throw new Error(`a GGUF array holds one value type. Given: ${[...new Set(v.items.map((i) => i.kind))].join(', ')}`);
    this.u32(GGUF_VALUE_TYPE[itemKind]);
    this.u64(v.items.length);
    for (const item of v.items) this.value(item);
  }

  view8(): Uint8Array {
    return this.bytes.subarray(0, this.length);
  }
}

/** Value constructors, so metadata reads as `['llama.block_count', gguf.u32(30)]`. */
export const gguf = {
  u32: (value: number): GgufValue => ({ kind: 'uint32', value }),
  i32: (value: number): GgufValue => ({ kind: 'int32', value }),
  f32: (value: number): GgufValue => ({ kind: 'float32', value }),
  bool: (value: boolean): GgufValue => ({ kind: 'bool', value }),
  str: (value: string): GgufValue => ({ kind: 'string', value }),
  strings: (values: readonly string[]): GgufValue => ({ kind: 'array', items: values.map((value) => ({ kind: 'string', value })) }),
  i32s: (values: ArrayLike<number>): GgufValue => ({ kind: 'array', items: Array.from(values, (value) => ({ kind: 'int32' as const, value })) }),
};

function alignmentOf(metadata: GgufToWrite['metadata']): number {
  const entry = metadata.find(([key]) => key === 'general.alignment');
  if (!entry) return GGUF_DEFAULT_ALIGNMENT;
  const v = entry[1];
  if (v.kind !== 'uint32' || v.value <= 0 || v.value % 8 !== 0) throw new Error(`general.alignment must be a uint32 multiple of 8. Given: ${JSON.stringify(v)}`);
  return v.value;
}

/** Writes `content` to `file` (atomically: a temporary sibling renamed into place). Returns the file's size in bytes. */
export function writeGguf(file: string, content: GgufToWrite): number {
  const alignment = alignmentOf(content.metadata);
  const keys = new Set<string>();
  for (const [key] of content.metadata) {
    if (keys.has(key)) throw new Error(`metadata key ${key} is given twice`);
    keys.add(key);
  }
  const head = new ByteSink();
  head.raw(Buffer.from(GGUF_MAGIC, 'ascii'));
  head.u32(GGUF_VERSION);
  head.u64(content.tensors.length);
  head.u64(content.metadata.length);
  for (const [key, value] of content.metadata) {
    head.string(key);
    head.u32(GGUF_VALUE_TYPE[value.kind]);
    head.value(value);
  }
  const sizes: number[] = [];
  let offset = 0;
  for (const t of content.tensors) {
    if (Buffer.byteLength(t.name, 'utf8') > 64) throw new Error(`tensor name longer than 64 bytes: ${t.name}`);
    const bytes = ggmlTensorBytes(t.type, t.dims);
    sizes.push(bytes);
    head.string(t.name);
    head.u32(t.dims.length);
    for (const d of t.dims) head.u64(d);
    head.u32(GGML_TYPES[t.type].id);
    head.u64(offset);
    offset = alignUp(offset + bytes, alignment);
  }

  const tmp = `${file}.tmp-${process.pid}`;
  const fd = fs.openSync(tmp, 'w');
  let written = 0;
  try {
    const write = (b: Uint8Array) => {
      for (let done = 0; done < b.length; ) done += fs.writeSync(fd, b, done, b.length - done);
      written += b.length;
    };
    const pad = () => write(new Uint8Array(alignUp(written, alignment) - written));
    write(head.view8());
    pad();
    content.tensors.forEach((t, i) => {
      const data = t.data();
      if (data.length !== sizes[i]) throw new Error(`tensor ${t.name}: data() gave ${data.length} bytes, ${t.type} [${t.dims.join(', ')}] needs ${sizes[i]}`);
      write(data);
      pad();
    });
  } catch (err) {
    fs.closeSync(fd);
    fs.rmSync(tmp, { force: true });
    throw err;
  }
  fs.closeSync(fd);
  fs.renameSync(tmp, file);
  return written;
}
