/**
 * `npm run fixtures:trained [-- --force]`: builds the trained fixture into <cache root>/trained (see
 * bench/lib/trained-fixture.ts for the layout) unless an up-to-date one is there.
 *
 *   1. Debian packages: python3-torch (+ numpy, OpenBLAS) and the man pages (manpages, manpages-de, -fr, -es),
 *      installed with apt-get when missing (as root; otherwise the command to run is printed).
 *   2. Corpora: each package's man pages as text (man-text.ts), split into train and held-out pages (corpus.ts).
 *   3. Tokenizer: Tessera's byte-level BPE trainer (src/model/tokenizer/bpe-trainer.ts) on the English training text.
 *   4. Token streams (pages joined by <|endoftext|>) through Tessera's own tokenizer loader, and the held-out windows.
 *   5. train.py (nice -n 10): the base model, then one LoRA adapter per language and rank; held-out losses.
 *   6. manifest.json: corpus files and sha256, hyperparameters, timings, held-out loss per domain.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { ensureDirOnce } from '../../src/model/checkpoint/atomic-dir.ts';
import { generateTokenizer } from '../../src/model/tokenizer/generated-tokenizer.ts';
import { loadTokenizer } from '../../src/model/tokenizer/tokenizer.ts';
import { machineInfo } from '../../bench/lib/machine-info.ts';
import {
  TRAINED_FIXTURE_VERSION,
  findTrainedFixture,
  trainedFixtureDir,
  type HeldOutWindows,
  type TrainedAdapterEntry,
  type TrainedFixtureManifest,
} from '../../bench/lib/trained-fixture.ts';
import { readCorpus, type Corpus } from './corpus.ts';
import { evenWindows } from './windows.ts';

const here = path.dirname(fileURLToPath(import.meta.url));
const PYTHON = '/usr/bin/python3'; // Debian's interpreter, the one python3-torch installs into
const PACKAGES = ['python3-torch', 'python3-numpy', 'libopenblas0-pthread', 'manpages', 'manpages-de', 'manpages-fr', 'manpages-es'];
const DOMAINS: Array<{ domain: string; debianPackage: string }> = [
  { domain: 'en', debianPackage: 'manpages' },
  { domain: 'de', debianPackage: 'manpages-de' },
  { domain: 'fr', debianPackage: 'manpages-fr' },
  { domain: 'es', debianPackage: 'manpages-es' },
];
const BASE_DOMAIN = 'en';
const MODEL_NAME = 'tessera-manpages-llama';
const SEED = 20;
/**
 * One thread: on this shared 2-core machine (load average ~15) two OpenMP threads ran a training step at 110-490
 * tokens/s and one thread at 1,700-2,500 tokens/s (same model, bf16): each step's parallel regions wait at a barrier
 * for whichever thread the scheduler has just taken away.
 */
const THREADS = 1;
const NUM_MERGES = 2813; // 3 special + 256 byte tokens + 2813 merges = 3072 ids
const HELDOUT = { windowTokens: 129, windowsPerDomain: 32 };

const CONFIG = {
  _name_or_path: MODEL_NAME,
  architectures: ['LlamaForCausalLM'],
  model_type: 'llama',
  vocab_size: 0, // set from the tokenizer, rounded up to a multiple of 64
  hidden_size: 256,
  intermediate_size: 768,
  num_hidden_layers: 6,
  num_attention_heads: 4,
  num_key_value_heads: 2,
  head_dim: 64,
  hidden_act: 'silu',
  max_position_embeddings: 512,
  initializer_range: 0.02,
  rms_norm_eps: 1e-5,
  rope_theta: 10000,
  rope_scaling: null,
  attention_bias: false,
  attention_dropout: 0.0,
  mlp_bias: false,
  pretraining_tp: 1,
  tie_word_embeddings: true,
  torch_dtype: 'float32',
  use_cache: true,
  bos_token_id: 0,
  eos_token_id: 0,
};

