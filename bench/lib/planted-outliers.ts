/**
 * Plants outlier input channels into a checkpoint WITHOUT changing the function it computes, the way outlier features
 * look in trained LLMs (a few input channels whose weight columns are much larger than the rest). Generated random
 * checkpoints have none, so SpQR-style outlier columns have nothing to rescue there; this makes a checkpoint where
 * they do. For each layer, with s a power of two (exact in fp32/bf16) and channels picked at random:
 *   RMSNorm -> linear:   norm.weight[c] /= s and W[:, c] *= s           for q/k/v (input_layernorm), gate/up (post_attention_layernorm)
 *   v -> o (attention is linear in v): v_proj row (kvHead h, d) /= s and o_proj column (qHead, d) *= s for every query
 *                        head of h's group (query heads h*g .. h*g+g-1, g = numHeads / numKvHeads)
 *   up -> down (silu(gate) * up is linear in up): up_proj row j /= s and down_proj column j *= s
 * The LM head is left alone (with tied embeddings its columns are also the embedding rows).
 */
import fs from 'node:fs';
import path from 'node:path';
import { parseHfConfig } from '../../src/model/checkpoint/hf-config.ts';
import { openCheckpointTensors } from '../../src/model/checkpoint/safetensors-reader.ts';
import { writeSafetensors, type TensorToWrite, type WritableDType } from '../../src/model/checkpoint/safetensors-writer.ts';
import { outOfRange } from '../../src/errors.ts';
import { SeededRandom } from '../../src/util/seeded-random.ts';

export interface PlantOutliersOptions {
  srcDir: string;
  outDir: string;
  /** Fraction of each linear's input channels made outliers (at least one channel). */
  fraction: number;
  /** Power of two the outlier columns are multiplied by. */
  scale: number;
  seed?: number;
}

/** Per layer, the planted channels of each kind. */
export interface PlantedChannels {
  attentionInput: number[];
  mlpInput: number[];
  valueChannels: number[];
  downInput: number[];
}

/** `count` distinct indices in [0, n), sorted, from a seeded stream. */
export function pickChannels(n: number, count: number, seed: number): number[] {
  const rng = new SeededRandom(seed, 'planted-channels');
  const picked = new Set<number>();
  while (picked.size < Math.min(count, n)) picked.add(rng.nextInt(n));
  return [...picked].sort((a, b) => a - b);
}

function scaleColumns(w: Float32Array, cols: number, columns: number[], factor: number): void {
  const rows = w.length / cols;
  for (let r = 0; r < rows; r++) for (const c of columns) w[r * cols + c] *= factor;
}

function scaleRows(w: Float32Array, cols: number, rows: number[], factor: number): void {
  for (const r of rows) for (let c = 0; c < cols; c++) w[r * cols + c] *= factor;
}

export async function plantOutlierChannels(options: PlantOutliersOptions): Promise<PlantedChannels[]> {
  const { srcDir, outDir, fraction, scale } = options;
  if (!(fraction > 0 && fraction < 0.5)) throw outOfRange('fraction', '> 0 and < 0.5', fraction);
  if (!(scale >= 2 && Number.isInteger(Math.log2(scale)))) throw outOfRange('scale', 'a power of two >= 2', scale);
  const configJson = JSON.parse(fs.readFileSync(path.join(srcDir, 'config.json'), 'utf8')) as unknown;
  const config = parseHfConfig(configJson, path.join(srcDir, 'config.json'));
  const { hiddenSize: h, intermediateSize: inter, numHeads, numKvHeads, headDim } = config;
  const group = numHeads / numKvHeads;
  const count = (n: number) => Math.max(1, Math.round(fraction * n));
  const seed = options.seed ?? 0;
  const planted: PlantedChannels[] = Array.from({ length: config.numLayers }, (_, l) => ({
    attentionInput: pickChannels(h, count(h), seed * 1000 + 4 * l),
    mlpInput: pickChannels(h, count(h), seed * 1000 + 4 * l + 1),
    valueChannels: pickChannels(numKvHeads * headDim, count(numKvHeads * headDim), seed * 1000 + 4 * l + 2),
    downInput: pickChannels(inter, count(inter), seed * 1000 + 4 * l + 3),
  }));

  // name -> in-place edit of that tensor's row-major data
  const edits = new Map<string, (w: Float32Array) => void>();
  planted.forEach((p, l) => {
    const pre = `model.layers.${l}`;
    const up = scale;
    const down = 1 / scale;
    edits.set(`${pre}.input_layernorm.weight`, (w) => scaleRows(w, 1, p.attentionInput, down));
    for (const m of ['q_proj', 'k_proj']) edits.set(`${pre}.self_attn.${m}.weight`, (w) => scaleColumns(w, h, p.attentionInput, up));
    edits.set(`${pre}.self_attn.v_proj.weight`, (w) => {
      scaleColumns(w, h, p.attentionInput, up);
      scaleRows(w, h, p.valueChannels, down);
    });
    edits.set(`${pre}.self_attn.v_proj.bias`, (w) => scaleRows(w, 1, p.valueChannels, down));
    const oColumns = p.valueChannels.flatMap((ch) => {
      const kvHead = Math.floor(ch / headDim);
      const d = ch % headDim;
      return Array.from({ length: group }, (_, i) => (kvHead * group + i) * headDim + d);
    });
    edits.set(`${pre}.self_attn.o_proj.weight`, (w) => scaleColumns(w, numHeads * headDim, oColumns, up));
    edits.set(`${pre}.post_attention_layernorm.weight`, (w) => scaleRows(w, 1, p.mlpInput, down));
    edits.set(`${pre}.mlp.gate_proj.weight`, (w) => scaleColumns(w, h, p.mlpInput, up));
    edits.set(`${pre}.mlp.up_proj.weight`, (w) => {
      scaleColumns(w, h, p.mlpInput, up);
      scaleRows(w, h, p.downInput, down);
    });
    edits.set(`${pre}.mlp.down_proj.weight`, (w) => scaleColumns(w, inter, p.downInput, up));
  });

  const source = openCheckpointTensors(srcDir);
  try {
    fs.mkdirSync(outDir, { recursive: true });
    const tensors: TensorToWrite[] = source.names().map((name) => {
      const info = source.info(name);
      if (info.dtype !== 'F32' && info.dtype !== 'F16' && info.dtype !== 'BF16') throw outOfRange(`dtype of ${name}`, 'F32, F16 or BF16', info.dtype);
      return {
        name,
        dtype: info.dtype as WritableDType,
        shape: info.shape,
        data: () => {
          const data = source.readFloat32(name).data;
          edits.get(name)?.(data);
          return data;
        },
      };
    });
    await writeSafetensors(path.join(outDir, 'model.safetensors'), tensors, { format: 'pt' });
  } finally {
    source.close();
  }
  for (const f of fs.readdirSync(srcDir)) {
    const from = path.join(srcDir, f);
    if (!f.endsWith('.safetensors') && f !== 'model.safetensors.index.json' && fs.statSync(from).isFile()) fs.copyFileSync(from, path.join(outDir, f));
  }
  return planted;
}
