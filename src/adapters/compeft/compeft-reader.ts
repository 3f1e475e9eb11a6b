import { crc32 } from 'node:zlib';
import { TesseraError } from '../../errors.ts';
import { LORA_TARGETS, type LoraTarget } from '../../model/model-config.ts';
import {
  COMPEFT_HEADER_CRC_BYTES,
  COMPEFT_LIMITS,
  COMPEFT_MAGIC,
  COMPEFT_MAJOR_VERSION,
  COMPEFT_PREAMBLE_BYTES,
  type CompeftFile,
  type CompeftHeader,
  type CompeftTensorEntry,
} from './compeft-format.ts';
import { peftLoraTensorName } from '../../model/checkpoint/hf-tensor-names.ts';
import { bitmapBytes, MAX_RICE_K, PayloadError, signBytes, visitPayload } from './compeft-payload.ts';

export interface ParseCompeftOptions {
  /** Name used in error messages (a path, an adapter id). */
  source?: string;
  /** Walk every payload once to prove positions and padding are well-formed (default true; O(file size)). */
  verifyPayloads?: boolean;
}

/**
 * Parses and validates a `.cpeft` file: magic, version, header length, header CRC, JSON shape, every count and shape
 * against sanity limits and the file size, payload offsets (contiguous, inside the file), payload CRCs, and (by
 * default) each payload's structure. Every failure is TesseraError('COMPEFT_INVALID'). Allocates nothing
 * proportional to tensor shapes.
 */
export function parseCompeft(bytes: Uint8Array, opts: ParseCompeftOptions = {}): CompeftFile {
  const source = opts.source ?? '.cpeft file';
  const fail = (what: string): never => {
    throw new TesseraError('COMPEFT_INVALID', `${source}: ${what}`);
  };
  const minBytes = COMPEFT_PREAMBLE_BYTES + COMPEFT_HEADER_CRC_BYTES;
  if (bytes.length < minBytes) fail(`file is ${bytes.length} bytes, shorter than the ${minBytes}-byte minimum`);
  for (let i = 0; i < COMPEFT_MAGIC.length; i++) {
    if (bytes[i] !== COMPEFT_MAGIC[i]) fail('bad magic bytes: not a ComPEFT (.cpeft) file');
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const majorVersion = view.getUint16(8, true);
  const minorVersion = view.getUint16(10, true);
  if (majorVersion !== COMPEFT_MAJOR_VERSION) {
    fail(`unsupported format major version ${majorVersion}; this reader supports version ${COMPEFT_MAJOR_VERSION}.x`);
  }
  const headerLength = view.getUint32(12, true);
  if (headerLength > bytes.length - minBytes) {
    fail(`header length ${headerLength} runs past the end of the ${bytes.length}-byte file`);
  }
  const headerEnd = COMPEFT_PREAMBLE_BYTES + headerLength;
  const storedHeaderCrc = view.getUint32(headerEnd, true);
  const headerCrc = crc32(bytes.subarray(0, headerEnd));
  if (storedHeaderCrc !== headerCrc) fail(`header checksum mismatch (stored ${hex(storedHeaderCrc)}, computed ${hex(headerCrc)})`);
  let json: unknown;
  try {
    json = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes.subarray(COMPEFT_PREAMBLE_BYTES, headerEnd)));
  } catch (err) {
    fail(`header is not valid UTF-8 JSON (${(err as Error).message})`);
  }
  const dataOffset = headerEnd + COMPEFT_HEADER_CRC_BYTES;
  const header = checkHeader(json, bytes.length - dataOffset, fail);
  if (header.formatVersion !== `${majorVersion}.${minorVersion}`) {
    fail(`header formatVersion "${header.formatVersion}" does not match the binary version ${majorVersion}.${minorVersion}`);
  }
  for (const t of header.tensors) {
    const start = dataOffset + t.offset;
    const crc = crc32(bytes.subarray(start, start + t.length));
    if (crc !== t.crc32) fail(`tensor ${t.name}: payload checksum mismatch (stored ${hex(t.crc32)}, computed ${hex(crc)})`);
  }
  const file: CompeftFile = { bytes, majorVersion, minorVersion, header, dataOffset };
  if (opts.verifyPayloads ?? true) {
    const noop = (): void => {};
    for (let i = 0; i < header.tensors.length; i++) {
      const t = header.tensors[i];
      try {
        visitPayload(bytes, dataOffset + t.offset, t.length, { encoding: t.encoding, riceK: t.riceK, nnz: t.nnz, numElements: t.rows * t.cols }, noop);
      } catch (err) {
        if (err instanceof PayloadError) fail(`tensor ${t.name}: ${err.message}`);
        throw err;
      }
    }
  }
  return file;
}

