/**
 * Where a converted model's weight bytes go, from its config and weights-file size:
 *   embeddingBytes        the fp32 embedding table [vocab, hidden]; a decode step gathers one row of it, so it is
 *                         not read per step (with tied embeddings the LM head is a separate, quantized copy)
 *   vectorBytes           fp32 norm weights and biases
 *   linearParams          weights of every linear, LM head included (Hugging Face [out, in] element count)
 *   linearBytes           the rest of the file: quantized codes, scales, zero points, fp32 outlier columns
 *   bytesReadPerDecodeStep = weightsBytes - embeddingBytes: each linear and vector is read once per step
 */
import type { ModelConfig } from '../../src/model/model-config.ts';

export interface WeightBytes {
  weightsBytes: number;
  embeddingBytes: number;
  vectorBytes: number;
  linearParams: number;
  linearBytes: number;
  /** 8 * linearBytes / linearParams */
  linearBitsPerWeight: number;
  bytesReadPerDecodeStep: number;
}

export function weightBytes(config: ModelConfig, weightsBytes: number): WeightBytes {
  const { hiddenSize: h, intermediateSize: inter, numLayers, numHeads, numKvHeads, headDim, vocabSize } = config;
  const q = numHeads * headDim;
  const kv = numKvHeads * headDim;
  const perLayerLinear = h * (q + 2 * kv) + q * h + h * 2 * inter + inter * h;
  const linearParams = numLayers * perLayerLinear + vocabSize * h;
  const perLayerVector = 2 * h + (config.qkNorm ? 2 * headDim : 0) + (config.attentionBias ? q + 2 * kv : 0);
  const vectorBytes = 4 * (numLayers * perLayerVector + h);
  const embeddingBytes = 4 * vocabSize * h;
  const linearBytes = weightsBytes - embeddingBytes - vectorBytes;
  return {
    weightsBytes,
    embeddingBytes,
    vectorBytes,
    linearParams,
    linearBytes,
    linearBitsPerWeight: (8 * linearBytes) / linearParams,
    bytesReadPerDecodeStep: weightsBytes - embeddingBytes,
  };
}
