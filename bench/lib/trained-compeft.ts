/**
 * ComPEFT on trained adapters: how much of each adapter's held-out loss improvement (base -> base + adapter, on its own
 * language's held-out windows) a compressed version keeps, served through the serving executor and adapter manager.
 *
 *   gain kept = (loss(base) - loss(compressed)) / (loss(base) - loss(adapter))
 *
 * Three ways to compress, at each density:
 *   per-module   what `tessera compress` writes: top-k of A and of B, per-module product-optimal scales (alpha auto)
 *   global       the paper's rule: one scalar alpha * sigma over the whole adapter, alpha fitted by least squares
 *                over all modules (the best any single alpha could do on reconstruction)
 *   update       the trained-minus-initial factors (A - A0, B - 0) compressed and served as A0 + decoded update (A0
 *                is PEFT's seeded initialisation: a receiver that knows the seed regenerates it); A - A0 with its
 *                least-squares scale, B with the scale that minimises ||BA - B^ A_served||_F; its size is the .cpeft
 *                of the update
 *   per-module xM  per-module with every module's product scale multiplied by M: sparsification drops energy, and
 *                the reconstruction-optimal scale keeps the update smaller than the trained one
 * All versions of one adapter are resident in slots at once and scored in the same batches.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { compressLoraTensors } from '../../src/adapters/compeft/compeft-codec.ts';
import { compressAdapterDir, loraModulesOf } from '../../src/adapters/compeft/compress-command.ts';
import { fp16SafetensorsBytes } from '../../src/adapters/compeft/compress-command.ts';
import { meanKeptMagnitude, selectTopK } from '../../src/adapters/compeft/compeft-topk.ts';
import type { TernaryTensor } from '../../src/adapters/compeft/compeft-types.ts';
import { writeCompeft } from '../../src/adapters/compeft/compeft-writer.ts';
import { readPeftAdapter, type PeftAdapter } from '../../src/adapters/peft/peft-adapter.ts';
import { openScoringSession } from '../../src/cli/scoring-session.ts';
import { meanNll, type ScoredWindow } from '../../src/engine/scoring/teacher-forced-loss.ts';
import { writeSafetensors } from '../../src/model/checkpoint/safetensors-writer.ts';
import { convertCheckpoint } from '../../src/model/convert/convert-checkpoint.ts';
import { readManifest } from '../../src/model/converted-model.ts';
import type { ModelConfig } from '../../src/model/model-config.ts';
import type { Cell, ResultTable, SummaryRow } from './bench-case.ts';
import type { QuantVariant } from './quant-variants.ts';
import type { TrainedFixture } from './trained-fixture.ts';

export type CompressionMethod = 'per-module' | 'global' | 'update' | 'per-module x1.5' | 'per-module x2';
export const COMPRESSION_METHODS: CompressionMethod[] = ['per-module', 'global', 'update', 'per-module x1.5', 'per-module x2'];
const LABELS: Record<CompressionMethod, string> = {
  'per-module': 'kept: per-module scales',
  global: 'kept: global alpha (paper)',
  update: 'kept: update (A - A0)',
  'per-module x1.5': 'kept: per-module x1.5',
  'per-module x2': 'kept: per-module x2',
};
const SCALE_MULTIPLIERS: Partial<Record<CompressionMethod, number>> = { 'per-module x1.5': 1.5, 'per-module x2': 2 };

export interface CompressedVersion {
  method: CompressionMethod;
  density: number;
  loss: number;
  gainKept: number;
  bytes: number;
  ratioVsFp16: number;
}

export interface TrainedAdapterCompeft {
  adapter: string;
  domain: string;
  rank: number;
  baseLoss: number;
  adapterLoss: number;
  fp16Bytes: number;
  versions: CompressedVersion[];
}

const WINDOWS_PER_STEP = 64;

/** Ternary positions and signs as a dense [rows, cols] matrix of -1, 0, +1. */
function signMatrix(t: { positions: Uint32Array; negative: Uint8Array }, size: number): Float32Array {
  const m = new Float32Array(size);
  t.positions.forEach((p, k) => (m[p] = t.negative[k] ? -1 : 1));
  return m;
}

/** Gram-style product of row-major [r, n] x [r, n]^T -> [r, r]. */
function rowGram(x: Float32Array, y: Float32Array, r: number): Float64Array {
  const n = x.length / r;
  const g = new Float64Array(r * r);
  for (let i = 0; i < r; i++) for (let j = 0; j < r; j++) {
    let sum = 0;
    for (let k = 0; k < n; k++) sum += x[i * n + k] * y[j * n + k];
    g[i * r + j] = sum;
  }
  return g;
}

