/**
 * The GPU device check (`npm run device-check`, or scripts/device-check.sh on a machine without network): for each GPU
 * execution provider that works here, (1) the correctness check of the device path against the CPU path on the tiny
 * model, (2) the decode throughput benchmark on the `small` model (SmolLM-135M shape) in int4 for 1, 16 and 64 streams,
 * base model and 8 adapters, and writes everything as JSON to `--out` (default bench/results/device-check.json).
 * WebGPU runs DeviceKvRunner (cache and adapter stacks on the device); CUDA runs ModelRunner (host cache, every input
 * copied each step: onnxruntime-node has no IO binding). CPU is measured alongside as the baseline.
 */
import * as ort from 'onnxruntime-node';
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { mkdtempSync } from 'node:fs';
import { readPeftAdapter } from '../src/adapters/peft/peft-adapter.ts';
import type { SequenceWork, StepResult } from '../src/engine/executor.ts';
import { makeModel } from '../src/model/checkpoint/make-model.ts';
import { convertCheckpoint } from '../src/model/convert/convert-checkpoint.ts';
import type { QuantKind } from '../src/model/converted-model.ts';
import type { LoraWeights } from '../src/model/runner/adapter-slot-stacks.ts';
import { DeviceKvRunner } from '../src/model/runner/device-kv-runner.ts';
import { ModelRunner, type Device } from '../src/model/runner/model-runner.ts';
import { LoopDecodeRunner } from '../src/model/runner/loop-decode-runner.ts';

interface Runner {
  execute(plan: { stepId: number; sequences: SequenceWork[]; decodeSteps?: number }): Promise<StepResult>;
  release(): Promise<void>;
}

const args = process.argv.slice(2);
const flag = (name: string, fallback: string) => {
  const at = args.indexOf(name);
  return at >= 0 ? args[at + 1] : fallback;
};
const outFile = flag('--out', 'bench/results/device-check.json');
const providers = flag('--providers', 'webgpu,cuda,cpu').split(',') as Device[];
const streamCounts = flag('--streams', '1,16,64').split(',').map(Number);
const decodeSteps = Number(flag('--steps', '16'));
const promptTokens = Number(flag('--prompt', '64'));
/** k of the Loop runner's throughput rows (k decode steps per session.run; docs/gpu.md), measured for cuda and cpu. */
const loopSteps = Number(flag('--loop-steps', '8'));
const BLOCK = 16;
ort.env.logLevel = 'error'; // placement notes about shape ops on CPU are expected (docs/gpu.md)

const root = mkdtempSync(join(tmpdir(), 'tessera-device-check-'));
const log = (msg: string) => console.log(`[device-check ${(performance.now() / 1000).toFixed(1)}s] ${msg}`);

async function model(preset: 'tiny' | 'small', quant: QuantKind, numAdapters: number) {
  const hf = await makeModel({ preset, outDir: join(root, `${preset}-hf`), numAdapters, seed: 0 });
  const dir = join(root, `${preset}-${quant}`);
  await convertCheckpoint({ hfDir: hf.outDir, outDir: dir, quant });
  return { hf, dir, adapters: hf.adapterDirs.map((d) => readPeftAdapter(d, hf.config)) as LoraWeights[] };
}

async function open(device: Device, modelDir: string, kvCacheBytes: number, slots: number, rank: number, loop = false): Promise<Runner & { load(slot: number, w: LoraWeights): Promise<void> }> {
  const options = { modelDir, kvCacheBytes, blockSizeTokens: BLOCK, numAdapterSlots: slots, maxAdapterRank: rank };
  if (loop) {
    const r = await LoopDecodeRunner.create({ ...options, device });
    return { execute: (p) => r.execute(p), release: () => r.release(), load: async (s, w) => r.loadAdapterSlot(s, w) };
  }
  if (device === 'webgpu') {
    const r = await DeviceKvRunner.create({ ...options, device });
    return { execute: (p) => r.execute(p), release: () => r.release(), load: (s, w) => r.loadAdapterSlot(s, w) };
  }
  const r = await ModelRunner.create({ ...options, device });
  return { execute: (p) => r.execute(p), release: () => r.release(), load: async (s, w) => r.loadAdapterSlot(s, w) };
}

