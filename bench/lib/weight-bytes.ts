/**
 * Where a converted model's weight bytes go, read from its base ONNX graph (the multi-LoRA graph shares the same
 * initializers; its LoRA stacks are inputs, not weights):
 *   embedding   the fp32 table [vocab, hidden]: a decode step gathers one row of it, so it is not read per step
 *               (with tied embeddings the LM head is a separate, quantized copy, counted under linear)
 *   rotary      cos/sin tables [maxPositions, headDim/2]: one row gathered per position, not read per step
 *   linear      everything that belongs to a linear layer: fp32 weights, quantized codes, scales, zero points,
 *               fp32 outlier columns and their indices (LM head included)
 *   norm        RMSNorm weights; other: biases and small constants
 *   padding     the weights file's page-alignment gaps
 *   inGraph     small initializers stored inside the graph file rather than the weights file (counted in their
 *               category too): sum of categories + padding = weightsBytes + inGraphBytes
 *   bytesReadPerDecodeStep = linear + norm + other: each is read once per step at batch 1
 */
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import protobuf from 'protobufjs';
import { readManifest } from '../../src/model/converted-model.ts';
import type { ModelConfig } from '../../src/model/model-config.ts';

export interface WeightBytes {
  weightsBytes: number;
  embeddingBytes: number;
  rotaryBytes: number;
  linearBytes: number;
  normBytes: number;
  otherBytes: number;
  paddingBytes: number;
  inGraphBytes: number;
  /** Elements of every linear's dense weight [out, in], LM head included. */
  linearParams: number;
  /** 8 * linearBytes / linearParams */
  linearBitsPerWeight: number;
  bytesReadPerDecodeStep: number;
}

const schemaPath = fileURLToPath(new URL('../../src/model/graph/onnx-subset.proto', import.meta.url));

interface DecodedInitializer {
  name: string;
  rawData?: Uint8Array;
  externalData?: Array<{ key: string; value: string }>;
  dataLocation?: number;
}

export type WeightCategory = 'embedding' | 'rotary' | 'linear' | 'norm' | 'other';

export function categoryOf(initializerName: string): WeightCategory {
  if (initializerName === 'model.embed_tokens.weight') return 'embedding';
  if (initializerName.startsWith('rotary.')) return 'rotary';
  if (/norm\.weight$/.test(initializerName)) return 'norm';
  if (/\.(weight|qweight|scales|zero_points|outlier_columns|outlier_weight)$/.test(initializerName)) return 'linear';
  return 'other';
}

/** Elements of every linear's dense weight, LM head included, from the model shape. */
export function linearParamCount(config: ModelConfig): number {
  const q = config.numHeads * config.headDim;
  const kv = config.numKvHeads * config.headDim;
  const h = config.hiddenSize;
  const perLayer = h * (q + 2 * kv) + q * h + h * 2 * config.intermediateSize + config.intermediateSize * h;
  return config.numLayers * perLayer + config.vocabSize * h;
}

/** Byte breakdown of a converted model directory (manifest.json, base graph, weights file). */
export function readWeightBytes(modelDir: string): WeightBytes {
  const manifest = readManifest(modelDir);
  const modelType = protobuf.loadSync(schemaPath).lookupType('tessera.onnx.ModelProto');
  const model = modelType.toObject(modelType.decode(fs.readFileSync(path.join(modelDir, manifest.graphs.base))), { longs: Number }) as {
    graph: { initializer?: DecodedInitializer[] };
  };
  const sums: Record<WeightCategory, number> = { embedding: 0, rotary: 0, linear: 0, norm: 0, other: 0 };
  let externalBytes = 0;
  let inGraphBytes = 0;
  for (const init of model.graph.initializer ?? []) {
    const lengthEntry = init.externalData?.find((e) => e.key === 'length');
    const bytes = lengthEntry ? Number(lengthEntry.value) : (init.rawData?.byteLength ?? 0);
    if (lengthEntry) externalBytes += bytes;
    else inGraphBytes += bytes;
    sums[categoryOf(init.name)] += bytes;
  }
  const weightsBytes = fs.statSync(path.join(modelDir, manifest.weightsFile)).size;
  const linearParams = linearParamCount(manifest.config);
  return {
    weightsBytes,
    embeddingBytes: sums.embedding,
    rotaryBytes: sums.rotary,
    linearBytes: sums.linear,
    normBytes: sums.norm,
    otherBytes: sums.other,
    paddingBytes: weightsBytes - externalBytes,
    inGraphBytes,
    linearParams,
    linearBitsPerWeight: (8 * sums.linear) / linearParams,
    bytesReadPerDecodeStep: sums.linear + sums.norm + sums.other,
  };
}
