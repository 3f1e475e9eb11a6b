import { readFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { TesseraError } from '../errors.ts';
import { GRAPH_VERSION } from './graph/llama-graph.ts';
import type { ModelConfig } from './model-config.ts';

export type QuantKind = 'fp32' | 'int8' | 'int4';

/** manifest.json of a converted model directory (written by `tessera convert`). */
export interface ModelManifest {
  format: 'tessera-onnx';
  formatVersion: 1;
  /** GRAPH_VERSION of the builder that wrote the graphs: the runners feed exactly the inputs that version declares. */
  graphVersion: number;
  /** Identifies the base model (adapters declaring another base model are rejected). */
  modelId: string;
  config: ModelConfig;
  /** int4AccuracyLevel: MatMulNBits accuracy_level of int4 linears (absent in older manifests = 4). */
  quant: { kind: QuantKind; blockSize: number | null; outlierFraction: number; int4AccuracyLevel?: 0 | 4 };
  /** loraPacked: the packed int8 multi-LoRA graph (quantized models converted by graph version >= 5). */
  graphs: { base: string; lora: string; loraPacked?: string };
  weightsFile: string;
  weightsBytes: number;
  hasTokenizer: boolean;
  source: { dir: string; files: Array<{ name: string; bytes: number; sha256: string }> };
  convertedAt: string;
  conversionMs: number;
}

export const MANIFEST_FILE = 'manifest.json';

export function isConvertedModelDir(dir: string): boolean {
  return existsSync(join(dir, MANIFEST_FILE));
}

export function readManifest(dir: string): ModelManifest {
  const file = join(dir, MANIFEST_FILE);
  let parsed: unknown;
  try {
    parsed = JSON.parse(readFileSync(file, 'utf8'));
  } catch (err) {
    throw new TesseraError('MODEL_NOT_FOUND', `${file}: cannot read converted-model manifest: ${(err as Error).message}`);
  }
  const m = parsed as Partial<ModelManifest>;
  if (m.format !== 'tessera-onnx' || m.formatVersion !== 1 || !m.config || !m.graphs || !m.weightsFile) {
    throw new TesseraError('CHECKPOINT_INVALID', `${file}: not a tessera-onnx v1 manifest`);
  }
  if (m.graphVersion !== GRAPH_VERSION) {
    throw new TesseraError(
      'CHECKPOINT_INVALID',
      `${dir}: converted by graph version ${m.graphVersion ?? '5 or older'}; this server runs graph version ${GRAPH_VERSION}: convert the checkpoint again (\`tessera convert\`; models converted into the cache by \`serve\` are redone automatically)`,
    );
  }
  return m as ModelManifest;
}