function argmax(row: Float32Array): number {
  let best = 0;
  for (let i = 1; i < row.length; i++) if (row[i] > row[best]) best = i;
  return best;
}

/** Greedy decoding of 3 rows (base, adapter 1, adapter 2) on `device` vs the CPU ModelRunner, fed the CPU's tokens. */
async function equivalence(device: Device, tiny: Awaited<ReturnType<typeof model>>) {
  const vocab = tiny.hf.config.vocabSize;
  const ref = await open('cpu', tiny.dir, 8 << 20, 3, 16);
  const dev = await open(device, tiny.dir, 8 << 20, 3, 16);
  for (const r of [ref, dev]) for (let s = 1; s <= 2; s++) await r.load(s, tiny.adapters[(s - 1) % tiny.adapters.length]);
  const prompts = [[3, 17, 42, 5, 99, 7, 250, 11, 64], [1, 2, 3, 4, 5], [200, 201, 202]];
  const pos = prompts.map(() => 0);
  const next = prompts.map(() => 0);
  let worst = 0;
  let sameTokens = 0;
  let rows = 0;
  for (let step = 0; step < 8; step++) {
    const sequences = prompts.map((p, i) => ({ seqId: i, tokenIds: step === 0 ? p : [next[i]], startPosition: pos[i], blockTable: [i * 4, i * 4 + 1], adapterSlot: i, sampleNext: true }));
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
      if (argmax(got) === next[seq.seqId]) sameTokens++;
      rows++;
    }
  }
  await ref.release();
  await dev.release();
  return { rows, sameGreedyTokens: sameTokens, maxAbsLogitDiff: worst };
}

/**
 * Decode tokens/s at `streams` rows after a prefill of `promptTokens` each; adapters cycle over slots 1..8 when used.
 * `k` > 1: the Loop runner, k greedy decode steps per session.run (sampled in the graph), timed per run / k.
 */
async function throughput(device: Device, small: Awaited<ReturnType<typeof model>>, streams: number, withAdapters: boolean, k = 1) {
  // k > 1: enough runs that two can be dropped as warm-up and at least two are timed.
  const runs = k > 1 ? Math.max(4, Math.ceil(decodeSteps / k) + 2) : decodeSteps;
  const blocksPerRow = Math.ceil((promptTokens + runs * k + 1) / BLOCK);
  const kvBytes = streams * blocksPerRow * 2 * small.hf.config.numLayers * small.hf.config.numKvHeads * BLOCK * small.hf.config.headDim * 4;
  const runner = await open(device, small.dir, kvBytes, 9, 16, k > 1);
  if (withAdapters) for (let s = 1; s <= 8; s++) await runner.load(s, small.adapters[(s - 1) % small.adapters.length]);
  const vocab = small.hf.config.vocabSize;
  const rows = Array.from({ length: streams }, (_, i) => ({
    seqId: i,
    table: Array.from({ length: blocksPerRow }, (_, j) => i * blocksPerRow + j),
    slot: withAdapters ? 1 + (i % 8) : 0,
    pos: 0,
    next: 0,
  }));
  const prefillStart = performance.now();
  // Prefill in groups of 16 rows so a 64-stream prefill does not need one huge attention bias.
  for (let g = 0; g < streams; g += 16) {
    const group = rows.slice(g, g + 16);
    const res = await runner.execute({
      stepId: g,
      sequences: group.map((r) => ({ seqId: r.seqId, tokenIds: Array.from({ length: promptTokens }, (_, t) => (t * 31 + r.seqId * 7 + 5) % vocab), startPosition: 0, blockTable: r.table, adapterSlot: r.slot, sampleNext: true })),
    });
    for (const o of res.outcomes) {
      const r = rows[o.seqId];
      r.pos = promptTokens;
      r.next = argmax(res.logits.subarray(o.logitsRow * vocab, (o.logitsRow + 1) * vocab));
    }
  }
  const prefillMs = performance.now() - prefillStart;
  const stepMs: number[] = [];
  for (let step = 0; step < runs; step++) {
    const t = performance.now();
    const sequences = rows.map((r) => ({ seqId: r.seqId, tokenIds: [r.next], startPosition: r.pos, blockTable: r.table, adapterSlot: r.slot, sampleNext: true, ...(k > 1 ? { loopSampling: { temperature: 0, topK: 0, seed: 0 } } : {}) }));
    const res = await runner.execute({ stepId: 1000 + step, sequences, ...(k > 1 ? { decodeSteps: k } : {}) });
    stepMs.push((performance.now() - t) / k);
    for (const o of res.outcomes) {
      const r = rows[o.seqId];
      r.pos += k;
      r.next = o.kind === 'sampled' ? res.sampledTokens!.tokenIds[o.sampledRow * k + k - 1] : argmax(res.logits.subarray(o.logitsRow * vocab, (o.logitsRow + 1) * vocab));
    }
  }
  await runner.release();
  const steady = stepMs.slice(2); // the first steps compile shaders / warm caches
  const meanMs = steady.reduce((a, b) => a + b, 0) / steady.length;
  return { streams, adapters: withAdapters ? 8 : 0, decodeStepsPerRun: k, promptTokens, decodeSteps: runs * k, prefillMs, firstStepMs: stepMs[0], meanStepMs: meanMs, tokensPerSecond: (streams * 1000) / meanMs };
}

