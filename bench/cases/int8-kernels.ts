/**
 * Why int8 is MatMulNBits (8 bits): the int8 formulations ONNX Runtime offers, side by side on this CPU, and what the
 * choice costs against the per-tensor kernel int8 used before.
 *
 *   A. One linear at a time, the model's shapes (fused QKV, O, fused gate/up, down, LM head), summed: time at 1, 16
 *      and 64 rows (round-robin medians); error vs float64 for rows alone and for rows batched beside a row with an
 *      outlier channel; how much a row's output moves between alone and batched.
 *   B. The whole model: int8 now (block 32 and 64), int8 as before (per-tensor activations, bench/lib/per-tensor-int8.ts)
 *      and int4: decode step at batch 1 and 16, prefill, next-token quality vs fp32 (alone and as a batch of 16), and
 *      engine throughput at concurrency 16 (full mode).
 *   C. The int8 kernel check (src/model/quantization/kernel-check.ts) natively and, where valgrind is installed,
 *      on the AVX2-only CPU valgrind shows ORT: error vs the format's bound, and whether u8 x s8 pair sums saturate.
 */
import { execFile } from 'node:child_process';
import path from 'node:path';
import { promisify } from 'node:util';
import * as ort from 'onnxruntime-node';
import { linear } from '../../kernels/linear.ts';
import { MS_DOMAIN, OnnxGraph } from '../../kernels/onnx-graph.ts';
import type { ModelPreset } from '../../src/model/checkpoint/make-model.ts';
import { createPrng } from '../../src/engine/sampler/prng.ts';
import { cpuKernelFeatures } from '../../src/model/cpu-features.ts';
import type { ModelConfig } from '../../src/model/model-config.ts';
import { serializeModel } from '../../src/model/graph/onnx-serialize.ts';
import { quantizeInt8 } from '../../src/model/quantization/int8-block.ts';
import { compareLogits } from '../../src/model/quantization/quality.ts';
import { checkInt8Kernels, type Int8KernelCheck } from '../../src/model/quantization/kernel-check.ts';
import { ThreadExecutor } from '../../src/parallel/thread-executor.ts';
import type { BenchCase, BenchContext, CaseOutput, Cell } from '../lib/bench-case.ts';
import { executorStepCosts, type StepCosts } from '../lib/batching-ceiling.ts';
import { benchPrompts, collectTailLogits, openBenchRunner } from '../lib/model-runs.ts';
import { perChannel, writePerTensorInt8Model } from '../lib/per-tensor-int8.ts';
import { FP32, INT4, INT8, type QuantVariant } from '../lib/quant-variants.ts';
import { median, significant } from '../lib/stats.ts';
import { drive } from './engine.ts';

interface Settings {
  preset: ModelPreset;
  rows: number[];
  rounds: number;
  callsPerRound: number;
  step: { batch: number; promptTokens: number; runs: number };
  quality: { numPrompts: number; promptTokens: number; fromTokens: number };
  engine: { concurrency: number; requests: number; promptTokens: number; outputTokens: number } | null;
  valgrind: boolean;
}

const SETTINGS: Record<'quick' | 'full', Settings> = {
  quick: { preset: 'tiny', rows: [1, 4], rounds: 2, callsPerRound: 5, step: { batch: 4, promptTokens: 16, runs: 3 }, quality: { numPrompts: 4, promptTokens: 24, fromTokens: 16 }, engine: null, valgrind: false },
  full: {
    preset: 'small',
    rows: [1, 16, 64],
    rounds: 7,
    callsPerRound: 20,
    step: { batch: 16, promptTokens: 64, runs: 9 },
    quality: { numPrompts: 16, promptTokens: 64, fromTokens: 56 },
    engine: { concurrency: 16, requests: 32, promptTokens: 64, outputTokens: 64 },
    valgrind: true,
  },
};

const INT8_B64: QuantVariant = { ...INT8, id: 'int8-b64', blockSize: 64 };
const OUTLIER_VALUE = 40;

/** A way to compute y = x W^T in int8, as a one-node-or-more graph over W [N, K] (HF layout). */
interface Formulation {
  id: string;
  build(g: OnnxGraph, x: string, w: Float32Array, N: number, K: number): string;
  sessionOptions?: ort.InferenceSession.SessionOptions;
}

function dynamicQuantizeMatMul(g: OnnxGraph, x: string, w: Float32Array, N: number, K: number): string {
  const q = perChannel(w, N, K);
  return g.op('DynamicQuantizeMatMul', [x, g.initializer('w', 'int8', [K, N], q.weight), g.initializer('s', 'float32', [N], q.scales), g.initializer('z', 'int8', [N], new Int8Array(N))], { domain: MS_DOMAIN });
}

