import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, test } from 'vitest';
import { decodeGgml, encodeGgml } from './ggml-blocks.ts';
import { GGUF_DEFAULT_ALIGNMENT, type GgufValue } from './gguf-format.ts';
import { plainValue, readGguf, readGgufTensorBytes } from './gguf-reader.ts';
import { gguf, writeGguf, type GgufTensorToWrite } from './gguf-writer.ts';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tessera-gguf-'));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

function values(n: number, seed: number): Float32Array {
  return Float32Array.from({ length: n }, (_, i) => Math.sin(i * 0.37 + seed) * (1 + (i % 7)));
}

const METADATA: Array<[string, GgufValue]> = [
  ['general.architecture', gguf.str('llama')],
  ['general.name', gguf.str('ünïcode ✓')],
  ['test.u8', { kind: 'uint8', value: 255 }],
  ['test.i8', { kind: 'int8', value: -128 }],
  ['test.u16', { kind: 'uint16', value: 65535 }],
  ['test.i16', { kind: 'int16', value: -32768 }],
  ['test.u32', gguf.u32(4_000_000_000)],
  ['test.i32', gguf.i32(-2_000_000_000)],
  ['test.f32', gguf.f32(0.5)],
  ['test.f64', { kind: 'float64', value: Math.PI }],
  ['test.u64', { kind: 'uint64', value: 2n ** 63n + 5n }],
  ['test.i64', { kind: 'int64', value: -(2n ** 62n) }],
  ['test.bool', gguf.bool(true)],
  ['test.strings', gguf.strings(['a', '', 'Ġthe', '<|endoftext|>'])],
  ['test.i32s', gguf.i32s([1, -2, 3])],
  ['test.empty', { kind: 'array', items: [] }],
];

