/**
 * The int8 model as Tessera served it before its int8 linears became MatMulNBits (8 bits): the same converted int8
 * model with every MatMulNBits(bits = 8) node replaced by com.microsoft.DynamicQuantizeMatMul over per-output-channel
 * int8 weights (activations quantized to uint8 with one scale for the whole input tensor). It exists only so the
 * benches can measure "before" and "after" side by side in one run; the server never builds it.
 *
 * Weights: each linear's block-int8 weights are dequantized and requantized per output column (symmetric,
 * scale = max |W[n, :]| / 127), the layout DynamicQuantizeMatMul reads ([in, out] int8).
 */
import { copyFileSync, existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { MS_DOMAIN, type OnnxGraph } from '../../kernels/onnx-graph.ts';
import { readManifest, MANIFEST_FILE, type ModelManifest } from '../../src/model/converted-model.ts';
import { buildLlamaGraph } from '../../src/model/graph/llama-graph.ts';
import { serializeModel, writeExternalData } from '../../src/model/graph/onnx-serialize.ts';
import { dequantizeInt8 } from '../../src/model/quantization/int8-block.ts';
import { ConvertedWeights } from '../../src/parallel/converted-weights.ts';
import { stageGraphWeights } from '../../src/parallel/shard-graphs.ts';

/** Writes the per-tensor-activation version of a converted int8 model into `outDir` (base and gather LoRA graphs). */
export function writePerTensorInt8Model(int8Dir: string, outDir: string): ModelManifest {
  const manifest = readManifest(int8Dir);
  if (manifest.quant.kind !== 'int8') throw new Error(`${int8Dir}: not an int8 model (${manifest.quant.kind})`);
  const config = manifest.config;
  const weights = new ConvertedWeights(int8Dir, manifest);
  try {
    const graphWeights = stageGraphWeights(config, weights, { bytes: 0 });
    const base = buildLlamaGraph(config, graphWeights, { lora: false });
    const lora = buildLlamaGraph(config, graphWeights, { lora: true });
    const requantized = new Map<string, PerChannel>();
    for (const g of [base, lora]) toDynamicQuantizeMatMul(g, requantized);
    mkdirSync(outDir, { recursive: true });
    const locations = writeExternalData(join(outDir, manifest.weightsFile), [base, lora]);
    const external = { fileName: manifest.weightsFile, locations };
    writeFileSync(join(outDir, manifest.graphs.base), serializeModel(base, external));
    writeFileSync(join(outDir, manifest.graphs.lora), serializeModel(lora, external));
    for (const f of ['config.json', 'tokenizer.json', 'tokenizer_config.json']) if (existsSync(join(int8Dir, f))) copyFileSync(join(int8Dir, f), join(outDir, f));
    const out: ModelManifest = { ...manifest, graphs: { base: manifest.graphs.base, lora: manifest.graphs.lora }, quant: { ...manifest.quant, blockSize: null } };
    writeFileSync(join(outDir, MANIFEST_FILE), JSON.stringify(out, null, 2));
    return out;
  } finally {
    weights.close();
  }
}

export interface PerChannel {
  weight: Int8Array; // [K, N]
  scales: Float32Array; // [N]
}

/** Replaces MatMulNBits(bits = 8) nodes in place; `cache` keeps each linear's requantized weights for the next graph. */
function toDynamicQuantizeMatMul(g: OnnxGraph, cache: Map<string, PerChannel>): void {
  const initializers = new Map(g.initializers.map((i) => [i.name, i]));
  for (const node of g.nodes) {
    if (node.opType !== 'MatMulNBits' || (node.attributes.bits as { i: number }).i !== 8) continue;
    const [x, packedName, scalesName] = node.inputs;
    const K = (node.attributes.K as { i: number }).i;
    const N = (node.attributes.N as { i: number }).i;
    let q = cache.get(packedName);
    if (!q) {
      const scales = initializers.get(scalesName)!.bytes;
      q = perChannel(dequantizeInt8({
        packed: initializers.get(packedName)!.bytes,
        scales: new Float32Array(scales.slice().buffer),
        N,
        K,
        blockSize: (node.attributes.block_size as { i: number }).i,
      }), N, K);
      cache.set(packedName, q);
    }
    const base = packedName.replace(/\.qweight$/, '');
    node.opType = 'DynamicQuantizeMatMul';
    node.domain = MS_DOMAIN;
    node.inputs = [
      x,
      g.initializer(`${base}.dq_weight`, 'int8', [K, N], q.weight),
      g.initializer(`${base}.dq_scales`, 'float32', [N], q.scales),
      g.initializer(`${base}.dq_zero_points`, 'int8', [N], new Int8Array(N)),
    ];
    node.attributes = {};
    g.removeInitializer(packedName);
    g.removeInitializer(scalesName);
  }
}

/** Symmetric per-output-column int8 of a dense [N, K] matrix, as [K, N] codes and [N] scales. */
export function perChannel(dense: Float32Array, N: number, K: number): PerChannel {
  const weight = new Int8Array(K * N);
  const scales = new Float32Array(N);
  for (let n = 0; n < N; n++) {
    let maxAbs = 0;
    for (let k = 0; k < K; k++) maxAbs = Math.max(maxAbs, Math.abs(dense[n * K + k]));
    scales[n] = maxAbs > 0 ? Math.fround(maxAbs / 127) : 1;
    for (let k = 0; k < K; k++) weight[k * N + n] = Math.round(dense[n * K + k] / scales[n]);
  }
  return { weight, scales };
}