/** Per-row symmetric activations with `levels` codes each side of zero point levels + 1 (uint8), x per-channel int8 W. */
function perRow(levels: number): Formulation['build'] {
  return (g, x, w, N, K) => {
    const q = perChannel(w, N, K);
    const amax = g.op('ReduceMax', [g.op('Abs', [x])], { attrs: { axes: { ints: [-1] }, keepdims: { i: 1 } } });
    const rowScale = g.op('Mul', [g.op('Max', [amax, g.constFloat('tiny', [1e-30])]), g.constFloat('inv_levels', [1 / levels])]);
    const zeroPoint = g.initializer('a_zero_point', 'uint8', [], new Uint8Array([levels + 1]));
    const xq = g.op('QuantizeLinear', [g.op('Div', [x, rowScale]), g.constFloat('one', [1], []), zeroPoint]);
    const y = g.op('MatMulIntegerToFloat', [xq, g.initializer('w', 'int8', [K, N], q.weight), g.constFloat('a_scale', [1], []), g.initializer('s', 'float32', [N], q.scales), zeroPoint], { domain: MS_DOMAIN });
    return g.op('Mul', [y, rowScale]);
  };
}

function matMulNBits8(blockSize: number): Formulation['build'] {
  return (g, x, w, N, K) => {
    const q = quantizeInt8(w, N, K, { blockSize });
    return linear(g, x, 'w', { kind: 'int8', inFeatures: K, outFeatures: N, blockSize, packed: q.packed, scales: q.scales });
  };
}

const FORMULATIONS: Formulation[] = [
  { id: 'per-tensor: DynamicQuantizeMatMul (int8 before)', build: dynamicQuantizeMatMul },
  { id: 'per-tensor + session.x64quantprecision', build: dynamicQuantizeMatMul, sessionOptions: { extra: { session: { x64quantprecision: '1' } } } },
  { id: 'per-row 8-bit: MatMulIntegerToFloat', build: perRow(127) },
  { id: 'per-row 7-bit: MatMulIntegerToFloat', build: perRow(63) },
  { id: 'MatMulNBits 8-bit, block 32 (int8 now)', build: matMulNBits8(32) },
  { id: 'MatMulNBits 8-bit, block 64', build: matMulNBits8(64) },
  { id: 'MatMulNBits 8-bit, block 128', build: matMulNBits8(128) },
];

/** The model's linear shapes [K, N] per layer, and the LM head. */
function linearShapes(c: ModelConfig): Array<[number, number]> {
  const qkv = (c.numHeads + 2 * c.numKvHeads) * c.headDim;
  return [[c.hiddenSize, qkv], [c.numHeads * c.headDim, c.hiddenSize], [c.hiddenSize, 2 * c.intermediateSize], [c.intermediateSize, c.hiddenSize], [c.hiddenSize, c.vocabSize]];
}

function gaussian(count: number, seed: number, scale: number): Float32Array {
  const prng = createPrng(seed);
  return Float32Array.from({ length: count }, () => scale * Math.sqrt(-2 * Math.log(1 - prng.nextFloat())) * Math.cos(2 * Math.PI * prng.nextFloat()));
}

interface FormulationResult {
  id: string;
  msByRows: number[];
  /** RMS error / RMS of the exact output, rows alone. */
  errorAlone: number;
  /** The same for normal rows batched beside a row with an outlier channel. */
  errorBesideOutlier: number;
  /** max |row alone - row batched| / RMS of the exact output. */
  batchDependence: number;
}