async function providerWorks(device: Device, tinyDir: string): Promise<string | null> {
  try {
    const r = await open(device, tinyDir, 1 << 20, 2, 16);
    await r.release();
    return null;
  } catch (err) {
    return (err as Error).message.split('\n')[0];
  }
}

const report: Record<string, unknown> = {
  startedAt: new Date().toISOString(),
  onnxruntimeBackends: ort.listSupportedBackends(),
  cpuCores: cpus().length,
  cpuModel: cpus()[0]?.model,
  env: { VK_DRIVER_FILES: process.env.VK_DRIVER_FILES ?? null, VK_ICD_FILENAMES: process.env.VK_ICD_FILENAMES ?? null },
  providers: {},
};
const save = () => {
  mkdirSync(dirname(outFile), { recursive: true });
  writeFileSync(outFile, JSON.stringify(report, null, 2));
};

log('building the tiny (fp32, int4) and small (int4) models');
const tinyFp32 = await model('tiny', 'fp32', 2);
const tinyInt4 = { ...tinyFp32, dir: join(root, 'tiny-int4') };
await convertCheckpoint({ hfDir: tinyFp32.hf.outDir, outDir: tinyInt4.dir, quant: 'int4' });
const small = await model('small', 'int4', 2);
log('models ready');

for (const device of providers) {
  const entry: Record<string, unknown> = {};
  (report.providers as Record<string, unknown>)[device] = entry;
  const problem = await providerWorks(device, tinyFp32.dir);
  if (problem) {
    entry.available = false;
    entry.reason = problem;
    log(`${device}: not available: ${problem}`);
    save();
    continue;
  }
  entry.available = true;
  if (device !== 'cpu') {
    entry.equivalence = { fp32: await equivalence(device, tinyFp32), int4: await equivalence(device, tinyInt4) };
    log(`${device}: equivalence ${JSON.stringify(entry.equivalence)}`);
  }
  const results: unknown[] = [];
  entry.throughput = results;
  for (const streams of device === 'cpu' ? streamCounts.filter((s) => s <= 16) : streamCounts) {
    for (const withAdapters of [false, true]) {
      const r = await throughput(device, small, streams, withAdapters);
      results.push(r);
      log(`${device}: ${JSON.stringify(r)}`);
      save();
    }
    if (loopSteps > 1 && device !== 'webgpu') {
      const r = await throughput(device, small, streams, false, loopSteps);
      results.push(r);
      log(`${device}: ${JSON.stringify(r)}`);
      save();
    }
  }
  save();
}
report.finishedAt = new Date().toISOString();
save();
log(`wrote ${outFile}`);
