/**
 * Writes a safetensors file tensor by tensor: the header is computed from shapes alone, then each tensor is
 * produced (if given lazily), converted and written before the next, so peak memory is one tensor.
 */
import fs from 'node:fs/promises';
import os from 'node:os';
import { TesseraError } from '../../errors.ts';
import { f32ToBf16, f32ToF16 } from './half-float.ts';

export type WritableDType = 'F32' | 'F16' | 'BF16';

export interface TensorToWrite {
  name: string;
  dtype: WritableDType;
  shape: number[];
  /** Row-major values, or a function producing them when the writer reaches this tensor. */
  data: Float32Array | (() => Float32Array);
}

export interface WriteSafetensorsOptions {
  /** Called after each tensor with elements written so far and in total. */
  onProgress?: (doneElements: number, totalElements: number) => void;
}

const BYTES: Record<WritableDType, number> = { F32: 4, F16: 2, BF16: 2 };

function numElementsOf(t: TensorToWrite): number {
  let n = 1;
  for (const d of t.shape) {
    if (!Number.isSafeInteger(d) || d < 0) {
      throw new TesseraError('INVALID_ARGUMENT', `writeSafetensors: tensor "${t.name}" shape must hold non-negative integers. Given: ${JSON.stringify(t.shape)}`);
    }
    n *= d;
  }
  return n;
}

function encode(t: TensorToWrite, data: Float32Array): Uint8Array {
  switch (t.dtype) {
    case 'F32':
      return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    case 'F16': {
      const bits = f32ToF16(data);
      return new Uint8Array(bits.buffer);
    }
    case 'BF16': {
      const bits = f32ToBf16(data);
      return new Uint8Array(bits.buffer);
    }
  }
}

/** Writes `tensors` in the given order to `file` (replacing it). Header padded with spaces to 8-byte alignment. */
export async function writeSafetensors(
  file: string,
  tensors: TensorToWrite[],
  metadata?: Record<string, string>,
  opts: WriteSafetensorsOptions = {},
): Promise<void> {
  if (os.endianness() !== 'LE') throw new TesseraError('INTERNAL', 'safetensors writer needs a little-endian host');
  const header: Record<string, unknown> = {};
  if (metadata !== undefined) header.__metadata__ = metadata;
  const counts: number[] = [];
  let offset = 0;
  for (const t of tensors) {
    if (t.name === '__metadata__' || Object.hasOwn(header, t.name)) {
      throw new TesseraError('INVALID_ARGUMENT', `writeSafetensors: tensor name "${t.name}" is reserved or repeated`);
    }
    if (!Object.hasOwn(BYTES, t.dtype)) {
      throw new TesseraError('INVALID_ARGUMENT', `writeSafetensors: tensor "${t.name}" dtype must be F32, F16 or BF16. Given: ${JSON.stringify(t.dtype)}`);
    }
    const n = numElementsOf(t);
    counts.push(n);
    const bytes = n * BYTES[t.dtype];
    header[t.name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + bytes] };
    offset += bytes;
  }
  let json = JSON.stringify(header);
  const jsonBytes = Buffer.byteLength(json, 'utf8');
  json += ' '.repeat((8 - (jsonBytes % 8)) % 8);
  const headerBuf = Buffer.from(json, 'utf8');
  const prefix = Buffer.alloc(8);
  prefix.writeBigUInt64LE(BigInt(headerBuf.length));

  const totalElements = counts.reduce((a, b) => a + b, 0);
  const fh = await fs.open(file, 'w');
  try {
    await fh.write(prefix);
    await fh.write(headerBuf);
    let doneElements = 0;
    for (let i = 0; i < tensors.length; i++) {
      const t = tensors[i];
      const data = typeof t.data === 'function' ? t.data() : t.data;
      if (data.length !== counts[i]) {
        throw new TesseraError(
          'INVALID_ARGUMENT',
          `writeSafetensors: tensor "${t.name}" has ${data.length} values but shape ${JSON.stringify(t.shape)} needs ${counts[i]}`,
        );
      }
      const bytes = encode(t, data);
      let written = 0;
      while (written < bytes.length) {
        const { bytesWritten } = await fh.write(bytes, written, Math.min(bytes.length - written, 1 << 30));
        written += bytesWritten;
      }
      doneElements += counts[i];
      opts.onProgress?.(doneElements, totalElements);
    }
  } finally {
    await fh.close();
  }
}