async function measureFormulations(ctx: BenchContext, s: Settings, config: ModelConfig): Promise<FormulationResult[]> {
  const shapes = linearShapes(config);
  const times = FORMULATIONS.map(() => s.rows.map(() => [] as number[]));
  // [sum of squared errors, sum of squared exact values]; dependence: [max |alone - batched|, mean square of exact]
  const errors = FORMULATIONS.map(() => ({ alone: [0, 0], beside: [0, 0], dependence: [0, 0] }));
  for (const [shapeIndex, [K, N]] of shapes.entries()) {
    ctx.log(`formulations: linear ${K} x ${N}`);
    const w = gaussian(N * K, 10 + shapeIndex, 0.05);
    const batch = 16;
    const x = gaussian(batch * K, 20 + shapeIndex, 1);
    const withOutlier = x.slice();
    withOutlier[5] = OUTLIER_VALUE; // row 0, one channel
    const exact = (input: Float32Array, row: number) => {
      const y = new Float64Array(N);
      for (let n = 0; n < N; n++) {
        let acc = 0;
        for (let k = 0; k < K; k++) acc += input[row * K + k] * w[n * K + k];
        y[n] = acc;
      }
      return y;
    };
    const reference = Array.from({ length: batch }, (_, r) => exact(x, r));
    const sessions: Array<{ session: ort.InferenceSession; output: string }> = [];
    for (const f of FORMULATIONS) {
      const g = new OnnxGraph('int8_formulation');
      const xi = g.input('x', 'float32', ['rows', K]);
      const y = f.build(g, xi, w, N, K);
      g.output(y, 'float32', ['rows', N]);
      sessions.push({ session: await ort.InferenceSession.create(serializeModel(g, null), { intraOpNumThreads: 2, ...f.sessionOptions }), output: y });
    }
    const runRows = async (i: number, input: Float32Array, rows: number) =>
      (await sessions[i].session.run({ x: new ort.Tensor('float32', input.subarray(0, rows * K), [rows, K]) }))[sessions[i].output].data as Float32Array;
    for (const [i] of FORMULATIONS.entries()) {
      const batched = await runRows(i, withOutlier, batch);
      for (let r = 0; r < batch; r++) {
        const alone = await runRows(i, x.slice(r * K, (r + 1) * K), 1);
        for (let n = 0; n < N; n++) {
          const ref = reference[r][n];
          errors[i].alone[0] += (alone[n] - ref) ** 2;
          errors[i].alone[1] += ref * ref;
          if (r === 0) continue; // the outlier row itself differs from x's row 0
          errors[i].beside[0] += (batched[r * N + n] - ref) ** 2;
          errors[i].beside[1] += ref * ref;
          errors[i].dependence[0] = Math.max(errors[i].dependence[0], Math.abs(batched[r * N + n] - alone[n]));
        }
      }
      errors[i].dependence[1] += errors[i].alone[1] / (batch * N) / shapes.length;
    }
    for (const [j, rows] of s.rows.entries()) {
      const input = gaussian(rows * K, 30 + j, 1);
      for (let round = 0; round < s.rounds; round++) {
        for (let k = 0; k < FORMULATIONS.length; k++) {
          const i = (k + round) % FORMULATIONS.length;
          await runRows(i, input, rows);
          const t0 = performance.now();
          for (let c = 0; c < s.callsPerRound; c++) await runRows(i, input, rows);
          const ms = (performance.now() - t0) / s.callsPerRound;
          if (times[i][j].length <= round) times[i][j].push(0);
          times[i][j][round] += ms;
        }
      }
    }
    for (const { session } of sessions) await session.release();
  }
  return FORMULATIONS.map((f, i) => ({
    id: f.id,
    msByRows: times[i].map(median),
    errorAlone: Math.sqrt(errors[i].alone[0] / errors[i].alone[1]),
    errorBesideOutlier: Math.sqrt(errors[i].beside[0] / errors[i].beside[1]),
    batchDependence: errors[i].dependence[0] / Math.sqrt(errors[i].dependence[1]),
  }));
}

interface ModelVariantResult {
  id: string;
  steps: StepCosts[];
  /** Quality vs fp32 with all prompts batched in every step, and with each prompt alone. */
  qualityBatched: { top1: number; kl: number };
  qualityAlone: { top1: number; kl: number };
  engineTokensPerSecond: number | null;
  ttftP50Ms: number | null;
}

