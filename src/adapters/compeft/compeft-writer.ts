import { crc32 } from 'node:zlib';
import { LORA_TARGETS, type LoraTarget } from '../../model/model-config.ts';
import { TesseraError } from '../../errors.ts';
import {
  COMPEFT_HEADER_CRC_BYTES,
  COMPEFT_MAGIC,
  COMPEFT_MAJOR_VERSION,
  COMPEFT_MINOR_VERSION,
  COMPEFT_PREAMBLE_BYTES,
  type CompeftHeader,
  type CompeftHeaderJson,
  type CompeftTensorJson,
} from './compeft-format.ts';
import { peftLoraTensorName } from '../../model/checkpoint/hf-tensor-names.ts';
import { shortestFloat32 } from './shortest-float32.ts';
import { encodePayload } from './compeft-payload.ts';
import type { TernaryTensor } from './compeft-types.ts';

/** The header fields the writer cannot derive from the tensors. */
export type CompeftMeta = Pick<CompeftHeader, 'baseModel' | 'numLayers' | 'rank' | 'loraAlpha' | 'scale' | 'density' | 'alpha'> & {
  relFrobeniusError?: number | null;
};

/** Encodes ternary tensors into a complete `.cpeft` file (header first, so it can be streamed). */
export function writeCompeft(meta: CompeftMeta, tensors: TernaryTensor[]): Uint8Array {
  const payloads = tensors.map((t) => encodePayload(t.positions, t.negative, t.rows * t.cols));
  let offset = 0;
  const entries: CompeftTensorJson[] = tensors.map((t, i) => {
    if (!Number.isFinite(Math.fround(t.scale))) {
      throw new TesseraError('INVALID_ARGUMENT', `tensor ${t.name}: scale must be finite in float32. Given: ${t.scale}`);
    }
    const p = payloads[i];
    const entry: CompeftTensorJson = {
      ...(t.name === peftLoraTensorName(t.layer, t.target, t.kind) ? {} : { name: t.name }),
      layer: t.layer,
      target: t.target,
      kind: t.kind,
      shape: [t.rows, t.cols],
      scale: shortestFloat32(t.scale),
      nnz: t.positions.length,
      encoding: p.encoding,
      riceK: p.riceK,
      offset,
      length: p.bytes.length,
      crc32: crc32(p.bytes),
    };
    offset += p.bytes.length;
    return entry;
  });
  const present = new Set<LoraTarget>(tensors.map((t) => t.target));
  const header: CompeftHeaderJson = {
    formatVersion: `${COMPEFT_MAJOR_VERSION}.${COMPEFT_MINOR_VERSION}`,
    baseModel: meta.baseModel,
    targets: LORA_TARGETS.filter((t) => present.has(t)),
    numLayers: meta.numLayers,
    rank: meta.rank,
    loraAlpha: meta.loraAlpha,
    scale: meta.scale,
    density: meta.density,
    alpha: meta.alpha,
    relFrobeniusError: meta.relFrobeniusError ?? null,
    dataLength: offset,
    tensors: entries,
  };
  const json = new TextEncoder().encode(JSON.stringify(header));
  const dataOffset = COMPEFT_PREAMBLE_BYTES + json.length + COMPEFT_HEADER_CRC_BYTES;
  const out = new Uint8Array(dataOffset + offset);
  const view = new DataView(out.buffer);
  out.set(COMPEFT_MAGIC, 0);
  view.setUint16(8, COMPEFT_MAJOR_VERSION, true);
  view.setUint16(10, COMPEFT_MINOR_VERSION, true);
  view.setUint32(12, json.length, true);
  out.set(json, COMPEFT_PREAMBLE_BYTES);
  view.setUint32(COMPEFT_PREAMBLE_BYTES + json.length, crc32(out.subarray(0, COMPEFT_PREAMBLE_BYTES + json.length)), true);
  for (let i = 0; i < payloads.length; i++) out.set(payloads[i].bytes, dataOffset + entries[i].offset);
  return out;
}