/** Column-Gram of [n, r] x [n, r] -> [r, r] (x^T y). */
function colGram(x: Float32Array, y: Float32Array, r: number): Float64Array {
  const n = x.length / r;
  const g = new Float64Array(r * r);
  for (let k = 0; k < n; k++) for (let i = 0; i < r; i++) for (let j = 0; j < r; j++) g[i * r + j] += x[k * r + i] * y[k * r + j];
  return g;
}

/** <X, Y^T> for r x r matrices = tr(X Y). */
function traceOfProduct(x: Float64Array, y: Float64Array, r: number): number {
  let t = 0;
  for (let i = 0; i < r; i++) for (let j = 0; j < r; j++) t += x[i * r + j] * y[j * r + i];
  return t;
}

/**
 * The update of each module, compressed: A - A0 (top-k, least-squares scale) and B (top-k; B0 = 0) with the scale c
 * minimising ||B A - c S_B A_served||_F, A_served = A0 + decoded update of A:
 *   c = tr(B^T S_B . A_served A^T) / tr(S_B^T S_B . A_served A_served^T)      (r x r Grams, never the [out, in] product)
 */
function compressUpdate(trained: PeftAdapter, initial: PeftAdapter, density: number): TernaryTensor[] {
  const init = loraModulesOf(initial);
  const out: TernaryTensor[] = [];
  loraModulesOf(trained).forEach(([a, b], m) => {
    const r = a.rows;
    const deltaA = new Float32Array(a.data.length);
    for (let k = 0; k < deltaA.length; k++) deltaA[k] = a.data[k] - init[m][0].data[k];
    const patternA = selectTopK(deltaA, density);
    const scaleA = meanKeptMagnitude(deltaA, patternA);
    const aServed = Float32Array.from(init[m][0].data);
    patternA.positions.forEach((p, k) => (aServed[p] += patternA.negative[k] ? -scaleA : scaleA));
    const patternB = selectTopK(b.data, density); // B0 = 0: the update of B is B
    const signsB = signMatrix(patternB, b.data.length);
    const cross = traceOfProduct(colGram(b.data, signsB, r), rowGram(aServed, a.data, r), r);
    const norm = traceOfProduct(colGram(signsB, signsB, r), rowGram(aServed, aServed, r), r);
    const scaleB = norm > 0 ? Math.abs(cross / norm) : 0;
    const flip = cross < 0; // a negative optimum is the same pattern with every sign flipped
    const negativeB = flip ? patternB.negative.map((v) => 1 - v) : patternB.negative;
    out.push(
      { name: a.name, layer: a.layer, target: a.target, kind: 'A', rows: a.rows, cols: a.cols, scale: scaleA, ...patternA },
      { name: b.name, layer: b.layer, target: b.target, kind: 'B', rows: b.rows, cols: b.cols, scale: scaleB, positions: patternB.positions, negative: Uint8Array.from(negativeB) },
    );
  });
  return out;
}

/** Per-module (alpha auto) ternary factors with each module's product scale multiplied by `multiplier`. */
function compressScaled(trained: PeftAdapter, density: number, multiplier: number): TernaryTensor[] {
  const root = Math.sqrt(multiplier);
  return loraModulesOf(trained).flatMap((pair) => compressLoraTensors(pair, { density, alpha: 'auto' }).tensors.map((t) => ({ ...t, scale: t.scale * root })));
}

/** Writes a PEFT directory whose factors are initial + decoded update (what a receiver of the update would serve). */
async function writeUpdatedAdapter(dir: string, sourceDir: string, initial: PeftAdapter, update: TernaryTensor[]): Promise<void> {
  fs.mkdirSync(dir, { recursive: true });
  fs.copyFileSync(path.join(sourceDir, 'adapter_config.json'), path.join(dir, 'adapter_config.json'));
  const init = loraModulesOf(initial).flat();
  const tensors = update.map((u, i) => {
    const data = Float32Array.from(init[i].data);
    u.positions.forEach((p, k) => (data[p] += u.negative[k] ? -u.scale : u.scale));
    return { name: u.name, dtype: 'F32' as const, shape: [u.rows, u.cols], data };
  });
  await writeSafetensors(path.join(dir, 'adapter_model.safetensors'), tensors, { format: 'pt' });
}

