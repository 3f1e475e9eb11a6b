/**
 * Models for benchmarks. Generated checkpoints are cached across runs under the cache root (they depend only on the
 * preset and seed); converted models are produced once per run, into a per-run directory removed by `cleanup()`, so
 * conversion time is always measured in the same run as everything else and a converter change is never hidden by
 * a stale cached conversion.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ensureDirOnce } from '../../src/model/checkpoint/atomic-dir.ts';
import { makeModel, modelName, type ModelPreset } from '../../src/model/checkpoint/make-model.ts';
import { convertCheckpoint } from '../../src/model/convert/convert-checkpoint.ts';
import type { ModelManifest } from '../../src/model/converted-model.ts';
import { plantOutlierChannels } from './planted-outliers.ts';
import { variantDirName, type QuantVariant } from './quant-variants.ts';

/**
 * plain: the generated checkpoint. outlier-channels: the same function with outlier input channels planted
 * (bench/lib/planted-outliers.ts, OUTLIER_CHANNELS), the case SpQR-style outliers are for.
 */
export type CheckpointKind = 'plain' | 'outlier-channels';

export const OUTLIER_CHANNELS = { fraction: 0.005, scale: 16 } as const;

/** Bump when the generator's output changes, so cached checkpoints are regenerated. */
const CHECKPOINT_VERSION = 'v1';

export interface BenchModelsOptions {
  /** Where checkpoints are cached and conversions are written; default defaultBenchCacheDir(). */
  cacheDir: string;
  seed?: number;
  log?: (message: string) => void;
}

export interface ConvertedBenchModel {
  variant: QuantVariant;
  kind: CheckpointKind;
  dir: string;
  manifest: ModelManifest;
  /** Wall time of convertCheckpoint in this run (reads the checkpoint, quantizes, writes graphs and weights). */
  conversionWallMs: number;
}

/** $TESSERA_CACHE_DIR/bench, else ~/.cache/tessera/bench. */
export function defaultBenchCacheDir(env: NodeJS.ProcessEnv = process.env): string {
  return path.join(env.TESSERA_CACHE_DIR ?? path.join(os.homedir(), '.cache', 'tessera'), 'bench');
}

export class BenchModels {
  readonly cacheDir: string;
  readonly seed: number;
  private readonly runDir: string;
  private readonly log: (message: string) => void;
  private readonly checkpoints = new Map<string, Promise<string>>();
  private readonly conversions = new Map<string, Promise<ConvertedBenchModel>>();

  constructor(options: BenchModelsOptions) {
    this.cacheDir = options.cacheDir;
    this.seed = options.seed ?? 0;
    this.log = options.log ?? (() => {});
    this.runDir = path.join(this.cacheDir, 'runs', `run-${process.pid}-${Date.now()}`);
  }

  /** The generated Hugging Face checkpoint directory for a preset (no adapters), generated on first use. */
  checkpoint(preset: ModelPreset, kind: CheckpointKind = 'plain'): Promise<string> {
    const key = `${preset}/${kind}`;
    let pending = this.checkpoints.get(key);
    if (!pending) {
      const plainName = `${modelName(preset, this.seed)}-${CHECKPOINT_VERSION}`;
      const name = kind === 'plain' ? plainName : `${plainName}-outliers-f${OUTLIER_CHANNELS.fraction}-x${OUTLIER_CHANNELS.scale}`;
      const dir = path.join(this.cacheDir, 'checkpoints', name);
      pending = (async () => {
        const plainDir = kind === 'plain' ? null : await this.checkpoint(preset, 'plain');
        if (!fs.existsSync(dir)) this.log(`generating the ${preset} ${kind} checkpoint into ${dir} (once; cached for later runs)`);
        await ensureDirOnce(dir, async (tmpDir) => {
          if (plainDir === null) await makeModel({ preset, outDir: tmpDir, numAdapters: 0, seed: this.seed });
          else await plantOutlierChannels({ srcDir: plainDir, outDir: tmpDir, ...OUTLIER_CHANNELS, seed: this.seed });
        });
        return dir;
      })();
      this.checkpoints.set(key, pending);
    }
    return pending;
  }

  /** The `kind` checkpoint of `preset` converted to `variant`, converted at most once per run. */
  converted(preset: ModelPreset, variant: QuantVariant, kind: CheckpointKind = 'plain'): Promise<ConvertedBenchModel> {
    const key = `${preset}/${kind}/${variant.id}`;
    let pending = this.conversions.get(key);
    if (!pending) {
      pending = (async () => {
        const hfDir = await this.checkpoint(preset, kind);
        const dir = path.join(this.runDir, `${preset}-${kind}-${variantDirName(variant)}`);
        this.log(`converting ${preset} ${kind} -> ${variant.id}`);
        const started = performance.now();
        const manifest = await convertCheckpoint({
          hfDir,
          outDir: dir,
          quant: variant.quant,
          ...(variant.blockSize !== null ? { blockSize: variant.blockSize } : {}),
          outlierFraction: variant.outlierFraction,
          ...(variant.int4AccuracyLevel !== undefined ? { int4AccuracyLevel: variant.int4AccuracyLevel } : {}),
        });
        return { variant, kind, dir, manifest, conversionWallMs: performance.now() - started };
      })();
      this.conversions.set(key, pending);
    }
    return pending;
  }

  /** Removes this run's converted models (the cached checkpoints stay). Idempotent. */
  cleanup(): void {
    fs.rmSync(this.runDir, { recursive: true, force: true });
  }
}
