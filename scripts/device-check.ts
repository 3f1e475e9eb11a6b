/**
 * The GPU device check (`npm run device-check`; on a GPU machine without network scripts/device-check.sh runs the
 * bundled copy, docs/gpu.md "Device check"). For each execution provider asked for (default cuda, cpu):
 *   1. CUDA only: the provider's libraries, made loadable the way `--device cuda` does it (src/cli/cuda-provider.ts,
 *      `--cuda-lib-path` preloaded by full path), and which ONNX Runtime core runs (one per process);
 *   2. equivalence on `small` (SmolLM-135M shape), fp32 and int4: 3 rows (base, adapter 1, adapter 2), a prefill and
 *      8 greedy decode steps fed the CPU's tokens: max |logit difference| and greedy agreement vs the CPU provider of the
 *      same core, with a pass/fail against the tolerances below; and the k-step runner's greedy tokens vs the CPU's;
 *   3. decode throughput of `small` int4 at 1 and 16 streams, one step per run (ModelRunner) and k steps per run
 *      (LoopDecodeRunner), with the bytes that crossed the binding per generated token (every input of a run is copied
 *      to the device and every output back: onnxruntime-node has no IO binding), measured around session.run, next to
 *      the formula of src/model/runner/transfer-bytes.ts for the same case.
 * JSON to `--out` (default bench/results/device-check.json), rewritten after every case so a run cut short keeps what
 * it measured.
 */
