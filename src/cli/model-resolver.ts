import { createHash } from 'node:crypto';
import { existsSync, readdirSync, realpathSync, statSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { TesseraError } from '../errors.ts';
import { convertCheckpoint } from '../model/convert/convert-checkpoint.ts';
import { isConvertedModelDir, type QuantKind } from '../model/converted-model.ts';
import { GRAPH_VERSION } from '../model/graph/llama-graph.ts';
import { ensureDefaultModel } from '../model/checkpoint/make-model.ts';
import { progressBar } from './progress.ts';

export interface ModelChoice {
  /** A converted directory, a Hugging Face checkpoint directory, or undefined for the embedded default model. */
  model?: string;
  quant: QuantKind;
  blockSize?: number;
  outlierFraction?: number;
  int4AccuracyLevel?: 0 | 4;
  cacheRoot?: string;
  log?: (line: string) => void;
}

export function cacheRoot(explicit?: string): string {
  return explicit ?? process.env.TESSERA_CACHE_DIR ?? join(homedir(), '.cache', 'tessera');
}

/**
 * Returns a converted model directory for the choice: a converted directory as is; a Hugging Face checkpoint converted
 * once into the cache (keyed by its files' identity and the quantization options); no model = the embedded default
 * (`small` preset generated once, then converted).
 */
export async function resolveModelDir(choice: ModelChoice): Promise<string> {
  const root = cacheRoot(choice.cacheRoot);
  let hfDir = choice.model;
  if (hfDir === undefined) {
    choice.log?.('no --model given: using the embedded default model (generated once into the cache)');
    hfDir = await ensureDefaultModel({ cacheRoot: root });
  }
  if (!existsSync(hfDir) || !statSync(hfDir).isDirectory()) throw new TesseraError('MODEL_NOT_FOUND', `model directory ${hfDir} does not exist`);
  if (isConvertedModelDir(hfDir)) return hfDir;
  const key = conversionKey(hfDir, choice);
  const outDir = join(root, 'converted', key);
  if (isConvertedModelDir(outDir)) return outDir;
  choice.log?.(`converting ${hfDir} (${choice.quant}) into ${outDir}`);
  const quantBar = progressBar('quantize');
  const writeBar = progressBar('write');
  try {
    await convertCheckpoint({
      hfDir,
      outDir,
      quant: choice.quant,
      blockSize: choice.blockSize,
      outlierFraction: choice.outlierFraction,
      int4AccuracyLevel: choice.int4AccuracyLevel,
      onProgress: (phase, done, total) => (phase === 'quantize' ? quantBar : writeBar).update(done, total),
    });
  } finally {
    quantBar.stop();
    writeBar.stop();
  }
  return outDir;
}

/** Identity of a checkpoint directory (path, file names, sizes, mtimes) and the conversion options, hashed. */
function conversionKey(hfDir: string, choice: ModelChoice): string {
  const real = realpathSync(hfDir);
  const files = readdirSync(real)
    .filter((f) => f.endsWith('.json') || f.endsWith('.safetensors'))
    .sort()
    .map((f) => {
      const s = statSync(join(real, f));
      return `${f}:${s.size}:${s.mtimeMs}`;
    });
  const hash = createHash('sha256')
    .update(JSON.stringify({ real, files, quant: choice.quant, blockSize: choice.blockSize ?? 32, outliers: choice.outlierFraction ?? 0, int4Accuracy: choice.int4AccuracyLevel ?? 4, graph: GRAPH_VERSION }))
    .digest('hex')
    .slice(0, 16);
  return `${real.split('/').filter(Boolean).slice(-1)[0] ?? 'model'}-${choice.quant}-${hash}`;
}
