import { createHash } from 'node:crypto';
import { copyFileSync, createReadStream, existsSync, mkdirSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { basename, join, resolve } from 'node:path';
import { TesseraError } from '../../errors.ts';
import { checkCheckpointTensors, loadCheckpointTokenizer, readHfConfig } from '../checkpoint/checkpoint.ts';
import { checkRegularFile } from '../checkpoint/regular-file.ts';
import { openCheckpointTensors } from '../checkpoint/safetensors-reader.ts';
import type { TensorSource } from '../checkpoint/tensor.ts';
import { MANIFEST_FILE, type ModelManifest, type QuantKind } from '../converted-model.ts';
import { buildLlamaGraph, GRAPH_VERSION, type GraphWeights } from '../graph/llama-graph.ts';
import { serializeModel, writeExternalData } from '../graph/onnx-serialize.ts';
import type { ModelConfig } from '../model-config.ts';
import type { LinearWeight } from '../../../kernels/linear.ts';
import { toLinearWeight } from './linear-storage.ts';

export interface ConvertOptions {
  hfDir: string;
  outDir: string;
  quant: QuantKind;
  /** int4 and int8 block size (MatMulNBits block_size; default 32). */
  blockSize?: number;
  /** Fraction of input channels per linear kept in full precision (SpQR-style outliers); 0 = none. */
  outlierFraction?: number;
  /** int4 only: MatMulNBits accuracy_level, 4 (default: int8 activations, fastest on CPU) or 0 (fp32 activations). */
  int4AccuracyLevel?: 0 | 4;
  onProgress?: (phase: 'quantize' | 'write', done: number, total: number) => void;
}

export const TOKENIZER_FILES = ['tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json', 'generation_config.json'];
const GRAPH_FILES = { base: 'model.onnx', lora: 'model-lora.onnx', loraPacked: 'model-lora-packed.onnx' };
const WEIGHTS_FILE = 'weights.bin';

/**
 * Converts a Hugging Face checkpoint directory into a Tessera model directory: two ONNX graphs (base, multi-LoRA)
 * sharing one external weights file, the tokenizer files, and a manifest with the source checksums.
 * Writes into a temporary sibling directory and renames it into place, so a half-written model is never visible.
 */
export async function convertCheckpoint(options: ConvertOptions): Promise<ModelManifest> {
  const started = performance.now();
  const hfDir = resolve(options.hfDir);
  const configFile = join(hfDir, 'config.json');
  if (!existsSync(configFile)) throw new TesseraError('CHECKPOINT_INVALID', `${configFile}: not found (is ${hfDir} a Hugging Face checkpoint?)`);
  // Everything is checked before anything is allocated from the config: bounds, tokenizer ids, tensor shapes.
  const { json: configJson, config } = readHfConfig(hfDir);
  loadCheckpointTokenizer(hfDir, config);
  for (const f of TOKENIZER_FILES) if (existsSync(join(hfDir, f))) checkRegularFile(join(hfDir, f));
  const blockSize = options.quant === 'fp32' ? null : (options.blockSize ?? 32);
  const outlierFraction = options.outlierFraction ?? 0;
  if (!(outlierFraction >= 0 && outlierFraction < 0.5)) throw new TesseraError('INVALID_ARGUMENT', `\`outliers\` must be >= 0 and < 0.5. Given: ${outlierFraction}`);
  if (outlierFraction > 0 && options.quant === 'fp32') throw new TesseraError('INVALID_ARGUMENT', '`outliers` needs --quant int8 or int4 (fp32 keeps every channel already)');

  const tensors = openCheckpointTensors(hfDir);
  try {
    checkCheckpointTensors(config, tensors);
  } catch (err) {
    tensors.close();
    throw err;
  }
  const outDir = resolve(options.outDir);
  const tmpDir = `${outDir}.tmp-${process.pid}-${Date.now()}`;
  mkdirSync(tmpDir, { recursive: true });
  try {
    const weights = graphWeights(config, tensors, { quant: options.quant, blockSize: blockSize ?? 32, outlierFraction, int4AccuracyLevel: options.int4AccuracyLevel ?? 4 }, options.onProgress);
    const base = buildLlamaGraph(config, weights, { lora: false });
    const lora = buildLlamaGraph(config, weights, { lora: true });
    // Quantized models also get the packed LoRA graph (decode batches); fp32 models keep only the gather one.
    const loraPacked = options.quant === 'fp32' ? null : buildLlamaGraph(config, weights, { lora: true, loraKernel: 'packed' });
    const graphs = loraPacked ? [base, lora, loraPacked] : [base, lora];
    const locations = writeExternalData(join(tmpDir, WEIGHTS_FILE), graphs, (done, total) => options.onProgress?.('write', done, total));
    const external = { fileName: WEIGHTS_FILE, locations };
    writeFileSync(join(tmpDir, GRAPH_FILES.base), serializeModel(base, external));
    writeFileSync(join(tmpDir, GRAPH_FILES.lora), serializeModel(lora, external));
    if (loraPacked) writeFileSync(join(tmpDir, GRAPH_FILES.loraPacked), serializeModel(loraPacked, external));
    tensors.close();

    const sourceFiles = ['config.json', ...tensors.files.map((f) => basename(f)), ...TOKENIZER_FILES.filter((f) => existsSync(join(hfDir, f)))];
    if (existsSync(join(hfDir, 'model.safetensors.index.json'))) sourceFiles.push('model.safetensors.index.json');
    const files = [];
    for (const name of sourceFiles) files.push({ name, bytes: statSync(join(hfDir, name)).size, sha256: await sha256File(join(hfDir, name)) });
    copyFileSync(configFile, join(tmpDir, 'config.json'));
    for (const f of TOKENIZER_FILES) if (existsSync(join(hfDir, f))) copyFileSync(join(hfDir, f), join(tmpDir, f));

    const configSha = files.find((f) => f.name === 'config.json')!.sha256;
    const manifest: ModelManifest = {
      format: 'tessera-onnx',
      formatVersion: 1,
      graphVersion: GRAPH_VERSION,
      modelId: modelIdOf(hfDir, configJson, configSha),
      config,
      quant: { kind: options.quant, blockSize, outlierFraction, ...(options.quant === 'int4' ? { int4AccuracyLevel: options.int4AccuracyLevel ?? 4 } : {}) },
      graphs: loraPacked ? GRAPH_FILES : { base: GRAPH_FILES.base, lora: GRAPH_FILES.lora },
      weightsFile: WEIGHTS_FILE,
      weightsBytes: statSync(join(tmpDir, WEIGHTS_FILE)).size,
      hasTokenizer: existsSync(join(hfDir, 'tokenizer.json')),
      source: { dir: hfDir, files },
      convertedAt: new Date().toISOString(),
      conversionMs: Math.round(performance.now() - started),
    };
    writeFileSync(join(tmpDir, MANIFEST_FILE), JSON.stringify(manifest, null, 2));
    rmSync(outDir, { recursive: true, force: true });
    renameSync(tmpDir, outDir);
    return manifest;
  } catch (err) {
    tensors.close();
    rmSync(tmpDir, { recursive: true, force: true });
    throw err;
  }
}

/** `_name_or_path` when the checkpoint declares one, else the directory name; plus a short config hash. */
function modelIdOf(hfDir: string, configJson: unknown, configSha: string): string {
  const declared = (configJson as Record<string, unknown>)['_name_or_path'];
  const name = typeof declared === 'string' && declared !== '' ? declared : basename(hfDir);
  return `${name}@${configSha.slice(0, 12)}`;
}

export async function sha256File(path: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

/**
 * The converter's view of the checkpoint for the graph builder: fuses q/k/v and gate/up, picks the LM head (tied or
 * not), stores each linear in the requested precision, and computes each weight once.
 */
function graphWeights(
  config: ModelConfig,
  tensors: TensorSource,
  storage: { quant: QuantKind; blockSize: number; outlierFraction: number; int4AccuracyLevel: 0 | 4 },
  onProgress?: ConvertOptions['onProgress'],
): GraphWeights {
  const memo = new Map<string, LinearWeight>();
  const totalLinears = config.numLayers * 4 + 1;
  const read = (name: string) => {
    const t = tensors.readFloat32(name);
    return t.data;
  };
  const fuseRows = (names: string[]): Float32Array => {
    const parts = names.map(read);
    const out = new Float32Array(parts.reduce((a, p) => a + p.length, 0));
    let offset = 0;
    for (const p of parts) {
      out.set(p, offset);
      offset += p.length;
    }
    return out;
  };
  const hfLinear = (name: string): { w: Float32Array; bias?: Float32Array } => {
    const fused = name.match(/^(model\.layers\.\d+)\.(self_attn\.qkv_proj|mlp\.gate_up_proj)$/);
    if (fused) {
      const [, layer, which] = fused;
      const parts = which === 'self_attn.qkv_proj' ? ['self_attn.q_proj', 'self_attn.k_proj', 'self_attn.v_proj'] : ['mlp.gate_proj', 'mlp.up_proj'];
      const w = fuseRows(parts.map((p) => `${layer}.${p}.weight`));
      const bias = which === 'self_attn.qkv_proj' && config.attentionBias ? fuseRows(parts.map((p) => `${layer}.${p}.bias`)) : undefined;
      return { w, bias };
    }
    if (name === 'lm_head') return { w: read(config.tieWordEmbeddings ? 'model.embed_tokens.weight' : 'lm_head.weight') };
    return { w: read(`${name}.weight`) };
  };
  return {
    linear(name) {
      let w = memo.get(name);
      if (!w) {
        const { w: dense, bias } = hfLinear(name);
        const outFeatures = linearOutFeatures(config, name);
        const inFeatures = dense.length / outFeatures;
        w = toLinearWeight(dense, outFeatures, inFeatures, storage);
        if (bias) w.bias = bias;
        memo.set(name, w);
        onProgress?.('quantize', memo.size, totalLinears);
      }
      return w;
    },
    vector: read,
    embedding: () => read('model.embed_tokens.weight'),
  };
}

function linearOutFeatures(config: ModelConfig, name: string): number {
  const q = config.numHeads * config.headDim;
  const kv = config.numKvHeads * config.headDim;
  if (name.endsWith('qkv_proj')) return q + 2 * kv;
  if (name.endsWith('o_proj')) return config.hiddenSize;
  if (name.endsWith('gate_up_proj')) return 2 * config.intermediateSize;
  if (name.endsWith('down_proj')) return config.hiddenSize;
  if (name === 'lm_head') return config.vocabSize;
  throw new Error(`unknown linear ${name}`);
}