import * as ort from 'onnxruntime-node';
import { existsSync, mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { cpus, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { readPeftAdapter } from '../src/adapters/peft/peft-adapter.ts';
import { loadCudaLibraries } from '../src/cli/cuda-provider.ts';
import type { SequenceWork, StepResult } from '../src/engine/executor.ts';
import { makeModel } from '../src/model/checkpoint/make-model.ts';
import { convertCheckpoint } from '../src/model/convert/convert-checkpoint.ts';
import type { QuantKind } from '../src/model/converted-model.ts';
import type { LoraWeights } from '../src/model/runner/adapter-slot-stacks.ts';
import { DeviceKvRunner } from '../src/model/runner/device-kv-runner.ts';
import { LoopDecodeRunner } from '../src/model/runner/loop-decode-runner.ts';
import { ModelRunner, type Device } from '../src/model/runner/model-runner.ts';
import { PAST_ALIGN_TOKENS } from '../src/model/runner/step-inputs.ts';
import { transferBytesPerToken } from '../src/model/runner/transfer-bytes.ts';

interface Runner {
  execute(plan: { stepId: number; sequences: SequenceWork[]; decodeSteps?: number }): Promise<StepResult>;
  release(): Promise<void>;
  load(slot: number, w: LoraWeights): Promise<void>;
}

const args = process.argv.slice(2);
const flag = (name: string, fallback: string) => {
  const at = args.indexOf(name);
  return at >= 0 ? args[at + 1] : fallback;
};
const outFile = flag('--out', 'bench/results/device-check.json');
const providers = flag('--providers', 'cuda,cpu').split(',') as Device[];
const streamCounts = flag('--streams', '1,16').split(',').map(Number);
const decodeSteps = Number(flag('--steps', '16'));
const promptTokens = Number(flag('--prompt', '64'));
/** k of the k-step runner (decode steps per session.run). */
const loopSteps = Number(flag('--loop-steps', '8'));
const cudaLibPath = flag('--cuda-lib-path', '').split(',').filter((p) => p !== '');
/** Also run the equivalence on the CPU provider against itself: a smoke test of this script on a machine without a GPU. */
const cpuEquivalence = args.includes('--cpu-equivalence');
/** Equivalence tolerances (max |logit difference| vs the CPU provider), and the greedy agreement asked for. */
const TOLERANCE = {
  // CUDA runs fp32 MatMul with TF32 by default (onnxruntime's use_tf32), a 10-bit mantissa.
  fp32: { maxAbsLogitDiff: 0.05, minGreedyAgreement: 0.95 },
  // The CPU's MatMulNBits at accuracy level 4 quantizes activations to int8; CUDA's does not: quantization noise.
  int4: { maxAbsLogitDiff: 0.75, minGreedyAgreement: 0.85 },
} as const;
const BLOCK = 16;

const root = mkdtempSync(join(tmpdir(), 'tessera-device-check-'));
const log = (msg: string) => console.log(`[device-check ${(performance.now() / 1000).toFixed(1)}s] ${msg}`);

/** Bytes handed to and taken from session.run (what crosses PCIe on CUDA: every input in, every output out). */
const transfer = { upBytes: 0, downBytes: 0, runs: 0 };
const tensorBytes = (t: unknown): number => {
  const x = t as { location?: string; data?: { byteLength?: number } };
  return x && (x.location ?? 'cpu') === 'cpu' && x.data?.byteLength ? x.data.byteLength : 0;
};
const originalRun = ort.InferenceSession.prototype.run;
ort.InferenceSession.prototype.run = async function (this: ort.InferenceSession, ...runArgs: Parameters<ort.InferenceSession['run']>) {
  const feeds = runArgs[0] as Record<string, unknown>;
  for (const v of Object.values(feeds)) transfer.upBytes += tensorBytes(v);
  const out = await (originalRun as (...a: unknown[]) => Promise<ort.InferenceSession.ReturnType>).apply(this, runArgs);
  for (const v of Object.values(out)) transfer.downBytes += tensorBytes(v);
  transfer.runs++;
  return out;
} as typeof originalRun;
ort.env.logLevel = 'error'; // placement notes about shape ops on CPU are expected (docs/gpu.md)

async function model(preset: 'tiny' | 'small', quants: QuantKind[], numAdapters: number) {
  const hf = await makeModel({ preset, outDir: join(root, `${preset}-hf`), numAdapters, seed: 0 });
  const dirs: Partial<Record<QuantKind, string>> = {};
  for (const quant of quants) {
    dirs[quant] = join(root, `${preset}-${quant}`);
    await convertCheckpoint({ hfDir: hf.outDir, outDir: dirs[quant]!, quant });
  }
  return { hf, dirs, adapters: hf.adapterDirs.map((d) => readPeftAdapter(d, hf.config)) as LoraWeights[] };
}
type Model = Awaited<ReturnType<typeof model>>;

async function open(device: Device, modelDir: string, kvCacheBytes: number, slots: number, rank: number, loop = false): Promise<Runner> {
  const options = { modelDir, kvCacheBytes, blockSizeTokens: BLOCK, numAdapterSlots: slots, maxAdapterRank: rank, device };
  if (loop) {
    const r = await LoopDecodeRunner.create(options);
    return { execute: (p) => r.execute(p), release: () => r.release(), load: async (s, w) => r.loadAdapterSlot(s, w) };
  }
  if (device === 'webgpu') {
    const r = await DeviceKvRunner.create(options);
    return { execute: (p) => r.execute(p), release: () => r.release(), load: (s, w) => r.loadAdapterSlot(s, w) };
  }
  const r = await ModelRunner.create(options);
  return { execute: (p) => r.execute(p), release: () => r.release(), load: async (s, w) => r.loadAdapterSlot(s, w) };
}

function argmax(row: Float32Array): number {
  let best = 0;
  for (let i = 1; i < row.length; i++) if (row[i] > row[best]) best = i;
  return best;
}

/**
 * 3 rows (base, adapter 1, adapter 2): a prefill, then 8 greedy decode steps on `device` vs the CPU provider, fed the
 * CPU's tokens; then the k-step runner on `device` decodes the base row greedily and is compared with the CPU's tokens.
 */
async function equivalence(device: Device, m: Model, quant: QuantKind) {
  const dir = m.dirs[quant]!;
  const vocab = m.hf.config.vocabSize;
  const prompts = [Array.from({ length: 24 }, (_, t) => (t * 37 + 11) % vocab), Array.from({ length: 9 }, (_, t) => (t * 101 + 3) % vocab), [200, 201, 202]];
  const steps = 8;
  const ref = await open('cpu', dir, 32 << 20, 3, 16);
  const dev = await open(device, dir, 32 << 20, 3, 16);
  for (const r of [ref, dev]) for (let s = 1; s <= 2; s++) await r.load(s, m.adapters[(s - 1) % m.adapters.length]);
  const pos = prompts.map(() => 0);
  const next = prompts.map(() => 0);
  const cpuTokens: number[][] = prompts.map(() => []);
  let worst = 0;
  let same = 0;
  let rows = 0;
  for (let step = 0; step <= steps; step++) {
    const sequences = prompts.map((p, i) => ({ seqId: i, tokenIds: step === 0 ? p : [next[i]], startPosition: pos[i], blockTable: [i * 4, i * 4 + 1, i * 4 + 2, i * 4 + 3], adapterSlot: i, sampleNext: true }));
    const a = await ref.execute({ stepId: step, sequences });
    const b = await dev.execute({ stepId: step, sequences });
    for (const seq of sequences) {
      pos[seq.seqId] += seq.tokenIds.length;
      const ra = a.outcomes.find((o) => o.seqId === seq.seqId)!.logitsRow;
      const rb = b.outcomes.find((o) => o.seqId === seq.seqId)!.logitsRow;
      const want = a.logits.subarray(ra * vocab, (ra + 1) * vocab);
      const got = b.logits.subarray(rb * vocab, (rb + 1) * vocab);
      for (let i = 0; i < vocab; i++) worst = Math.max(worst, Math.abs(want[i] - got[i]));
      next[seq.seqId] = argmax(want);
      cpuTokens[seq.seqId].push(next[seq.seqId]);
      if (argmax(got) === next[seq.seqId]) same++;
      rows++;
    }
  }
  await ref.release();
  await dev.release();
  // k-step runner, base row: prefill on the one-step path of the same runner, then runs of k greedy steps.
  const loop = await open(device, dir, 32 << 20, 3, 16, true);
  const table = [0, 1, 2, 3];
  const first = await loop.execute({ stepId: 0, sequences: [{ seqId: 0, tokenIds: prompts[0], startPosition: 0, blockTable: table, adapterSlot: 0, sampleNext: true }] });
  const loopTokens = [argmax(first.logits.subarray(0, vocab))];
  let at = prompts[0].length;
  while (loopTokens.length < steps + 1) {
    const k = Math.min(loopSteps, steps + 1 - loopTokens.length);
    const res = await loop.execute({ stepId: at, decodeSteps: k, sequences: [{ seqId: 0, tokenIds: [loopTokens.at(-1)!], startPosition: at, blockTable: table, adapterSlot: 0, sampleNext: true, loopSampling: { temperature: 0, topK: 0, seed: 0 } }] });
    loopTokens.push(...Array.from(res.sampledTokens!.tokenIds.subarray(0, k)));
    at += k;
  }
  await loop.release();
  const tol = TOLERANCE[quant as 'fp32' | 'int4'];
  const agreement = same / rows;
  return {
    rows,
    sameGreedyTokens: same,
    maxAbsLogitDiff: worst,
    tolerance: tol,
    pass: worst <= tol.maxAbsLogitDiff && agreement >= tol.minGreedyAgreement,
    kStepGreedyTokensEqualCpu: loopTokens.filter((t, i) => t === cpuTokens[0][i]).length,
    kStepTokens: loopTokens.length,
  };
}

/**
 * Decode tokens/s of `small` int4 (base model) at each of `streamCounts` rows after a prefill of `promptTokens` each, on
 * one runner (opened once, KV for the most streams). k > 1: the k-step runner, k greedy steps per session.run, timed
 * per run / k. Bytes per token: what crossed session.run during the timed steps, next to transfer-bytes.ts's formula at
 * the past the runner actually gathers (rounded up to PAST_ALIGN_TOKENS).
 */
async function throughput(device: Device, m: Model, k: number) {
  const dir = m.dirs.int4!;
  const config = m.hf.config;
  const runs = k > 1 ? Math.max(4, Math.ceil(decodeSteps / k) + 2) : decodeSteps;
  const blocksPerRow = Math.ceil((promptTokens + runs * k + 1) / BLOCK);
  const most = Math.max(...streamCounts);
  const kvBytes = most * blocksPerRow * 2 * config.numLayers * config.numKvHeads * BLOCK * config.headDim * 4;
  const opened = performance.now();
  const runner = await open(device, dir, kvBytes, 2, 16, k > 1);
  const sessionOpenMs = performance.now() - opened;
  const vocab = config.vocabSize;
  const results = [];
  for (const streams of streamCounts) {
    const rows = Array.from({ length: streams }, (_, i) => ({ seqId: i, table: Array.from({ length: blocksPerRow }, (_, j) => i * blocksPerRow + j), pos: 0, next: 0 }));
    const prefillStart = performance.now();
    for (let g = 0; g < streams; g += 16) {
      const group = rows.slice(g, g + 16);
      const res = await runner.execute({
        stepId: g,
        sequences: group.map((r) => ({ seqId: r.seqId, tokenIds: Array.from({ length: promptTokens }, (_, t) => (t * 31 + r.seqId * 7 + 5) % vocab), startPosition: 0, blockTable: r.table, adapterSlot: 0, sampleNext: true })),
      });
      for (const o of res.outcomes) {
        const r = rows[o.seqId];
        r.pos = promptTokens;
        r.next = argmax(res.logits.subarray(o.logitsRow * vocab, (o.logitsRow + 1) * vocab));
      }
    }
    const prefillMs = performance.now() - prefillStart;
    const stepMs: number[] = [];
    const counted = { up: 0, down: 0, tokens: 0, formulaUp: 0, formulaDown: 0 };
    for (let step = 0; step < runs; step++) {
      const before = { up: transfer.upBytes, down: transfer.downBytes };
      const start = rows[0].pos;
      const t = performance.now();
      const sequences = rows.map((r) => ({ seqId: r.seqId, tokenIds: [r.next], startPosition: r.pos, blockTable: r.table, adapterSlot: 0, sampleNext: true, ...(k > 1 ? { loopSampling: { temperature: 0, topK: 0, seed: 0 } } : {}) }));
      const res = await runner.execute({ stepId: 1000 + step, sequences, ...(k > 1 ? { decodeSteps: k } : {}) });
      stepMs.push((performance.now() - t) / k);
      if (step >= 2) {
        const tokens = streams * k;
        const gathered = Math.max(PAST_ALIGN_TOKENS, Math.ceil(start / PAST_ALIGN_TOKENS) * PAST_ALIGN_TOKENS);
        const f = transferBytesPerToken(config, { streams, contextTokens: gathered, stepsPerRun: k }, k > 1 ? 'loop-k-steps' : 'host-kv-per-step');
        counted.up += transfer.upBytes - before.up;
        counted.down += transfer.downBytes - before.down;
        counted.tokens += tokens;
        counted.formulaUp += f.upBytes * tokens;
        counted.formulaDown += f.downBytes * tokens;
      }
      for (const o of res.outcomes) {
        const r = rows[o.seqId];
        r.pos += k;
        r.next = res.sampledTokens ? res.sampledTokens.tokenIds[o.logitsRow * k + k - 1] : argmax(res.logits.subarray(o.logitsRow * vocab, (o.logitsRow + 1) * vocab));
      }
    }
    const steady = stepMs.slice(2); // the first runs compile kernels / warm caches
    const meanMs = steady.reduce((a, b) => a + b, 0) / steady.length;
    results.push({
      streams,
      runner: k > 1 ? `k-step (LoopDecodeRunner, k = ${k})` : 'one-step (ModelRunner)',
      decodeStepsPerRun: k,
      promptTokens,
      decodeSteps: runs * k,
      sessionOpenMs,
      prefillMs,
      firstStepMs: stepMs[0],
      meanStepMs: meanMs,
      tokensPerSecond: (streams * 1000) / meanMs,
      measuredBytesPerToken: { up: counted.up / counted.tokens, down: counted.down / counted.tokens },
      formulaBytesPerToken: { up: counted.formulaUp / counted.tokens, down: counted.formulaDown / counted.tokens },
    });
    // The next stream count starts from fresh blocks of the same runner.
  }
  await runner.release();
  return results;
}

/** The provider library beside the core this process loaded. */
function cudaProviderPath(): string {
  return join(dirname(createRequire(import.meta.url).resolve('onnxruntime-node/package.json')), 'bin/napi-v6/linux/x64/libonnxruntime_providers_cuda.so');
}

async function providerWorks(device: Device, dir: string): Promise<string | null> {
  try {
    const r = await open(device, dir, 1 << 20, 2, 16);
    await r.release();
    return null;
  } catch (err) {
    return (err as Error).message.split('\n')[0];
  }
}

const report: Record<string, unknown> = {
  startedAt: new Date().toISOString(),
  onnxruntime: ort.env.versions,
  onnxruntimeBackends: ort.listSupportedBackends(),
  cpuCores: cpus().length,
  cpuModel: cpus()[0]?.model,
  cudaLibPath,
  env: { LD_LIBRARY_PATH: process.env.LD_LIBRARY_PATH ?? null, VK_DRIVER_FILES: process.env.VK_DRIVER_FILES ?? null },
  providers: {},
};
const save = () => {
  mkdirSync(dirname(outFile), { recursive: true });
  writeFileSync(outFile, JSON.stringify(report, null, 2));
};

if (providers.includes('cuda')) {
  // Before any session: the provider's CUDA libraries, the way `--device cuda` loads them.
  const provider = cudaProviderPath();
  if (!existsSync(provider)) report.cudaLibraries = { error: `no CUDA provider beside this onnxruntime-node (${provider}): not the CUDA build (npm run install:cuda; the device pack carries it)` };
  else {
    try {
      report.cudaLibraries = loadCudaLibraries({ provider, libPath: cudaLibPath, ldLibraryPath: process.env.LD_LIBRARY_PATH, ortVersion: ort.env.versions.common });
    } catch (err) {
      report.cudaLibraries = { error: (err as Error).message };
    }
  }
  log(`CUDA libraries: ${JSON.stringify(report.cudaLibraries)}`);
  save();
}

log('building small (fp32, int4, 2 adapters)');
const small = await model('small', ['fp32', 'int4'], 2);
log('models ready');

for (const device of providers) {
  const entry: Record<string, unknown> = {};
  (report.providers as Record<string, unknown>)[device] = entry;
  const problem = await providerWorks(device, small.dirs.int4!);
  if (problem) {
    entry.available = false;
    entry.reason = problem;
    log(`${device}: not available: ${problem}`);
    save();
    continue;
  }
  entry.available = true;
  if (device !== 'cpu' || cpuEquivalence) {
    const eq: Record<string, unknown> = {};
    entry.equivalence = eq;
    for (const quant of ['fp32', 'int4'] as const) {
      eq[quant] = await equivalence(device, small, quant);
      log(`${device}: equivalence ${quant} ${JSON.stringify(eq[quant])}`);
      save();
    }
  }
  const results: unknown[] = [];
  entry.throughput = results;
  for (const k of device === 'webgpu' ? [1] : [1, loopSteps]) {
    for (const r of await throughput(device, small, k)) {
      results.push(r);
      log(`${device}: ${JSON.stringify(r)}`);
    }
    save();
  }
}
report.finishedAt = new Date().toISOString();
save();
log(`wrote ${outFile}`);
