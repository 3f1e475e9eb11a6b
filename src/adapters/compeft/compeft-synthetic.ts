import { LORA_TARGETS, loraTargetShape, type LoraTarget, type ModelConfig } from '../../model/model-config.ts';
import { peftLoraTensorName } from '../../model/checkpoint/hf-tensor-names.ts';
import { SeededRandom } from '../../util/seeded-random.ts';
import type { LoraTensor } from './compeft-types.ts';


/**
 * Seeded synthetic LoRA factors shaped like trained ones, for tests and measurements (no real adapters offline):
 * - A [r, in]: dense N(0, 1/in) (LoRA's A starts from a Kaiming-style init and moves little during training).
 * - B [out, r]: zero at init and learned: here U diag(s) V^T with a few dominant directions (effective rank
 *   `bEffectiveRank`, s_t = 2^-t), Student-t(3) entries in U (heavy tails, a few large output channels), a log-normal
 *   scale per output channel, plus a small dense Student-t residual.
 */
export interface SyntheticLoraOptions {
  config: ModelConfig;
  rank: number;
  targets?: readonly LoraTarget[];
  /** Layers to generate (default config.numLayers). */
  numLayers?: number;
  seed?: number;
  bEffectiveRank?: number;
  /** Typical |B| entry (default 0.01). */
  bMagnitude?: number;
  /** Std of a log-normal factor on each module's B (trained adapters' update norms differ across layers; default 0). */
  moduleMagnitudeSpread?: number;
}

/** Student-t with `dof` degrees of freedom (integer), scaled to unit variance when dof > 2. */
function studentT(rng: SeededRandom, dof: number): number {
  let chi2 = 0;
  for (let i = 0; i < dof; i++) {
    const g = rng.nextNormal();
    chi2 += g * g;
  }
  const t = rng.nextNormal() / Math.sqrt(chi2 / dof);
  return dof > 2 ? t / Math.sqrt(dof / (dof - 2)) : t;
}

export function syntheticLoraTensors(opts: SyntheticLoraOptions): LoraTensor[] {
  const rng = new SeededRandom(opts.seed ?? 1, 'synthetic-lora');
  const r = opts.rank;
  const e = Math.min(r, opts.bEffectiveRank ?? 4);
  const bMag = opts.bMagnitude ?? 0.01;
  const numLayers = opts.numLayers ?? opts.config.numLayers;
  const out: LoraTensor[] = [];
  for (let layer = 0; layer < numLayers; layer++) {
    for (const target of opts.targets ?? LORA_TARGETS) {
      const [inF, outF] = loraTargetShape(opts.config, target);
      const a = new Float32Array(r * inF);
      const aStd = 1 / Math.sqrt(inF);
      for (let i = 0; i < a.length; i++) a[i] = aStd * rng.nextNormal();
      out.push({ name: peftLoraTensorName(layer, target, 'A'), layer, target, kind: 'A', rows: r, cols: inF, data: a });
      const moduleMag = bMag * Math.exp((opts.moduleMagnitudeSpread ?? 0) * rng.nextNormal());
      out.push({ name: peftLoraTensorName(layer, target, 'B'), layer, target, kind: 'B', rows: outF, cols: r, data: syntheticB(rng, outF, r, e, moduleMag) });
    }
  }
  return out;
}

function syntheticB(rng: SeededRandom, outF: number, r: number, e: number, bMag: number): Float32Array {
  const u = new Float64Array(outF * e);
  for (let i = 0; i < u.length; i++) u[i] = studentT(rng, 3);
  const v = new Float64Array(r * e);
  for (let i = 0; i < v.length; i++) v[i] = rng.nextNormal() / Math.sqrt(r);
  const b = new Float32Array(outF * r);
  for (let i = 0; i < outF; i++) {
    const channel = Math.exp(0.5 * rng.nextNormal());
    for (let j = 0; j < r; j++) {
      let s = 0;
      for (let t = 0; t < e; t++) s += u[i * e + t] * 2 ** -t * v[j * e + t];
      b[i * r + j] = bMag * channel * (s + 0.1 * studentT(rng, 3));
    }
  }
  return b;
}

/** The small model the assignment sizes against: 30 layers, hidden 576, 9 heads, 3 kv heads, head_dim 64, intermediate 1536. */
export const SMALL_TEST_CONFIG: ModelConfig = {
  family: 'llama',
  modelType: 'llama',
  vocabSize: 49152,
  hiddenSize: 576,
  intermediateSize: 1536,
  numLayers: 30,
  numHeads: 9,
  numKvHeads: 3,
  headDim: 64,
  rmsNormEps: 1e-5,
  ropeTheta: 10000,
  maxPositionEmbeddings: 2048,
  tieWordEmbeddings: true,
  attentionBias: false,
  qkNorm: false,
  bosTokenId: 1,
  eosTokenIds: [2],
};
