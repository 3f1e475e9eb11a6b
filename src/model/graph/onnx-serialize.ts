import protobuf from 'protobufjs';
import { closeSync, openSync, writeSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { ONNX_DATA_TYPE, type AttrValue, type InitializerDef, type OnnxGraph, type ValueDef } from '../../../kernels/onnx-graph.ts';

const schemaPath = fileURLToPath(new URL('./onnx-subset.proto', import.meta.url));
let modelType: protobuf.Type | null = null;

/** The ModelProto type of the ONNX subset schema, loaded once for every reader and writer of graph files. */
export function onnxModelType(): protobuf.Type {
  modelType ??= protobuf.loadSync(schemaPath).lookupType('tessera.onnx.ModelProto');
  return modelType;
}

/** ONNX IR version 8 pairs with opset 17, the opset the graphs are written against. */
const IR_VERSION = 8;
const ONNX_OPSET = 17;
const MS_OPSET = 1;
/** Weights at least this large go to the external data file, page-aligned so ORT can memory-map them. */
const EXTERNAL_MIN_BYTES = 1024;
const EXTERNAL_ALIGN_BYTES = 4096;

export interface ExternalLocation {
  offset: number;
  length: number;
}

/**
 * Writes every large initializer of the graphs once into one weights file (graphs may share initializers by name)
 * and returns where each landed.
 */
export function writeExternalData(path: string, graphs: OnnxGraph[], onProgress?: (doneBytes: number, totalBytes: number) => void): Map<string, ExternalLocation> {
  const unique = new Map<string, InitializerDef>();
  for (const graph of graphs) for (const init of graph.initializers) if (init.bytes.byteLength >= EXTERNAL_MIN_BYTES) unique.set(init.name, init);
  const total = [...unique.values()].reduce((a, i) => a + i.bytes.byteLength, 0);
  const locations = new Map<string, ExternalLocation>();
  const fd = openSync(path, 'w');
  try {
    let offset = 0;
    let done = 0;
    const padding = new Uint8Array(EXTERNAL_ALIGN_BYTES);
    for (const init of unique.values()) {
      const aligned = Math.ceil(offset / EXTERNAL_ALIGN_BYTES) * EXTERNAL_ALIGN_BYTES;
      if (aligned > offset) writeSync(fd, padding, 0, aligned - offset, offset);
      writeSync(fd, init.bytes, 0, init.bytes.byteLength, aligned);
      locations.set(init.name, { offset: aligned, length: init.bytes.byteLength });
      offset = aligned + init.bytes.byteLength;
      done += init.bytes.byteLength;
      onProgress?.(done, total);
    }
  } finally {
    closeSync(fd);
  }
  return locations;
}

/** Serialises a graph to ONNX ModelProto bytes; initializers found in `external` point at the weights file. */
export function serializeModel(graph: OnnxGraph, external: { fileName: string; locations: Map<string, ExternalLocation> } | null, metadata: Record<string, string> = {}): Uint8Array {
  const type = onnxModelType();
  const model = {
    irVersion: IR_VERSION,
    producerName: 'tessera',
    producerVersion: '0.1.0',
    opsetImport: [
      { domain: '', version: ONNX_OPSET },
      { domain: 'com.microsoft', version: MS_OPSET },
    ],
    metadataProps: Object.entries(metadata).map(([key, value]) => ({ key, value })),
    graph: {
      name: graph.name,
      node: graph.nodes.map((n) => ({
        name: n.name,
        opType: n.opType,
        domain: n.domain,
        input: n.inputs,
        output: n.outputs,
        attribute: Object.entries(n.attributes).map(([name, value]) => attribute(name, value)),
      })),
      initializer: graph.initializers.map((init) => {
        const loc = external?.locations.get(init.name);
        const base = { name: init.name, dims: init.dims, dataType: ONNX_DATA_TYPE[init.type] };
        if (!loc) return { ...base, rawData: init.bytes };
        return {
          ...base,
          dataLocation: 1,
          externalData: [
            { key: 'location', value: external!.fileName },
            { key: 'offset', value: String(loc.offset) },
            { key: 'length', value: String(loc.length) },
          ],
        };
      }),
      input: graph.inputs.map(valueInfo),
      output: graph.outputs.map(valueInfo),
    },
  };
  const err = type.verify(model);
  if (err) throw new Error(`ONNX model ${graph.name} does not fit the schema: ${err}`);
  return type.encode(type.fromObject(model)).finish();
}

function valueInfo(v: ValueDef) {
  return {
    name: v.name,
    type: {
      tensorType: {
        elemType: ONNX_DATA_TYPE[v.type],
        shape: { dim: v.dims.map((d) => (typeof d === 'number' ? { dimValue: d } : { dimParam: d })) },
      },
    },
  };
}

function attribute(name: string, value: AttrValue) {
  if ('i' in value) return { name, type: 2, i: value.i };
  if ('f' in value) return { name, type: 1, f: value.f };
  if ('s' in value) return { name, type: 3, s: new TextEncoder().encode(value.s) };
  if ('ints' in value) return { name, type: 7, ints: value.ints };
  return { name, type: 6, floats: value.floats };
}