export async function measureTrainedCompeft(
  fixture: TrainedFixture,
  opts: { variant: QuantVariant; densities: number[]; log: (m: string) => void },
): Promise<TrainedAdapterCompeft[]> {
  const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'tessera-bench-trained-compeft-'));
  const modelDir = path.join(scratch, 'model');
  opts.log(`trained adapters: converting the base to ${opts.variant.id}`);
  await convertCheckpoint({ hfDir: fixture.baseDir, outDir: modelDir, quant: opts.variant.quant, ...(opts.variant.blockSize !== null ? { blockSize: opts.variant.blockSize } : {}), outlierFraction: opts.variant.outlierFraction });
  const config: ModelConfig = readManifest(modelDir).config;
  const perAdapter = 1 + opts.densities.length * COMPRESSION_METHODS.length;
  const maxRank = Math.max(...fixture.manifest.adapters.map((a) => a.rank));
  const session = await openScoringSession({ modelDir, numAdapterSlots: perAdapter + 1, maxAdapterRank: maxRank, adapterRoots: [scratch, fixture.dir] });
  try {
    const out: TrainedAdapterCompeft[] = [];
    for (const a of fixture.manifest.adapters) {
      const sourceDir = fixture.adapterDir(a.name);
      const trained = readPeftAdapter(sourceDir, config);
      const initial = readPeftAdapter(fixture.initialAdapterDir(a.name), config);
      const fp16Bytes = fp16SafetensorsBytes(loraModulesOf(trained).flat());
      opts.log(`trained adapters: ${a.name}: compressing at ${opts.densities.join(', ')} (${COMPRESSION_METHODS.join(', ')})`);
      const versions: Array<{ method: CompressionMethod; density: number; source: string; bytes: number }> = [];
      for (const density of opts.densities) {
        for (const method of COMPRESSION_METHODS) {
          const file = path.join(scratch, `${a.name}-${method}-d${density}.cpeft`);
          const meta = { baseModel: trained.baseModel, numLayers: config.numLayers, rank: trained.rank, loraAlpha: trained.loraAlpha, scale: trained.scale, density, alpha: 'auto' as const };
          const multiplier = SCALE_MULTIPLIERS[method];
          if (method === 'update') {
            const update = compressUpdate(trained, initial, density);
            const bytes = writeCompeft(meta, update);
            fs.writeFileSync(file, bytes);
            const dir = path.join(scratch, `${a.name}-update-d${density}`);
            await writeUpdatedAdapter(dir, sourceDir, initial, update);
            versions.push({ method, density, source: dir, bytes: bytes.length });
          } else if (multiplier !== undefined) {
            const bytes = writeCompeft(meta, compressScaled(trained, density, multiplier));
            fs.writeFileSync(file, bytes);
            versions.push({ method, density, source: file, bytes: bytes.length });
          } else {
            const summary = await compressAdapterDir({ adapterDir: sourceDir, config, density, alpha: 'auto', outFile: file, ...(method === 'global' ? { scaleMode: { kind: 'global', alpha: 'auto' } as const } : {}) });
            versions.push({ method, density, source: file, bytes: summary.compressedBytes });
          }
        }
      }
      const tenant = a.domain;
      const adapterSlot = await session.loadAdapter(a.name, sourceDir, tenant);
      const slots: number[] = [];
      for (const [k, v] of versions.entries()) slots.push(await session.loadAdapter(`${a.name}-v${k}`, v.source, tenant));
      const windows = fixture.heldout(a.domain).windows;
      const runs = [0, adapterSlot, ...slots];
      opts.log(`trained adapters: ${a.name}: ${runs.length} versions x ${windows.length} windows on ${a.domain}`);
      const scored: ScoredWindow[] = runs.flatMap((slot) => windows.map((tokenIds) => ({ tokenIds, adapterSlot: slot })));
      const nll = await session.score(scored, { maxWindowsPerStep: WINDOWS_PER_STEP });
      const lossOf = (r: number) => meanNll(nll.slice(r * windows.length, (r + 1) * windows.length));
      const baseLoss = lossOf(0);
      const adapterLoss = lossOf(1);
      out.push({
        adapter: a.name,
        domain: a.domain,
        rank: a.rank,
        baseLoss,
        adapterLoss,
        fp16Bytes,
        versions: versions.map((v, k) => {
          const loss = lossOf(2 + k);
          return { method: v.method, density: v.density, loss, gainKept: (baseLoss - loss) / (baseLoss - adapterLoss), bytes: v.bytes, ratioVsFp16: fp16Bytes / v.bytes };
        }),
      });
      await session.unloadAdapter(a.name, tenant);
      for (const k of versions.keys()) await session.unloadAdapter(`${a.name}-v${k}`, tenant);
    }
    return out;
  } finally {
    await session.shutdown();
    fs.rmSync(scratch, { recursive: true, force: true });
  }
}

const sig = (x: number, digits = 3): number => Number(x.toPrecision(digits));

function meanOf(xs: number[]): number {
  return xs.reduce((a, b) => a + b, 0) / xs.length;
}

export interface TrainedCompeftRun {
  variant: QuantVariant;
  adapters: TrainedAdapterCompeft[];
}

