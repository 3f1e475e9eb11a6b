import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, onTestFinished, test } from 'vitest';
import { TesseraError } from '../../errors.ts';
import { openCheckpointTensors, openSafetensors } from './safetensors-reader.ts';
import { writeSafetensors } from './safetensors-writer.ts';

function tempDir(): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tessera-st-'));
  onTestFinished(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** A safetensors file from a raw header value (serialised as given) and a data region. */
function rawFile(dir: string, header: unknown, data: Uint8Array = new Uint8Array(0), headerLength?: bigint): string {
  const json = Buffer.from(typeof header === 'string' ? header : JSON.stringify(header));
  const prefix = Buffer.alloc(8);
  prefix.writeBigUInt64LE(headerLength ?? BigInt(json.length));
  const file = path.join(dir, `t-${Math.random().toString(36).slice(2)}.safetensors`);
  fs.writeFileSync(file, Buffer.concat([prefix, json, data]));
  return file;
}

function expectInvalid(fn: () => unknown, ...fragments: string[]): void {
  let caught: unknown;
  try {
    fn();
  } catch (err) {
    caught = err;
  }
  expect(caught, 'should throw').toBeInstanceOf(TesseraError);
  expect((caught as TesseraError).code).toBe('CHECKPOINT_INVALID');
  for (const f of fragments) expect((caught as Error).message).toContain(f);
}

const f32 = (values: number[]) => new Uint8Array(new Float32Array(values).buffer);

describe('writeSafetensors -> openSafetensors round trip', () => {
  test('F32, F16 and BF16 tensors read back as float32, with metadata and an 8-byte aligned header', async () => {
    const dir = tempDir();
    const file = path.join(dir, 'm.safetensors');
    const values = new Float32Array([0, 1, -2, 0.5, 3.25, -1024]);
    await writeSafetensors(
      file,
      [
        { name: 'a', dtype: 'F32', shape: [2, 3], data: values },
        { name: 'b', dtype: 'F16', shape: [6], data: () => values },
        { name: 'c', dtype: 'BF16', shape: [3, 2], data: values },
        { name: 'empty', dtype: 'F32', shape: [0, 4], data: new Float32Array(0) },
      ],
      { format: 'pt' },
    );
    const bytes = fs.readFileSync(file);
    const headerLength = Number(bytes.readBigUInt64LE(0));
    expect((8 + headerLength) % 8).toBe(0);
    expect(bytes.length).toBe(8 + headerLength + 24 + 12 + 12);

    const src = openSafetensors(file);
    onTestFinished(() => src.close());
    expect(src.names()).toEqual(['a', 'b', 'c', 'empty']);
    expect(src.metadata()).toEqual({ format: 'pt' });
    expect(src.info('b')).toEqual({ name: 'b', dtype: 'F16', shape: [6], file });
    for (const name of ['a', 'b', 'c']) expect(Array.from(src.readFloat32(name).data)).toEqual(Array.from(values));
    expect(src.readFloat32('c').shape).toEqual([3, 2]);
    expect(src.readFloat32('empty').data.length).toBe(0);
    expect(src.has('zzz')).toBe(false);
    expectInvalid(() => src.readFloat32('zzz'), 'zzz', file);
  });

  test('F64 and integer tensors: F64 converts, integers only as raw bytes', () => {
    const dir = tempDir();
    const data = Buffer.concat([Buffer.from(new Float64Array([1.5, -2.25]).buffer), Buffer.from(new Int32Array([7, -7]).buffer)]);
    const file = rawFile(
      dir,
      { d: { dtype: 'F64', shape: [2], data_offsets: [0, 16] }, i: { dtype: 'I32', shape: [2], data_offsets: [16, 24] } },
      data,
    );
    const src = openSafetensors(file);
    onTestFinished(() => src.close());
    expect(Array.from(src.readFloat32('d').data)).toEqual([1.5, -2.25]);
    expect(Array.from(new Int32Array(src.readBytes('i').slice().buffer))).toEqual([7, -7]);
    expectInvalid(() => src.readFloat32('i'), '"i"', 'I32');
  });

  test('reading after close fails cleanly', async () => {
    const dir = tempDir();
    const file = path.join(dir, 'm.safetensors');
    await writeSafetensors(file, [{ name: 'a', dtype: 'F32', shape: [1], data: new Float32Array([1]) }]);
    const src = openSafetensors(file);
    src.close();
    src.close(); // idempotent
    expectInvalid(() => src.readFloat32('a'), 'after close');
  });

  test('writer rejects a data length that does not match the shape', async () => {
    const dir = tempDir();
    await expect(
      writeSafetensors(path.join(dir, 'x.safetensors'), [{ name: 'a', dtype: 'F32', shape: [2, 2], data: new Float32Array(3) }]),
    ).rejects.toThrow(/"a" has 3 values but shape \[2,2\] needs 4/);
  });
});

describe('malformed safetensors files are rejected naming file and tensor', () => {
  const ok = { dtype: 'F32', shape: [2], data_offsets: [0, 8] };

  test('file shorter than 8 bytes', () => {
    const dir = tempDir();
    const file = path.join(dir, 'short.safetensors');
    fs.writeFileSync(file, Buffer.from([1, 2, 3]));
    expectInvalid(() => openSafetensors(file), file, 'shorter than the 8-byte');
    fs.writeFileSync(file, Buffer.alloc(0));
    expectInvalid(() => openSafetensors(file), '0 bytes');
  });

  test('header length past the end of file, and absurdly large', () => {
    const dir = tempDir();
    expectInvalid(() => openSafetensors(rawFile(dir, { a: ok }, f32([1, 2]), 5000n)), 'past the end of the file');
    expectInvalid(() => openSafetensors(rawFile(dir, { a: ok }, f32([1, 2]), 2n ** 64n - 1n)), 'exceeds the');
    expectInvalid(() => openSafetensors(rawFile(dir, { a: ok }, f32([1, 2]), 200n * 1024n * 1024n)), 'exceeds the');
  });

  test('header that is not JSON, not UTF-8, or not an object', () => {
    const dir = tempDir();
    expectInvalid(() => openSafetensors(rawFile(dir, '{"a": {"dtype": "F32",')), 'not valid UTF-8 JSON');
    const file = rawFile(dir, 'xx');
    const bytes = fs.readFileSync(file);
    bytes[8] = 0xff;
    bytes[9] = 0xfe;
    fs.writeFileSync(file, bytes);
    expectInvalid(() => openSafetensors(file), 'not valid UTF-8 JSON');
    expectInvalid(() => openSafetensors(rawFile(dir, [1, 2])), 'must be a JSON object');
    expectInvalid(() => openSafetensors(rawFile(dir, 'null')), 'must be a JSON object');
  });

  test('entry that is not an object, and bad __metadata__', () => {
    const dir = tempDir();
    expectInvalid(() => openSafetensors(rawFile(dir, { weird: 42 })), 'tensor "weird"', 'must be an object');
    expectInvalid(() => openSafetensors(rawFile(dir, { __metadata__: { n: 1 } })), '__metadata__');
  });

  test('unknown or missing dtype', () => {
    const dir = tempDir();
    expectInvalid(() => openSafetensors(rawFile(dir, { w: { ...ok, dtype: 'F8_E4M3' } }, f32([1, 2]))), 'tensor "w"', 'unsupported dtype "F8_E4M3"');
    expectInvalid(() => openSafetensors(rawFile(dir, { w: { shape: [2], data_offsets: [0, 8] } }, f32([1, 2]))), 'tensor "w"', 'dtype');
  });

  test('shape not an array of non-negative safe integers', () => {
    const dir = tempDir();
    for (const shape of ['2', [2.5], [-1], [2 ** 60], [1, null], null, [2 ** 40, 2 ** 40]]) {
      expectInvalid(() => openSafetensors(rawFile(dir, { w: { ...ok, shape } }, f32([1, 2]))), 'tensor "w"', 'shape');
    }
  });

  test('offsets not [begin <= end] integers, or past the data region', () => {
    const dir = tempDir();
    for (const offs of [[8, 0], [0], [0, 8, 9], ['0', '8'], [-8, 0], [0.5, 8.5], null]) {
      expectInvalid(() => openSafetensors(rawFile(dir, { w: { ...ok, data_offsets: offs } }, f32([1, 2]))), 'tensor "w"', 'data_offsets');
    }
    expectInvalid(() => openSafetensors(rawFile(dir, { w: ok }, f32([1]))), 'tensor "w"', 'past the end of the data region');
  });

  test('byte length different from numel * dtype size', () => {
    const dir = tempDir();
    expectInvalid(
      () => openSafetensors(rawFile(dir, { w: { dtype: 'F16', shape: [2], data_offsets: [0, 8] } }, f32([1, 2]))),
      'tensor "w"',
      'byte length 8',
      '4 bytes',
    );
  });

  test('overlapping tensors', () => {
    const dir = tempDir();
    const header = { a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] }, b: { dtype: 'F32', shape: [2], data_offsets: [4, 12] } };
    expectInvalid(() => openSafetensors(rawFile(dir, header, f32([1, 2, 3]))), '"a"', '"b"', 'overlap');
    // Zero-length tensors may sit anywhere; gaps are allowed.
    const fine = { a: { dtype: 'F32', shape: [1], data_offsets: [0, 4] }, z: { dtype: 'F32', shape: [0], data_offsets: [0, 0] }, b: { dtype: 'F32', shape: [1], data_offsets: [8, 12] } };
    const src = openSafetensors(rawFile(dir, fine, f32([1, 2, 3])));
    expect(Array.from(src.readFloat32('b').data)).toEqual([3]);
    src.close();
  });

  test('file truncated after opening: the read fails instead of returning garbage', () => {
    const dir = tempDir();
    const file = rawFile(dir, { w: ok }, f32([1, 2]));
    const src = openSafetensors(file);
    onTestFinished(() => src.close());
    fs.truncateSync(file, fs.statSync(file).size - 4);
    expectInvalid(() => src.readFloat32('w'), 'tensor "w"', 'truncated');
  });

  test('missing file and directory instead of a file', () => {
    const dir = tempDir();
    expectInvalid(() => openSafetensors(path.join(dir, 'nope.safetensors')), 'nope.safetensors', 'ENOENT');
    expectInvalid(() => openSafetensors(dir), dir);
  });

  test('random bytes never crash or hang the reader', () => {
    const dir = tempDir();
    let seed = 12345;
    const next = () => (seed = (Math.imul(seed, 1103515245) + 12345) >>> 0);
    const good = Buffer.concat([Buffer.alloc(8), Buffer.from(JSON.stringify({ a: ok, b: { ...ok, data_offsets: [8, 16] } })), Buffer.from(f32([1, 2, 3, 4]))]);
    good.writeBigUInt64LE(BigInt(good.length - 8 - 16), 0);
    const file = path.join(dir, 'fuzz.safetensors');
    for (let round = 0; round < 300; round++) {
      const bytes = Buffer.from(good);
      for (let k = 0; k < 1 + (next() % 4); k++) bytes[next() % bytes.length] = next() & 0xff;
      fs.writeFileSync(file, bytes.subarray(0, bytes.length - (next() % 3 === 0 ? next() % 20 : 0)));
      try {
        const src = openSafetensors(file);
        for (const n of src.names()) src.readFloat32(n);
        src.close();
      } catch (err) {
        expect(err).toBeInstanceOf(TesseraError);
      }
    }
  });
});

