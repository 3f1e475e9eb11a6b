/**
 * The trained fixture (tools/trained-fixtures, `npm run fixtures:trained`): a small Llama trained on English man pages
 * and LoRA adapters trained on German, French and Spanish ones, cached under <cache root>/trained. Benchmarks and tests
 * use it when it is there and skip what needs it when it is not; nothing here trains or downloads anything.
 *
 * Layout:
 *   manifest.json                     TrainedFixtureManifest
 *   base/                             config.json, model.safetensors (float32), tokenizer.json, tokenizer_config.json
 *   adapters/<name>/                  PEFT LoRA adapters (adapter_config.json, adapter_model.safetensors)
 *   initial-adapters/<name>/          the same adapters' factors before training (A as initialised, B zero)
 *   heldout/<domain>.json             HeldOutWindows: the held-out token windows the trainer's losses are measured on
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

/** Bump when the layout or the manifest's meaning changes; a cache with another version is rebuilt. */
export const TRAINED_FIXTURE_VERSION = 1;

export interface HeldOutWindows {
  domain: string;
  /** Tokens per window; each window gives windowTokens - 1 next-token predictions. */
  windowTokens: number;
  windows: number[][];
}

export interface TrainedAdapterEntry {
  name: string;
  domain: string;
  rank: number;
  loraAlpha: number;
  /** Relative to the fixture directory. */
  dir: string;
  initialDir: string;
  trainSeconds: number;
  /** The trainer's float32 held-out loss (nats/token) of base + adapter on its own domain. */
  heldoutLoss: number;
  /** The base model's on the same windows. */
  baseHeldoutLoss: number;
  parameters: number;
}

export interface TrainedFixtureManifest {
  version: number;
  /** Hash of everything the result depends on (hyperparameters, trainer source, package versions). */
  key: string;
  createdAt: string;
  cpu: string;
  /** 1-minute load average when the build started (2 cores shared: training time depends on it). */
  loadAverage1m: number;
  seconds: { total: number; corpus: number; tokenizer: number; tokenize: number; baseTraining: number; adapterTraining: number };
  corpora: Array<{
    domain: string;
    debianPackage: string;
    packageVersion: string;
    trainPages: number;
    heldoutPages: number;
    trainTokens: number;
    heldoutTokens: number;
    files: Array<{ path: string; sha256: string; split: 'train' | 'heldout'; textChars: number }>;
  }>;
  tokenizer: { numMerges: number; vocabTokens: number; trainedOn: string };
  /** The config.json written for the base model. */
  config: Record<string, unknown>;
  hyperparameters: Record<string, unknown>;
  torch: string;
  base: {
    dir: string;
    parameters: number;
    trainSeconds: number;
    finalTrainLoss: number;
    /** The trainer's float32 held-out loss (nats/token) per domain. */
    heldoutLoss: Record<string, number>;
  };
  adapters: TrainedAdapterEntry[];
  heldout: { windowTokens: number; windowsPerDomain: number; files: Record<string, string> };
}

export interface TrainedFixture {
  dir: string;
  manifest: TrainedFixtureManifest;
  baseDir: string;
  adapterDir(name: string): string;
  initialAdapterDir(name: string): string;
  heldout(domain: string): HeldOutWindows;
}

/** $TESSERA_CACHE_DIR/trained, else ~/.cache/tessera/trained. */
export function trainedFixtureDir(env: NodeJS.ProcessEnv = process.env): string {
  return path.join(env.TESSERA_CACHE_DIR ?? path.join(os.homedir(), '.cache', 'tessera'), 'trained');
}

/** The cached trained fixture, or null when it has not been built (or was built by another layout version). */
export function findTrainedFixture(dir: string = trainedFixtureDir()): TrainedFixture | null {
  const file = path.join(dir, 'manifest.json');
  if (!fs.existsSync(file)) return null;
  const manifest = JSON.parse(fs.readFileSync(file, 'utf8')) as TrainedFixtureManifest;
  if (manifest.version !== TRAINED_FIXTURE_VERSION) return null;
  return {
    dir,
    manifest,
    baseDir: path.join(dir, manifest.base.dir),
    adapterDir: (name) => path.join(dir, entry(manifest, name).dir),
    initialAdapterDir: (name) => path.join(dir, entry(manifest, name).initialDir),
    heldout: (domain) => {
      const rel = manifest.heldout.files[domain];
      if (rel === undefined) throw new Error(`trained fixture has no held-out windows for domain ${JSON.stringify(domain)}`);
      return JSON.parse(fs.readFileSync(path.join(dir, rel), 'utf8')) as HeldOutWindows;
    },
  };
}

function entry(manifest: TrainedFixtureManifest, name: string): TrainedAdapterEntry {
  const a = manifest.adapters.find((x) => x.name === name);
  if (!a) throw new Error(`trained fixture has no adapter ${JSON.stringify(name)} (has ${manifest.adapters.map((x) => x.name).join(', ')})`);
  return a;
}