function hex(v: number): string {
  return `0x${v.toString(16).padStart(8, '0')}`;
}

type Fail = (what: string) => never;

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function intField(obj: Record<string, unknown>, key: string, min: number, max: number, where: string, fail: Fail): number {
  const v = obj[key];
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
    fail(`${where}\`${key}\` must be an integer >= ${min} and <= ${max}. Given: ${JSON.stringify(v)}`);
  }
  return v as number;
}

function finiteField(obj: Record<string, unknown>, key: string, where: string, fail: Fail): number {
  const v = obj[key];
  if (typeof v !== 'number' || !Number.isFinite(v)) fail(`${where}\`${key}\` must be a finite number. Given: ${JSON.stringify(v)}`);
  return v as number;
}

function checkHeader(json: unknown, dataBytes: number, fail: Fail): CompeftHeader {
  if (!isObject(json)) fail('header must be a JSON object');
  const h = json as Record<string, unknown>;
  if (typeof h.formatVersion !== 'string') fail(`header \`formatVersion\` must be a string. Given: ${JSON.stringify(h.formatVersion)}`);
  if (h.baseModel !== null && (typeof h.baseModel !== 'string' || h.baseModel.length > COMPEFT_LIMITS.maxNameLength)) {
    fail(`header \`baseModel\` must be a string of at most ${COMPEFT_LIMITS.maxNameLength} characters or null`);
  }
  if (!Array.isArray(h.targets) || h.targets.some((t) => !(LORA_TARGETS as readonly unknown[]).includes(t)) || new Set(h.targets).size !== h.targets.length) {
    fail(`header \`targets\` must be distinct names from ${LORA_TARGETS.join(', ')}. Given: ${JSON.stringify(h.targets)?.slice(0, 200)}`);
  }
  const targets = h.targets as LoraTarget[];
  const numLayers = intField(h, 'numLayers', 1, COMPEFT_LIMITS.maxLayers, 'header ', fail);
  const rank = intField(h, 'rank', 1, COMPEFT_LIMITS.maxRank, 'header ', fail);
  const loraAlpha = finiteField(h, 'loraAlpha', 'header ', fail);
  const scale = finiteField(h, 'scale', 'header ', fail);
  const density = finiteField(h, 'density', 'header ', fail);
  if (!(density > 0 && density <= 1)) fail(`header \`density\` must be > 0 and <= 1. Given: ${density}`);
  if (h.alpha !== 'auto' && !(typeof h.alpha === 'number' && Number.isFinite(h.alpha) && h.alpha > 0)) {
    fail(`header \`alpha\` must be "auto" or a number > 0. Given: ${JSON.stringify(h.alpha)}`);
  }
  if (h.relFrobeniusError !== null && !(typeof h.relFrobeniusError === 'number' && Number.isFinite(h.relFrobeniusError))) {
    fail(`header \`relFrobeniusError\` must be a finite number or null. Given: ${JSON.stringify(h.relFrobeniusError)}`);
  }
  const dataLength = intField(h, 'dataLength', 0, Number.MAX_SAFE_INTEGER, 'header ', fail);
  if (dataLength !== dataBytes) fail(`header \`dataLength\` is ${dataLength} but the file holds ${dataBytes} data bytes`);
  const maxTensors = numLayers * targets.length * 2;
  if (!Array.isArray(h.tensors) || h.tensors.length > maxTensors) {
    fail(`header \`tensors\` must be an array of at most numLayers x targets x 2 = ${maxTensors} entries`);
  }
  const tensors: CompeftTensorEntry[] = [];
  const seen = new Map<string, CompeftTensorEntry>();
  let expectedOffset = 0;
  (h.tensors as unknown[]).forEach((raw, i) => {
    const t = checkTensor(raw, i, { numLayers, rank, targets, dataLength }, fail);
    if (t.offset !== expectedOffset) fail(`tensor ${t.name}: \`offset\` ${t.offset} must be ${expectedOffset} (payloads are back to back)`);
    expectedOffset += t.length;
    const key = `${t.layer}:${t.target}:${t.kind}`;
    if (seen.has(key)) fail(`tensor ${t.name}: layer ${t.layer} ${t.target} ${t.kind} appears twice`);
    seen.set(key, t);
    tensors.push(t);
  });
  if (expectedOffset !== dataLength) fail(`payloads cover ${expectedOffset} bytes but \`dataLength\` is ${dataLength}`);
  for (const t of tensors) {
    const partner = seen.get(`${t.layer}:${t.target}:${t.kind === 'A' ? 'B' : 'A'}`);
    if (!partner) fail(`tensor ${t.name}: layer ${t.layer} ${t.target} has ${t.kind} but no ${t.kind === 'A' ? 'B' : 'A'}`);
  }
  return {
    formatVersion: h.formatVersion as string,
    baseModel: h.baseModel as string | null,
    targets,
    numLayers,
    rank,
    loraAlpha,
    scale,
    density,
    alpha: h.alpha as 'auto' | number,
    relFrobeniusError: h.relFrobeniusError as number | null,
    dataLength,
    tensors,
  };
}