describe('openCheckpointTensors', () => {
  async function shardedDir(weightMap: Record<string, string>): Promise<string> {
    const dir = tempDir();
    await writeSafetensors(path.join(dir, 'model-00001-of-00002.safetensors'), [
      { name: 'x', dtype: 'F32', shape: [2], data: new Float32Array([1, 2]) },
      { name: 'unlisted', dtype: 'F32', shape: [1], data: new Float32Array([9]) },
    ]);
    await writeSafetensors(path.join(dir, 'model-00002-of-00002.safetensors'), [
      { name: 'y', dtype: 'BF16', shape: [1, 2], data: new Float32Array([3, 4]) },
    ]);
    fs.writeFileSync(path.join(dir, 'model.safetensors.index.json'), JSON.stringify({ metadata: { total_size: 20 }, weight_map: weightMap }));
    return dir;
  }

  test('a sharded checkpoint exposes the weight_map tensors from their shards', async () => {
    const dir = await shardedDir({ x: 'model-00001-of-00002.safetensors', y: 'model-00002-of-00002.safetensors' });
    const src = openCheckpointTensors(dir);
    onTestFinished(() => src.close());
    expect(src.names()).toEqual(['x', 'y']);
    expect(src.has('unlisted')).toBe(false);
    expect(src.info('y').file).toBe(path.join(dir, 'model-00002-of-00002.safetensors'));
    expect(Array.from(src.readFloat32('y').data)).toEqual([3, 4]);
    expectInvalid(() => src.info('nope'), '"nope"', dir);
  });

  test('weight_map naming a missing shard or a tensor the shard lacks', async () => {
    const missingShard = await shardedDir({ x: 'model-00001-of-00002.safetensors', y: 'model-00003-of-00003.safetensors' });
    expectInvalid(() => openCheckpointTensors(missingShard), 'model-00003-of-00003.safetensors', '"y"', 'does not exist');
    const wrongShard = await shardedDir({ x: 'model-00001-of-00002.safetensors', y: 'model-00001-of-00002.safetensors' });
    expectInvalid(() => openCheckpointTensors(wrongShard), '"y"', 'model-00001-of-00002.safetensors', 'does not contain');
    const escaping = await shardedDir({ x: '../model-00001-of-00002.safetensors' });
    expectInvalid(() => openCheckpointTensors(escaping), '"x"', 'not a file name');
  });

  test('bad index JSON, single-file fallback, and an empty directory', async () => {
    const dir = tempDir();
    fs.writeFileSync(path.join(dir, 'model.safetensors.index.json'), '{"weight_map": [1]}');
    expectInvalid(() => openCheckpointTensors(dir), 'weight_map');
    fs.writeFileSync(path.join(dir, 'model.safetensors.index.json'), '{oops');
    expectInvalid(() => openCheckpointTensors(dir), 'model.safetensors.index.json', 'JSON');

    const single = tempDir();
    await writeSafetensors(path.join(single, 'model.safetensors'), [{ name: 'w', dtype: 'F16', shape: [1], data: new Float32Array([0.25]) }]);
    const src = openCheckpointTensors(single);
    expect(src.readFloat32('w').data[0]).toBe(0.25);
    src.close();

    expectInvalid(() => openCheckpointTensors(tempDir()), 'neither model.safetensors.index.json nor model.safetensors');
  });
});
