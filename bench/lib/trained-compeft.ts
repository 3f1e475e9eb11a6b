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
 *   update       the trained-minus-initial factors (A - A0, B - 0) compressed, each tensor with its own least-squares
 *                scale, and served as A0 + decoded update (A0 is PEFT's seeded initialisation: a receiver that knows
 *                the seed regenerates it); its size is the .cpeft of the update
 * All versions of one adapter are resident in slots at once and scored in the same batches.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
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

export type CompressionMethod = 'per-module' | 'global' | 'update';
export const COMPRESSION_METHODS: CompressionMethod[] = ['per-module', 'global', 'update'];

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

/** The update of each factor (trained - initial), compressed with per-tensor least-squares scales. */
function compressUpdate(trained: PeftAdapter, initial: PeftAdapter, density: number): TernaryTensor[] {
  const init = loraModulesOf(initial).flat();
  return loraModulesOf(trained)
    .flat()
    .map((t, i) => {
      const update = new Float32Array(t.data.length);
      for (let k = 0; k < update.length; k++) update[k] = t.data[k] - init[i].data[k];
      const pattern = selectTopK(update, density);
      return { name: t.name, layer: t.layer, target: t.target, kind: t.kind, rows: t.rows, cols: t.cols, scale: meanKeptMagnitude(update, pattern), ...pattern };
    });
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
      opts.log(`trained adapters: ${a.name}: compressing at ${opts.densities.join(', ')} (per-module, global, update)`);
      const versions: Array<{ method: CompressionMethod; density: number; source: string; bytes: number }> = [];
      for (const density of opts.densities) {
        for (const method of COMPRESSION_METHODS) {
          const file = path.join(scratch, `${a.name}-${method}-d${density}.cpeft`);
          if (method === 'update') {
            const update = compressUpdate(trained, initial, density);
            const bytes = writeCompeft({ baseModel: trained.baseModel, numLayers: config.numLayers, rank: trained.rank, loraAlpha: trained.loraAlpha, scale: trained.scale, density, alpha: 'auto' }, update);
            fs.writeFileSync(file, bytes);
            const dir = path.join(scratch, `${a.name}-update-d${density}`);
            await writeUpdatedAdapter(dir, sourceDir, initial, update);
            versions.push({ method, density, source: dir, bytes: bytes.length });
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
        columns: ['adapter', 'loss base -> adapter (nats)', 'density', 'kept: per-module scales', 'kept: global alpha (paper)', 'kept: update (A - A0)', 'x vs fp16'],
        rows,
        notes: [
          'gain kept = (loss base - loss compressed) / (loss base - loss adapter), every version served through the adapter manager and scored in the same batches',
          "per-module: `tessera compress` (top-k of A and B, per-module product-optimal scales); global: one alpha * sigma over the whole adapter, alpha fitted by least squares over all modules (the paper's rule at its best alpha)",
          "update: top-k of (A - A0) and of B with per-tensor least-squares scales, served as A0 + update (A0 = PEFT's seeded initial A, regenerated by the receiver); same size as per-module",
          'x vs fp16 = fp16 safetensors of the factors / .cpeft bytes',
        ],
      },
      {
        title: 'Mean over the adapters (min in brackets), per base precision',
        columns: ['base', 'density', 'kept: per-module scales', 'kept: global alpha (paper)', 'kept: update (A - A0)', 'x vs fp16 (per-module)', 'x vs fp16 (update)'],
        rows: meanRows,
        notes: [
          'fp32 applies adapters exactly (per-row gather kernel); int4 through the packed int8 LoRA kernel (docs/adapters.md), as served',
          ...runs.flatMap((run) =>
            COMPRESSION_METHODS.map((m) => `${run.variant.id}, ${m}: lowest density at which every adapter keeps >= 80%: ${firstMeeting(run, m) ?? `none of ${densities.join(', ')}`}`),
          ),
        ],
      },
    ],
    summary: runs.map((run) => ({
      metric: `compeft on trained adapters (${run.variant.id} base): gain kept at density ${d01}, per-module / global alpha / update (mean, min)`,
      value: `${COMPRESSION_METHODS.map((m) => `${(100 * meanKept(run, m, d01)).toFixed(0)}% (${(100 * minKept(run, m, d01)).toFixed(0)}%)`).join(' / ')}; ${sig(meanOf(run.adapters.map((r) => version(r, 'per-module', d01).ratioVsFp16)))}x vs fp16`,
    })),
  };
}