function checkTensor(
  raw: unknown,
  index: number,
  ctx: { numLayers: number; rank: number; targets: LoraTarget[]; dataLength: number },
  fail: Fail,
): CompeftTensorEntry {
  if (!isObject(raw)) fail(`tensors[${index}] must be a JSON object`);
  const t = raw as Record<string, unknown>;
  if (t.name !== undefined && (typeof t.name !== 'string' || t.name.length === 0 || t.name.length > COMPEFT_LIMITS.maxNameLength)) {
    fail(`tensors[${index}].name must be a non-empty string of at most ${COMPEFT_LIMITS.maxNameLength} characters when present`);
  }
  const layer = intField(t, 'layer', 0, ctx.numLayers - 1, `tensors[${index}]: `, fail);
  if (!ctx.targets.includes(t.target as LoraTarget)) fail(`tensors[${index}]: \`target\` must be one of the header's targets. Given: ${JSON.stringify(t.target)}`);
  if (t.kind !== 'A' && t.kind !== 'B') fail(`tensors[${index}]: \`kind\` must be "A" or "B". Given: ${JSON.stringify(t.kind)}`);
  const kind = t.kind as 'A' | 'B';
  const name = (t.name as string | undefined) ?? peftLoraTensorName(layer, t.target as LoraTarget, kind);
  const where = `tensor ${name}: `;
  const shape = t.shape;
  if (!Array.isArray(shape) || shape.length !== 2) fail(`${where}\`shape\` must be [rows, cols]`);
  const shapeObj = { rows: (shape as unknown[])[0], cols: (shape as unknown[])[1] };
  const rows = intField(shapeObj, 'rows', 1, COMPEFT_LIMITS.maxFeatures, `${where}shape `, fail);
  const cols = intField(shapeObj, 'cols', 1, COMPEFT_LIMITS.maxFeatures, `${where}shape `, fail);
  const rankDim = kind === 'A' ? rows : cols;
  if (rankDim !== ctx.rank) fail(`${where}${kind === 'A' ? 'rows of A' : 'columns of B'} must equal the header rank ${ctx.rank}. Given: ${rankDim}`);
  const numElements = rows * cols;
  if (numElements > COMPEFT_LIMITS.maxTensorElements) {
    fail(`${where}shape [${rows}, ${cols}] has ${numElements} elements, more than the limit ${COMPEFT_LIMITS.maxTensorElements}`);
  }
  const scale = finiteField(t, 'scale', where, fail);
  if (!Number.isFinite(Math.fround(scale))) fail(`${where}\`scale\` must fit in float32. Given: ${scale}`);
  const nnz = intField(t, 'nnz', 0, numElements, where, fail);
  if (t.encoding !== 'rice' && t.encoding !== 'bitmap') fail(`${where}\`encoding\` must be "rice" or "bitmap". Given: ${JSON.stringify(t.encoding)}`);
  const encoding = t.encoding as 'rice' | 'bitmap';
  const riceK = intField(t, 'riceK', 0, encoding === 'rice' ? MAX_RICE_K : 0, where, fail);
  const offset = intField(t, 'offset', 0, ctx.dataLength, where, fail);
  const length = intField(t, 'length', 0, ctx.dataLength - offset, where, fail);
  const crc = intField(t, 'crc32', 0, 0xffffffff, where, fail);
  // Cheap size checks before any payload is touched: every kept entry costs at least k + 1 position bits and a sign bit.
  const minLength = encoding === 'bitmap' ? bitmapBytes(numElements) + signBytes(nnz) : Math.ceil((nnz * (riceK + 1)) / 8) + signBytes(nnz);
  if (length < minLength || (encoding === 'bitmap' && length !== minLength)) {
    fail(`${where}payload is ${length} bytes; ${encoding} with nnz ${nnz} over ${numElements} elements needs ${encoding === 'bitmap' ? 'exactly' : 'at least'} ${minLength}`);
  }
  return { name, layer, target: t.target as LoraTarget, kind, rows, cols, scale, nnz, encoding, riceK, offset, length, crc32: crc };
}