describe('GGUF writer', () => {
  test('what it writes reads back: header, every metadata value type, tensor infos, aligned tensor bytes', () => {
    const file = path.join(dir, 'roundtrip.gguf');
    const a = values(96 * 3, 1);
    const b = values(64 * 5, 2);
    const c = values(7, 3);
    const tensors: GgufTensorToWrite[] = [
      { name: 'a.weight', dims: [96, 3], type: 'Q4_0', data: () => encodeGgml('Q4_0', a, 96) },
      { name: 'b.weight', dims: [64, 5], type: 'Q8_0', data: () => encodeGgml('Q8_0', b, 64) },
      { name: 'c.bias', dims: [7], type: 'F32', data: () => encodeGgml('F32', c, 7) }, // 28 bytes: the next offset needs padding
      { name: 'd.weight', dims: [5, 3, 2], type: 'F16', data: () => encodeGgml('F16', values(30, 4), 5) },
    ];
    const size = writeGguf(file, { metadata: METADATA, tensors });
    expect(fs.statSync(file).size).toBe(size);

    const read = readGguf(file);
    expect(read.version).toBe(3);
    expect(read.alignment).toBe(GGUF_DEFAULT_ALIGNMENT);
    expect([...read.metadata.keys()]).toEqual(METADATA.map(([k]) => k));
    for (const [key, value] of METADATA) expect(read.metadata.get(key)).toEqual(value.kind === 'float32' ? { kind: 'float32', value: Math.fround(value.value) } : value);
    expect(plainValue(read.metadata.get('test.strings')!)).toEqual(['a', '', 'Ġthe', '<|endoftext|>']);

    expect(read.tensors.map((t) => [t.name, t.type, t.dims])).toEqual(tensors.map((t) => [t.name, t.type, t.dims]));
    const dataStart = read.tensors[0].fileOffset;
    expect(dataStart % GGUF_DEFAULT_ALIGNMENT).toBe(0);
    for (const [i, t] of read.tensors.entries()) {
      expect((t.fileOffset - dataStart) % GGUF_DEFAULT_ALIGNMENT).toBe(0);
      expect(readGgufTensorBytes(file, t)).toEqual(tensors[i].data());
      if (i > 0) expect(t.fileOffset).toBeGreaterThanOrEqual(read.tensors[i - 1].fileOffset + read.tensors[i - 1].byteLength);
    }
  });

  test('metadata far larger than the writer\'s first buffer (a 49k-token vocabulary) reads back whole', () => {
    const file = path.join(dir, 'big.gguf');
    const tokens = Array.from({ length: 49152 }, (_, i) => `tok-${i}-${'x'.repeat(i % 13)}`);
    const types = Array.from({ length: tokens.length }, (_, i) => (i % 5) + 1);
    const metadata: Array<[string, GgufValue]> = [['a.tokens', gguf.strings(tokens)], ['a.types', gguf.i32s(types)], ['a.after', gguf.u32(7)]];
    writeGguf(file, { metadata, tensors: [{ name: 'w', dims: [32], type: 'F32', data: () => encodeGgml('F32', values(32, 5), 32) }] });
    const read = readGguf(file);
    expect(plainValue(read.metadata.get('a.tokens')!)).toEqual(tokens);
    expect(plainValue(read.metadata.get('a.types')!)).toEqual(types);
    expect(plainValue(read.metadata.get('a.after')!)).toBe(7);
    expect(decodeGgml('F32', readGgufTensorBytes(file, read.tensors[0]), 32)).toEqual(values(32, 5));
  });

  test('general.alignment sets the alignment of the data section and of every tensor', () => {
    const file = path.join(dir, 'aligned.gguf');
    writeGguf(file, {
      metadata: [['general.alignment', gguf.u32(64)]],
      tensors: [3, 5, 9].map((n, i) => ({ name: `t${i}`, dims: [n], type: 'F32' as const, data: () => encodeGgml('F32', values(n, i), n) })),
    });
    const read = readGguf(file);
    expect(read.alignment).toBe(64);
    for (const t of read.tensors) expect(t.fileOffset % 64).toBe(0);
  });

  test('bad input is refused and leaves no file behind', () => {
    const file = path.join(dir, 'bad.gguf');
    const t = (over: Partial<GgufTensorToWrite>): GgufTensorToWrite => ({ name: 'x', dims: [32], type: 'F32', data: () => new Uint8Array(128), ...over });
    expect(() => writeGguf(file, { metadata: [], tensors: [t({ data: () => new Uint8Array(12) })] })).toThrow(/data\(\) gave 12 bytes/);
    expect(() => writeGguf(file, { metadata: [['k', gguf.u32(1)], ['k', gguf.u32(2)]], tensors: [] })).toThrow(/given twice/);
    expect(() => writeGguf(file, { metadata: [], tensors: [t({ name: 'n'.repeat(65) })] })).toThrow(/longer than 64 bytes/);
    expect(() => writeGguf(file, { metadata: [], tensors: [t({ dims: [33], type: 'Q8_0' })] })).toThrow(/multiple of 32/);
    expect(() => writeGguf(file, { metadata: [['general.alignment', gguf.u32(12)]], tensors: [] })).toThrow(/multiple of 8/);
    expect(() => writeGguf(file, { metadata: [['mixed', { kind: 'array', items: [gguf.u32(1), gguf.str('a')] }]], tensors: [] })).toThrow(/one value type/);
    expect(fs.readdirSync(dir).filter((f) => f.startsWith('bad.gguf'))).toEqual([]);
  });

  test('the reader refuses what is not a whole GGUF file', () => {
    const file = path.join(dir, 'whole.gguf');
    writeGguf(file, { metadata: METADATA, tensors: [{ name: 'w', dims: [32, 2], type: 'Q8_0', data: () => encodeGgml('Q8_0', values(64, 9), 32) }] });
    const bytes = fs.readFileSync(file);
    const truncated = path.join(dir, 'truncated.gguf');
    fs.writeFileSync(truncated, bytes.subarray(0, bytes.length - 40));
    expect(() => readGguf(truncated)).toThrow(/runs past the end/);
    fs.writeFileSync(truncated, bytes.subarray(0, 40));
    expect(() => readGguf(truncated)).toThrow(/truncated GGUF/);
    const notGguf = path.join(dir, 'not.gguf');
    fs.writeFileSync(notGguf, Buffer.from('GGML and more bytes than a header needs'));
    expect(() => readGguf(notGguf)).toThrow(/not a GGUF file/);
  });
});