async function measureModels(ctx: BenchContext, s: Settings): Promise<ModelVariantResult[]> {
  const fp32 = await ctx.models.converted(s.preset, FP32);
  const int8 = await ctx.models.converted(s.preset, INT8);
  const perTensorDir = path.join(path.dirname(int8.dir), 'int8-per-tensor-before');
  ctx.log('writing the per-tensor (before) int8 model');
  writePerTensorInt8Model(int8.dir, perTensorDir);
  const models: Array<{ id: string; dir: string }> = [
    { id: 'int8 now (MatMulNBits, block 32)', dir: int8.dir },
    { id: 'int8 block 64', dir: (await ctx.models.converted(s.preset, INT8_B64)).dir },
    { id: 'int8 before (per-tensor DynamicQuantizeMatMul)', dir: perTensorDir },
    { id: 'int4 block 32 (default)', dir: (await ctx.models.converted(s.preset, INT4)).dir },
  ];
  const q = s.quality;
  const config = int8.manifest.config;
  const prompts = benchPrompts({ numPrompts: q.numPrompts, lengthTokens: q.promptTokens, vocabSize: config.vocabSize });
  const logitsOf = async (dir: string, together: boolean) => {
    const runner = await openBenchRunner(dir, { maxSequences: q.numPrompts, maxSequenceTokens: q.promptTokens });
    try {
      if (together) return await collectTailLogits(runner, prompts, q.fromTokens);
      const parts = [];
      for (const p of prompts) parts.push(await collectTailLogits(runner, [p], q.fromTokens));
      const out = new Float32Array(parts.reduce((a, b) => a + b.length, 0));
      let at = 0;
      for (const part of parts) {
        out.set(part, at);
        at += part.length;
      }
      return out;
    } finally {
      await runner.release();
    }
  };
  ctx.log('quality reference (fp32)');
  const reference = await logitsOf(fp32.dir, false);
  const results: ModelVariantResult[] = [];
  for (const m of models) {
    ctx.log(`quality: ${m.id}`);
    const batched = compareLogits(reference, await logitsOf(m.dir, true), config.vocabSize);
    const alone = compareLogits(reference, await logitsOf(m.dir, false), config.vocabSize);
    results.push({ id: m.id, steps: [], qualityBatched: { top1: batched.top1Agreement, kl: batched.meanKl }, qualityAlone: { top1: alone.top1Agreement, kl: alone.meanKl }, engineTokensPerSecond: null, ttftP50Ms: null });
  }
  const executors = [];
  for (const m of models) executors.push(await ThreadExecutor.start({ modelDir: m.dir, kvCacheBytes: 512 << 20, blockSizeTokens: 16, numAdapterSlots: 1, maxAdapterRank: 8 }));
  try {
    for (let round = 0; round < Math.min(3, s.rounds); round++) {
      for (let k = 0; k < models.length; k++) {
        const i = (k + round) % models.length;
        ctx.log(`step costs, round ${round + 1}: ${models[i].id}`);
        results[i].steps.push(await executorStepCosts(executors[i], s.step));
      }
    }
    if (s.engine) {
      const e = s.engine;
      const tps = models.map(() => [] as number[]);
      const ttft = models.map(() => [] as number[]);
      for (let round = 0; round < 2; round++) {
        for (let k = 0; k < models.length; k++) {
          const i = (k + round) % models.length;
          ctx.log(`engine at concurrency ${e.concurrency}, round ${round + 1}: ${models[i].id}`);
          const r = await drive(executors[i], e, e.requests, e.concurrency);
          tps[i].push((r.generatedTokens * 1000) / r.wallMs);
          ttft[i].push(median(r.ttftMs));
        }
      }
      models.forEach((_, i) => {
        results[i].engineTokensPerSecond = Math.max(...tps[i]);
        results[i].ttftP50Ms = median(ttft[i]);
      });
    }
  } finally {
    for (const e of executors) await e.shutdown();
  }
  return results;
}

async function kernelChecks(s: Settings): Promise<Array<{ where: string; check: Int8KernelCheck }>> {
  const out = [{ where: `native (${cpuKernelFeatures().int8Class})`, check: await checkInt8Kernels() }];
  if (!s.valgrind) return out;
  try {
    const { stdout } = await promisify(execFile)('valgrind', ['--tool=none', '--quiet', process.execPath, 'bin/run-ts.mjs', 'scripts/kernel-check.ts'], { maxBuffer: 1 << 20 });
    const { check } = JSON.parse(stdout.trim().split('\n').at(-1)!) as { check: Int8KernelCheck };
    out.push({ where: 'valgrind (an AVX2-only CPU to ORT)', check });
  } catch {
    // no valgrind: the native row is all this machine can say
  }
  return out;
}