const BASE_TRAINING = { steps: 450, batchSequences: 8, sequenceTokens: 128, lr: 2e-3, warmupSteps: 40, minLrFraction: 0.1, weightDecay: 0.1 };
const ADAPTER_TRAINING = { steps: 100, batchSequences: 8, sequenceTokens: 128, lr: 2e-3, warmupSteps: 10, minLrFraction: 0.1, weightDecay: 0 };
const ADAPTER_RANKS = [8, 16];
const ADAPTER_DOMAINS = ['de', 'fr', 'es'];

const HYPERPARAMETERS = { seed: SEED, threads: THREADS, numMerges: NUM_MERGES, heldout: HELDOUT, base: BASE_TRAINING, adapters: { ranks: ADAPTER_RANKS, loraAlpha: '2 x rank', domains: ADAPTER_DOMAINS, ...ADAPTER_TRAINING } };

function log(message: string): void {
  process.stderr.write(`[fixtures:trained] ${message}\n`);
}

function isInstalled(pkg: string): boolean {
  const r = spawnSync('dpkg-query', ['-W', '-f=${Status}', pkg], { encoding: 'utf8' });
  return r.status === 0 && r.stdout.includes('install ok installed');
}

function ensurePackages(): void {
  const missing = PACKAGES.filter((p) => !isInstalled(p));
  if (missing.length === 0) return;
  const command = ['apt-get', 'install', '-y', '--no-install-recommends', ...missing];
  if (process.getuid?.() !== 0) throw new Error(`missing Debian packages ${missing.join(', ')}; as root run: ${command.join(' ')}`);
  log(`installing ${missing.join(', ')} with apt-get`);
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  if (spawnSync(command[0], command.slice(1), { stdio: 'inherit', env }).status !== 0) {
    execFileSync('apt-get', ['update'], { stdio: 'inherit', env });
    execFileSync(command[0], command.slice(1), { stdio: 'inherit', env });
  }
}

function packageVersions(): Record<string, string> {
  return Object.fromEntries(PACKAGES.map((p) => [p, execFileSync('dpkg-query', ['-W', '-f=${Version}', p], { encoding: 'utf8' }).trim()]));
}

/** What the fixture depends on: hyperparameters, config, the trainer's and the text converter's source, package versions. */
function fixtureKey(): string {
  const sources = ['train.py', 'man-text.ts', 'corpus.ts'].map((f) => fs.readFileSync(path.join(here, f), 'utf8'));
  return createHash('sha256')
    .update(JSON.stringify({ version: TRAINED_FIXTURE_VERSION, HYPERPARAMETERS, CONFIG, sources, packages: packageVersions() }))
    .digest('hex')
    .slice(0, 16);
}

function writeJson(file: string, value: unknown): void {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, JSON.stringify(value, null, 2) + '\n');
}

/** Pages' token ids joined by `separator` (the end-of-text token), as one stream. */
function tokenStream(pages: string[], encode: (text: string) => number[], separator: number): number[] {
  const stream: number[] = [];
  for (const page of pages) {
    for (const id of encode(page)) stream.push(id);
    stream.push(separator);
  }
  return stream;
}

function writeUint16(file: string, ids: number[]): void {
  const buf = Buffer.alloc(ids.length * 2);
  ids.forEach((id, i) => buf.writeUInt16LE(id, i * 2));
  fs.writeFileSync(file, buf);
}

/** What a build trains: the real settings, or a few steps of each phase to check the pipeline end to end (--smoke). */
interface BuildSettings {
  numMerges: number;
  base: typeof BASE_TRAINING;
  adapter: typeof ADAPTER_TRAINING;
}

const REAL: BuildSettings = { numMerges: NUM_MERGES, base: BASE_TRAINING, adapter: ADAPTER_TRAINING };
const SMOKE: BuildSettings = { numMerges: 200, base: { ...BASE_TRAINING, steps: 3, warmupSteps: 1 }, adapter: { ...ADAPTER_TRAINING, steps: 2, warmupSteps: 1 } };