/** Per-adapter table for the last run (the served precision), mean tables for every run. */
export function trainedCompeftOutput(fixture: TrainedFixture, runs: TrainedCompeftRun[], densities: number[]): { tables: ResultTable[]; summary: SummaryRow[] } {
  const version = (r: TrainedAdapterCompeft, method: CompressionMethod, density: number) => r.versions.find((v) => v.method === method && v.density === density)!;
  const served = runs[runs.length - 1];
  const rows: Cell[][] = served.adapters.flatMap((r) =>
    densities.map((d, i) => [
      i === 0 ? `${r.adapter} (${r.domain}, r${r.rank})` : '',
      i === 0 ? `${r.baseLoss.toFixed(3)} -> ${r.adapterLoss.toFixed(3)}` : '',
      d,
      ...COMPRESSION_METHODS.map((m) => `${(100 * version(r, m, d).gainKept).toFixed(1)}%`),
      sig(version(r, 'per-module', d).ratioVsFp16),
    ]),
  );
  const meanKept = (run: TrainedCompeftRun, m: CompressionMethod, d: number) => meanOf(run.adapters.map((r) => version(r, m, d).gainKept));
  const minKept = (run: TrainedCompeftRun, m: CompressionMethod, d: number) => Math.min(...run.adapters.map((r) => version(r, m, d).gainKept));
  const meanRows: Cell[][] = runs.flatMap((run) =>
    densities.map((d) => [
      run.variant.id,
      d,
      ...COMPRESSION_METHODS.map((m) => `${(100 * meanKept(run, m, d)).toFixed(1)}% (min ${(100 * minKept(run, m, d)).toFixed(1)}%)`),
      sig(meanOf(run.adapters.map((r) => version(r, 'per-module', d).ratioVsFp16))),
      sig(meanOf(run.adapters.map((r) => version(r, 'update', d).ratioVsFp16))),
    ]),
  );
  const windows = fixture.heldout(served.adapters[0]?.domain ?? 'de');
  const d01 = densities.includes(0.1) ? 0.1 : densities[0];
  const firstMeeting = (run: TrainedCompeftRun, m: CompressionMethod) => densities.find((d) => run.adapters.every((r) => version(r, m, d).gainKept >= 0.8));
  return {
    tables: [
      {
        title: `Share of each trained adapter's held-out loss gain a .cpeft keeps (${served.variant.id} base, ${windows.windows.length} windows x ${windows.windowTokens - 1} predictions of the adapter's own language)`,
        columns: ['adapter', 'loss base -> adapter (nats)', 'density', ...COMPRESSION_METHODS.map((m) => LABELS[m]), 'x vs fp16'],
        rows,
        notes: [
          'gain kept = (loss base - loss compressed) / (loss base - loss adapter), every version served through the adapter manager and scored in the same batches',
          "per-module: `tessera compress` (top-k of A and B, per-module product-optimal scales); global: one alpha * sigma over the whole adapter, alpha fitted by least squares over all modules (the paper's rule at its best alpha)",
          "update: top-k of (A - A0) (least-squares scale) and of B (scale minimising ||BA - B^ A_served||), served as A0 + update (A0 = PEFT's seeded initial A, which the receiver must regenerate); same size as per-module",
          'per-module xM: the per-module file with every module\'s product scale multiplied by M (same size): how much of the loss is the shrinkage of the reconstruction-optimal scale',
          'x vs fp16 = fp16 safetensors of the factors / .cpeft bytes',
        ],
      },
      {
        title: 'Mean over the adapters (min in brackets), per base precision',
        columns: ['base', 'density', ...COMPRESSION_METHODS.map((m) => LABELS[m]), 'x vs fp16 (per-module)', 'x vs fp16 (update)'],
        rows: meanRows,
        notes: [
          'fp32 applies adapters with the per-row gather kernel, quantized models with the packed kernel (docs/adapters.md)',
          ...runs.flatMap((run) =>
            COMPRESSION_METHODS.map((m) => `${run.variant.id}, ${m}: lowest density at which every adapter keeps >= 80%: ${firstMeeting(run, m) ?? `none of ${densities.join(', ')}`}`),
          ),
        ],
      },
    ],
    summary: runs.map((run) => ({
      metric: `compeft on trained adapters (${run.variant.id} base): gain kept at density ${d01}, ${COMPRESSION_METHODS.join(' / ')} (mean, min)`,
      value: `${COMPRESSION_METHODS.map((m) => `${(100 * meanKept(run, m, d01)).toFixed(0)}% (${(100 * minKept(run, m, d01)).toFixed(0)}%)`).join(' / ')}; ${sig(meanOf(run.adapters.map((r) => version(r, 'per-module', d01).ratioVsFp16)))}x vs fp16`,
    })),
  };
}
