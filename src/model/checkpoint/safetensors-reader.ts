/**
 * Reads tensors from safetensors files one tensor at a time (positioned reads at each tensor's offset; a file is
 * never loaded whole), for a single file or a sharded checkpoint described by `model.safetensors.index.json`.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { TesseraError } from '../../errors.ts';
import { bf16ToF32, f16ToF32 } from './half-float.ts';
import { readRegularTextFile } from './regular-file.ts';
import { parseHeader, readHeaderLength, type HeaderEntry } from './safetensors-header.ts';
import type { Float32Tensor, TensorInfo, TensorSource } from './tensor.ts';

/** Largest single read; fs.readSync refuses lengths of 2 GiB and more. */
const MAX_READ_BYTES = 1 << 30;

/** A TensorSource with the file-level extras a converter may want. */
export interface SafetensorsSource extends TensorSource {
  /** Files backing this source (one, or every shard). */
  readonly files: string[];
  /** `__metadata__` of the file holding `name`, or of the only file when `name` is omitted. */
  metadata(name?: string): Record<string, string>;
  /** The tensor's raw little-endian bytes, whatever its dtype. */
  readBytes(name: string): Uint8Array;
}

function invalid(message: string, cause?: unknown): TesseraError {
  return new TesseraError('CHECKPOINT_INVALID', message, cause === undefined ? undefined : { cause });
}

function assertLittleEndianHost(): void {
  if (os.endianness() !== 'LE') throw new TesseraError('INTERNAL', 'safetensors reader needs a little-endian host');
}

/** Fills `into` from `fd` starting at `position`; throws when the file ends first. */
function readFully(fd: number, into: Uint8Array, position: number, file: string, what: string): void {
  let done = 0;
  while (done < into.length) {
    const length = Math.min(MAX_READ_BYTES, into.length - done);
    let n: number;
    try {
      n = fs.readSync(fd, into, done, length, position + done);
    } catch (err) {
      throw invalid(`safetensors file ${file}: reading ${what} failed: ${(err as Error).message}`, err);
    }
    if (n === 0) throw invalid(`safetensors file ${file}: ${what} is truncated (file ended after ${done} of ${into.length} bytes)`);
    done += n;
  }
}

class SafetensorsFile {
  readonly file: string;
  readonly metadata: Record<string, string>;
  readonly entries: Map<string, HeaderEntry>;
  /** Names in data-region order. */
  readonly order: string[];
  private fd: number | null;

  private readonly closesFd: boolean;

  /** Opens `file`, or reads through `openedFd` (`file` then only names it in messages; closed by close() if `closesFd`). */
  constructor(file: string, openedFd?: number, closesFd = true) {
    assertLittleEndianHost();
    this.file = file;
    this.closesFd = closesFd;
    let fd: number;
    if (openedFd !== undefined) fd = openedFd;
    else {
      try {
        // O_NONBLOCK: opening a FIFO put in place of the file must not block; it is refused below as not regular.
        fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
      } catch (err) {
        throw invalid(`safetensors file ${file}: cannot open (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`, err);
      }
    }
    try {
      const stat = fs.fstatSync(fd);
      if (!stat.isFile()) throw invalid(`safetensors file ${file}: not a regular file`);
      const fileBytes = stat.size;
      const prefix = new Uint8Array(8);
      if (fileBytes >= 8) readFully(fd, prefix, 0, file, 'header length prefix');
      const headerBytes = readHeaderLength(file, prefix, fileBytes);
      const headerJson = new Uint8Array(headerBytes);
      readFully(fd, headerJson, 8, file, 'header');
      const header = parseHeader(file, headerJson, fileBytes);
      this.metadata = header.metadata;
      this.entries = new Map(header.entries.map((e) => [e.name, e]));
      this.order = header.entries.map((e) => e.name);
    } catch (err) {
      if (closesFd) fs.closeSync(fd);
      throw err;
    }
    this.fd = fd;
  }

  entry(name: string): HeaderEntry {
    const e = this.entries.get(name);
    if (e === undefined) throw invalid(`safetensors file ${this.file}: no tensor named "${name}"`);
    return e;
  }

  readBytes(name: string): Uint8Array {
    const e = this.entry(name);
    const out = new Uint8Array(e.byteLength);
    this.readInto(e, out);
    return out;
  }

  readFloat32(name: string): Float32Tensor {
    const e = this.entry(name);
    const data = new Float32Array(e.numElements);
    switch (e.dtype) {
      case 'F32':
        this.readInto(e, new Uint8Array(data.buffer));
        break;
      case 'F16':
      case 'BF16': {
        const half = new Uint16Array(e.numElements);
        this.readInto(e, new Uint8Array(half.buffer));
        if (e.dtype === 'F16') f16ToF32(half, data);
        else bf16ToF32(half, data);
        break;
      }
      case 'F64': {
        const wide = new Float64Array(e.numElements);
        this.readInto(e, new Uint8Array(wide.buffer));
        data.set(wide);
        break;
      }
      default:
        throw invalid(`safetensors file ${this.file}: tensor "${name}" has dtype ${e.dtype}; only F32, F16, BF16 and F64 read as float32`);
    }
    return { shape: [...e.shape], data };
  }

  close(): void {
    if (this.fd !== null) {
      if (this.closesFd) fs.closeSync(this.fd);
      this.fd = null;
    }
  }

  private readInto(e: HeaderEntry, out: Uint8Array): void {
    if (this.fd === null) throw invalid(`safetensors file ${this.file}: read of tensor "${e.name}" after close()`);
    readFully(this.fd, out, e.fileOffset, this.file, `tensor "${e.name}"`);
  }
}