async function build(outDir: string, key: string, s: BuildSettings): Promise<void> {
  const started = performance.now();
  const loadAverage1m = machineInfo().loadAverage1m;
  const seconds = { total: 0, corpus: 0, tokenizer: 0, tokenize: 0, baseTraining: 0, adapterTraining: 0 };
  const work = path.join(outDir, 'work');
  fs.mkdirSync(work, { recursive: true });

  let t = performance.now();
  const corpora: Corpus[] = DOMAINS.map(({ domain, debianPackage }) => readCorpus(domain, debianPackage));
  for (const c of corpora) log(`${c.domain}: ${c.debianPackage} ${c.packageVersion}, ${c.train.length} train / ${c.heldout.length} held-out pages`);
  seconds.corpus = (performance.now() - t) / 1000;

  t = performance.now();
  const baseCorpus = corpora.find((c) => c.domain === BASE_DOMAIN)!;
  log(`training the BPE tokenizer (${s.numMerges} merges) on the ${BASE_DOMAIN} training text`);
  const tokenizer = generateTokenizer({ numMerges: s.numMerges, modelMaxLengthTokens: CONFIG.max_position_embeddings, corpus: baseCorpus.train.join('\n\n') });
  const config = { ...CONFIG, vocab_size: Math.ceil(tokenizer.vocabSize / 64) * 64 };
  const baseDir = path.join(outDir, 'base');
  writeJson(path.join(baseDir, 'tokenizer.json'), tokenizer.tokenizerJson);
  writeJson(path.join(baseDir, 'tokenizer_config.json'), tokenizer.tokenizerConfigJson);
  writeJson(path.join(baseDir, 'config.json'), config);
  seconds.tokenizer = (performance.now() - t) / 1000;

  t = performance.now();
  const tok = loadTokenizer(baseDir)!;
  const eos = tokenizer.eosTokenId;
  const encode = (text: string) => tok.encode(text, { addSpecialTokens: false });
  const trainTokenFiles: Record<string, string> = {};
  const heldoutFiles: Record<string, string> = {};
  const counts = new Map<string, { train: number; heldout: number }>();
  for (const c of corpora) {
    const train = tokenStream(c.train, encode, eos);
    const heldout = tokenStream(c.heldout, encode, eos);
    counts.set(c.domain, { train: train.length, heldout: heldout.length });
    trainTokenFiles[c.domain] = path.join(work, `${c.domain}-train.u16`);
    writeUint16(trainTokenFiles[c.domain], train);
    const windows: HeldOutWindows = { domain: c.domain, windowTokens: HELDOUT.windowTokens, windows: evenWindows(heldout, HELDOUT.windowsPerDomain, HELDOUT.windowTokens) };
    heldoutFiles[c.domain] = `heldout/${c.domain}.json`;
    writeJson(path.join(outDir, heldoutFiles[c.domain]), windows);
    log(`${c.domain}: ${train.length.toLocaleString('en-US')} train tokens, ${heldout.length.toLocaleString('en-US')} held-out tokens`);
  }
  seconds.tokenize = (performance.now() - t) / 1000;

  const adapters = ADAPTER_DOMAINS.flatMap((domain, d) =>
    ADAPTER_RANKS.map((rank, r) => ({
      name: `${domain}-r${rank}`,
      domain,
      rank,
      loraAlpha: 2 * rank,
      seed: SEED + 1 + d * ADAPTER_RANKS.length + r,
      dir: path.join(outDir, 'adapters', `${domain}-r${rank}`),
      initialDir: path.join(outDir, 'initial-adapters', `${domain}-r${rank}`),
      training: s.adapter,
    })),
  );
  const resultsFile = path.join(work, 'results.json');
  const plan = {
    seed: SEED,
    threads: THREADS,
    config,
    baseDomain: BASE_DOMAIN,
    base: s.base,
    adapters,
    trainTokenFiles,
    heldoutFiles: Object.fromEntries(Object.entries(heldoutFiles).map(([d, f]) => [d, path.join(outDir, f)])),
    baseDir,
    resultsFile,
  };
  const planFile = path.join(work, 'plan.json');
  writeJson(planFile, plan);
  log(`training (${PYTHON} train.py under nice -n 10, ${THREADS} threads)`);
  const env = { ...process.env, OMP_NUM_THREADS: String(THREADS), OPENBLAS_NUM_THREADS: String(THREADS), PYTHONUNBUFFERED: '1' };
  const train = spawnSync('nice', ['-n', '10', PYTHON, path.join(here, 'train.py'), planFile], { stdio: 'inherit', env });
  if (train.status !== 0) throw new Error(`train.py failed (exit ${train.status ?? train.signal})`);
  const results = JSON.parse(fs.readFileSync(resultsFile, 'utf8')) as {
    torch: string;
    base: { trainSeconds: number; finalTrainLoss: number; heldoutLoss: Record<string, number>; parameters: number };
    adapters: Record<string, { trainSeconds: number; heldoutLoss: number; baseHeldoutLoss: number; parameters: number }>;
  };
  seconds.baseTraining = results.base.trainSeconds;
  seconds.adapterTraining = Object.values(results.adapters).reduce((s, a) => s + a.trainSeconds, 0);

  const adapterEntries: TrainedAdapterEntry[] = adapters.map((a) => ({
    name: a.name,
    domain: a.domain,
    rank: a.rank,
    loraAlpha: a.loraAlpha,
    dir: path.relative(outDir, a.dir),
    initialDir: path.relative(outDir, a.initialDir),
    ...results.adapters[a.name],
  }));
  fs.rmSync(work, { recursive: true, force: true });
  seconds.total = (performance.now() - started) / 1000;
  const manifest: TrainedFixtureManifest = {
    version: TRAINED_FIXTURE_VERSION,
    key,
    createdAt: new Date().toISOString(),
    cpu: machineInfo().cpuModel,
    loadAverage1m,
    seconds,
    corpora: corpora.map((c) => ({
      domain: c.domain,
      debianPackage: c.debianPackage,
      packageVersion: c.packageVersion,
      trainPages: c.train.length,
      heldoutPages: c.heldout.length,
      trainTokens: counts.get(c.domain)!.train,
      heldoutTokens: counts.get(c.domain)!.heldout,
      files: c.files,
    })),
    tokenizer: { numMerges: s.numMerges, vocabTokens: tokenizer.vocabSize, trainedOn: `${BASE_DOMAIN} training pages` },
    config,
    hyperparameters: HYPERPARAMETERS,
    torch: results.torch,
    base: { dir: 'base', ...results.base },
    adapters: adapterEntries,
    heldout: { ...HELDOUT, files: heldoutFiles },
  };
  writeJson(path.join(outDir, 'manifest.json'), manifest);
}