async function run(ctx: BenchContext): Promise<CaseOutput> {
  const s = SETTINGS[ctx.mode];
  const config = (await ctx.models.converted(s.preset, INT8)).manifest.config;
  const formulations = await measureFormulations(ctx, s, config);
  const models = await measureModels(ctx, s);
  const checks = await kernelChecks(s);
  const nowIndex = models.findIndex((m) => m.id.startsWith('int8 now'));
  const beforeIndex = models.findIndex((m) => m.id.startsWith('int8 before'));
  const stepMedian = (m: ModelVariantResult, key: keyof StepCosts) => median(m.steps.map((c) => c[key]));
  const e = s.engine;
  return {
    tables: [
      {
        title: `Int8 formulations, one linear at a time (${s.preset} shapes: QKV, O, gate/up, down, LM head, summed)`,
        columns: ['formulation', ...s.rows.map((r) => `ms @ ${r} row${r > 1 ? 's' : ''}`), 'rel. error alone', 'rel. error beside an outlier row', 'batch dependence'],
        rows: formulations.map((f) => [f.id, ...f.msByRows.map((v) => significant(v)), significant(f.errorAlone, 3), significant(f.errorBesideOutlier, 3), significant(f.batchDependence, 2)]),
        notes: [
          'rel. error = RMS(y - y_exact) / RMS(y_exact), y_exact in float64 from the unquantized weights; "beside an outlier row" = the other 15 rows of a batch of 16 whose row 0 has one channel at ' + OUTLIER_VALUE + ' (the rest ~N(0, 1))',
          'batch dependence = max |row alone - the same row in that batch| / RMS(y_exact): 0 when a row is computed from its own inputs only',
          `ms = median over ${s.rounds} round-robin rounds of ${s.callsPerRound} calls, 2 threads`,
        ],
      },
      {
        title: `The whole model (${s.preset}): int8 now vs before vs int4`,
        columns: ['model', `prefill ${s.step.promptTokens} ms`, 'decode B=1 ms', `decode B=${s.step.batch} ms`, 'top-1 alone', 'KL alone', `top-1 batched (${s.quality.numPrompts})`, `KL batched (${s.quality.numPrompts})`, ...(e ? [`tok/s at ${e.concurrency} streams`, 'TTFT p50 ms'] : [])],
        rows: models.map((m): Cell[] => [
          m.id,
          significant(stepMedian(m, 'prefillMs')),
          significant(stepMedian(m, 'decode1Ms')),
          significant(stepMedian(m, 'decodeBatchMs')),
          significant(m.qualityAlone.top1, 4),
          significant(m.qualityAlone.kl, 3),
          significant(m.qualityBatched.top1, 4),
          significant(m.qualityBatched.kl, 3),
          ...(e ? [m.engineTokensPerSecond === null ? null : significant(m.engineTokensPerSecond), m.ttftP50Ms === null ? null : significant(m.ttftP50Ms)] : []),
        ]),
        notes: [
          `quality: next-token top-1 agreement and mean KL(fp32 || model) over ${s.quality.numPrompts} prompts x ${s.quality.promptTokens - s.quality.fromTokens} positions; "alone" = one prompt per step, "batched" = all prompts in every step (the engine's normal case)`,
          'int8 before = the same int8 model with each MatMulNBits replaced by DynamicQuantizeMatMul over per-channel weights (bench/lib/per-tensor-int8.ts): one activation scale per step for all rows',
          `step times: medians of 3 round-robin rounds of ${s.step.runs} runs${e ? `; engine: ${e.requests} requests of ${e.promptTokens} prompt + ${e.outputTokens} greedy tokens at concurrency ${e.concurrency}, best of 2 round-robin runs` : ''}`,
        ],
      },
      {
        title: 'The int8 kernel check on this machine (src/model/quantization/kernel-check.ts)',
        columns: ['where', 'int8 error / format bound', 'RMS error / expected', 'batch dependence', 'u8 x s8 pair sums saturate', 'u8 x s8 deviation'],
        rows: checks.map((c) => [c.where, significant(c.check.errorToBound, 3), significant(c.check.rmsRatio, 3), c.check.batchDiff, c.check.u8s8Saturates ? 'yes' : 'no', significant(c.check.u8s8Deviation, 2)]),
        notes: ['valgrind emulates no AVX-512 and no VNNI, so ORT runs its AVX2 kernels: the class of CPUs whose u8 x s8 kernels saturate (the control column)'],
      },
    ],
    summary: [
      {
        metric: `int8 now vs before (${s.preset}): decode B=${s.step.batch} step${e ? `, tok/s at ${e.concurrency} streams` : ''}`,
        value: `${significant(stepMedian(models[nowIndex], 'decodeBatchMs'))} vs ${significant(stepMedian(models[beforeIndex], 'decodeBatchMs'))} ms${e ? `; ${significant(models[nowIndex].engineTokensPerSecond!)} vs ${significant(models[beforeIndex].engineTokensPerSecond!)} tok/s` : ''}`,
      },
      {
        metric: `int8 quality vs fp32, batched (${s.preset})`,
        value: `now top-1 ${significant(models[nowIndex].qualityBatched.top1, 3)}, KL ${significant(models[nowIndex].qualityBatched.kl, 3)}; before top-1 ${significant(models[beforeIndex].qualityBatched.top1, 3)}, KL ${significant(models[beforeIndex].qualityBatched.kl, 3)}`,
      },
    ],
    data: { preset: s.preset, settings: { ...s }, formulations, models, checks },
  };
}

const benchCase: BenchCase = {
  name: 'int8-kernels',
  description: 'int8 formulations side by side (speed, error, batch dependence), int8 now vs before vs int4 on the whole model, and the int8 kernel check natively and on an AVX2-only CPU (valgrind)',
  run,
};

export default benchCase;