/** A TensorSource over several files: `owner` says which file holds each exposed tensor. */
class MultiFileSource implements SafetensorsSource {
  readonly files: string[];
  private readonly shards: SafetensorsFile[];
  private readonly owner: Map<string, SafetensorsFile>;
  private readonly describe: string;

  constructor(describe: string, shards: SafetensorsFile[], owner: Map<string, SafetensorsFile>) {
    this.describe = describe;
    this.shards = shards;
    this.owner = owner;
    this.files = shards.map((s) => s.file);
  }

  names(): string[] {
    return this.shards.flatMap((s) => s.order.filter((n) => this.owner.get(n) === s));
  }

  has(name: string): boolean {
    return this.owner.has(name);
  }

  info(name: string): TensorInfo {
    const shard = this.shardOf(name);
    const e = shard.entry(name);
    return { name, dtype: e.dtype, shape: [...e.shape], file: shard.file };
  }

  readFloat32(name: string): Float32Tensor {
    return this.shardOf(name).readFloat32(name);
  }

  readBytes(name: string): Uint8Array {
    return this.shardOf(name).readBytes(name);
  }

  metadata(name?: string): Record<string, string> {
    if (name !== undefined) return { ...this.shardOf(name).metadata };
    return this.shards.length === 1 ? { ...this.shards[0].metadata } : {};
  }

  close(): void {
    for (const s of this.shards) s.close();
  }

  private shardOf(name: string): SafetensorsFile {
    const shard = this.owner.get(name);
    if (shard === undefined) throw invalid(`checkpoint ${this.describe}: missing tensor "${name}"`);
    return shard;
  }
}

/** Opens one safetensors file; its header is read and validated now, tensors on demand. */
export function openSafetensors(file: string): SafetensorsSource {
  const shard = new SafetensorsFile(file);
  return new MultiFileSource(file, [shard], new Map(shard.order.map((n) => [n, shard])));
}

/**
 * The same over a descriptor the caller already opened and checked (e.g. beneath an allowed root); `shownName`
 * names the file in messages. With `closesFd` (default true) the source owns `fd`: close() closes it, also when this
 * throws; without it the caller keeps it open until it is done with the source and closes it itself.
 */
export function openSafetensorsFd(fd: number, shownName: string, opts: { closesFd?: boolean } = {}): SafetensorsSource {
  const shard = new SafetensorsFile(shownName, fd, opts.closesFd ?? true);
  return new MultiFileSource(shownName, [shard], new Map(shard.order.map((n) => [n, shard])));
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Reads `model.safetensors.index.json`: tensor name -> shard file name (plain names in the same directory). */
function readIndex(indexFile: string): Map<string, string> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(readRegularTextFile(indexFile));
  } catch (err) {
    throw invalid(`safetensors index ${indexFile}: cannot read JSON (${(err as Error).message})`, err);
  }
  if (!isPlainObject(parsed) || !isPlainObject(parsed.weight_map)) {
    throw invalid(`safetensors index ${indexFile}: "weight_map" must be an object of tensor name -> shard file`);
  }
  const map = new Map<string, string>();
  for (const [name, shardName] of Object.entries(parsed.weight_map)) {
    if (typeof shardName !== 'string' || shardName === '' || path.basename(shardName) !== shardName || shardName === '..') {
      throw invalid(`safetensors index ${indexFile}: tensor "${name}" maps to ${JSON.stringify(shardName)}, which is not a file name in the checkpoint directory`);
    }
    map.set(name, shardName);
  }
  return map;
}

/**
 * Opens a checkpoint directory's tensors: the shards listed by `model.safetensors.index.json` when present
 * (every name in its weight_map must exist in the named shard), else `model.safetensors`.
 */
export function openCheckpointTensors(dir: string): SafetensorsSource {
  const indexFile = path.join(dir, 'model.safetensors.index.json');
  if (!fs.existsSync(indexFile)) {
    const single = path.join(dir, 'model.safetensors');
    if (!fs.existsSync(single)) {
      throw invalid(`checkpoint ${dir}: neither model.safetensors.index.json nor model.safetensors found`);
    }
    return openSafetensors(single);
  }
  const weightMap = readIndex(indexFile);
  const shardNames = [...new Set(weightMap.values())].sort();
  const shards: SafetensorsFile[] = [];
  try {
    const byName = new Map<string, SafetensorsFile>();
    for (const shardName of shardNames) {
      const file = path.join(dir, shardName);
      if (!fs.existsSync(file)) {
        throw invalid(`safetensors index ${indexFile}: shard file ${shardName} (named for tensor "${firstTensorOf(weightMap, shardName)}") does not exist`);
      }
      const shard = new SafetensorsFile(file);
      shards.push(shard);
      byName.set(shardName, shard);
    }
    const owner = new Map<string, SafetensorsFile>();
    for (const [name, shardName] of weightMap) {
      const shard = byName.get(shardName)!;
      if (!shard.entries.has(name)) {
        throw invalid(`safetensors index ${indexFile}: tensor "${name}" is mapped to ${shardName}, which does not contain it`);
      }
      owner.set(name, shard);
    }
    return new MultiFileSource(dir, shards, owner);
  } catch (err) {
    for (const s of shards) s.close();
    throw err;
  }
}

function firstTensorOf(weightMap: Map<string, string>, shardName: string): string {
  for (const [name, s] of weightMap) if (s === shardName) return name;
  return '';
}