function argValue(name: string): string | undefined {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

async function main(): Promise<void> {
  const force = process.argv.includes('--force');
  const smoke = process.argv.includes('--smoke');
  const out = argValue('--out');
  if (smoke && out === undefined) throw new Error('--smoke needs --out DIR (a smoke build never goes into the cache)');
  const dir = out ?? trainedFixtureDir();
  ensurePackages();
  const key = smoke ? 'smoke' : fixtureKey();
  const existing = findTrainedFixture(dir);
  if (existing && existing.manifest.key === key && !force) {
    log(`up to date: ${dir} (key ${key}); --force rebuilds it`);
    return;
  }
  if (fs.existsSync(dir)) {
    const old = `${dir}.old-${process.pid}`;
    fs.renameSync(dir, old);
    log(`replacing ${existing ? `the fixture with key ${existing.manifest.key}` : 'an incomplete fixture'}`);
    fs.rmSync(old, { recursive: true, force: true });
  }
  await ensureDirOnce(dir, (tmp) => build(tmp, key, smoke ? SMOKE : REAL));
  const m = findTrainedFixture(dir)!.manifest;
  log(`done in ${Math.round(m.seconds.total)} s: ${dir}`);
  log(`held-out loss (nats/token): base ${Object.entries(m.base.heldoutLoss).map(([d, l]) => `${d} ${l.toFixed(4)}`).join(', ')}`);
  for (const a of m.adapters) log(`  ${a.name}: ${a.heldoutLoss.toFixed(4)} on ${a.domain} (base ${a.baseHeldoutLoss.toFixed(4)})`);
}

main().catch((err: unknown) => {
  console.error(err instanceof Error ? err.message : err);
  process.exit(1);
});
