import protobuf from 'protobufjs';
import { readFileSync } from 'node:fs';
import type { OnnxGraph } from '../../../kernels/onnx-graph.ts';
import { TesseraError } from '../../errors.ts';
import { onnxModelType, serializeModel } from './onnx-serialize.ts';

/**
 * Decoded ONNX models for protobuf-level rewrites of converted graphs (device-resident KV, k-step Loop): read a model
 * file, decode graphs built with OnnxGraph into the same message form, encode the result. Only the fields the rewrites
 * touch are typed; the rest pass through as decoded.
 */
export interface ProtoNode {
  opType: string;
  name: string;
  input: string[];
  output: string[];
  attribute?: unknown[];
}

export interface ProtoGraph {
  node: ProtoNode[];
  initializer: unknown[];
  input: Array<{ name: string }>;
  output: Array<{ name: string }>;
}

export interface ProtoModel {
  graph: ProtoGraph;
}

const type = onnxModelType;

/** Reads and decodes an ONNX model file; CHECKPOINT_INVALID naming the file when it is not one. */
export function readModelProto(path: string): ProtoModel {
  try {
    return type().decode(readFileSync(path)) as unknown as ProtoModel;
  } catch (err) {
    throw new TesseraError('CHECKPOINT_INVALID', `${path}: cannot read the ONNX graph: ${(err as Error).message}`, { cause: err });
  }
}

/** A graph built with OnnxGraph (no external weights), as a decoded model. */
export function toModelProto(graph: OnnxGraph): ProtoModel {
  return type().decode(serializeModel(graph, null)) as unknown as ProtoModel;
}

export function encodeModelProto(model: ProtoModel): Uint8Array {
  return type().encode(model as unknown as protobuf.Message).finish();
}
