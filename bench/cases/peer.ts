/**
 * Tessera next to llama.cpp (node-llama-cpp 3.21.1, installed by this case into bench/peer) on the same checkpoint,
 * the same token ids and the same workload: N streams (closed loop) x 32 prompt tokens x 64 greedy tokens, N = 1, 4,
 * 16, 2 threads each side.
 *   - Tessera: a real `tessera serve` process per weight format (int4, int8), measured over gRPC by the load
 *     generator's client (streaming), as a user would run it.
 *   - llama.cpp: the bench checkpoint written as GGUF F16, Q8_0 and Q4_0 (bench/lib/gguf), one context with a
 *     sequence per stream, in this process (node-llama-cpp batches the streams' tokens into shared decode calls).
 * All systems stay loaded and take turns, in a rotating order, at each N of each round, so a shared machine's load
 * hits them alike; throughput is the best round, latency percentiles pool the rounds. A quality table puts the
 * next-token KL vs fp32 (Tessera's fp32 model, which matches kernels/reference) of llama.cpp's formats next to
 * Tessera's, on the same prompts and positions.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { openCheckpoint } from '../../src/model/checkpoint/checkpoint.ts';
import type { ModelPreset } from '../../src/model/checkpoint/make-model.ts';
import { compareLogits } from '../../src/model/quantization/quality.ts';
import type { BenchCase, BenchContext, CaseOutput, Cell, SummaryRow } from '../lib/bench-case.ts';
import { requestLatencies, runClosedLoop, type Generate, type LoopResult } from '../lib/closed-loop.ts';
import type { GgmlTypeName } from '../lib/gguf/gguf-format.ts';
import { writeLlamaGguf } from '../lib/gguf/llama-gguf.ts';
import { nextTokenLogProbs } from '../lib/llama-peer/llama-quality.ts';
import { openLlamaStreams } from '../lib/llama-peer/llama-streams.ts';
import { ensurePeerInstalled, loadLlama, NODE_LLAMA_CPP_VERSION, PEER_DIR, type Llama, type LlamaModel } from '../lib/llama-peer/node-llama-cpp.ts';
import { benchPrompts, collectTailLogits, openBenchRunner } from '../lib/model-runs.ts';
import { FP32, INT4, INT8, type QuantVariant } from '../lib/quant-variants.ts';
import { MIB, significant } from '../lib/stats.ts';
import { startTesseraServer, type TesseraServer } from '../lib/tessera-server.ts';

interface Settings {
  preset: ModelPreset;
  tessera: QuantVariant[];
  /** Formats also served with the ORT intra-op threads sleeping between kernels (`--thread-spinning false`), beside the default. */
  sleeping: QuantVariant[];
  llama: GgmlTypeName[];
  streams: number[];
  requests: (streams: number) => number;
  rounds: number;
  promptTokens: number;
  outputTokens: number;
  threads: number;
  quality: { numPrompts: number; promptTokens: number; fromTokens: number };
}

const SETTINGS: Record<'quick' | 'full', Settings> = {
  quick: { preset: 'tiny', tessera: [INT4, INT8], sleeping: [], llama: ['F16', 'Q8_0', 'Q4_0'], streams: [1, 4], requests: (n) => Math.max(2, n), rounds: 1, promptTokens: 32, outputTokens: 64, threads: 2, quality: { numPrompts: 2, promptTokens: 48, fromTokens: 32 } },
  full: { preset: 'small', tessera: [INT4, INT8], sleeping: [INT4], llama: ['F16', 'Q8_0', 'Q4_0'], streams: [1, 4, 16], requests: (n) => Math.max(3, n), rounds: 2, promptTokens: 32, outputTokens: 64, threads: 2, quality: { numPrompts: 4, promptTokens: 64, fromTokens: 32 } },
};

interface System {
  id: string;
  side: 'Tessera' | 'llama.cpp';
  weights: string;
  /** A serving setting that differs from the default, e.g. 'threads spin'. */
  setting?: string;
  weightsBytes: number;
  /** Generator for `numStreams` streams, and how to release what it opened. */
  open(numStreams: number, outputTokens: number): Promise<{ generate: Generate; close(): Promise<void> }>;
}

interface Runs {
  system: System;
  /** Per N, one loop result per round. */
  byStreams: Map<number, LoopResult[]>;
}

function rotate<T>(xs: readonly T[], by: number): T[] {
  return xs.map((_, i) => xs[(i + by) % xs.length]);
}

async function tesseraSystem(ctx: BenchContext, s: Settings, variant: QuantVariant, cleanups: Array<() => Promise<void>>, sleeping = false): Promise<System> {
  const model = await ctx.models.converted(s.preset, variant);
  const args = sleeping ? ['--thread-spinning', 'false'] : [];
  ctx.log(`starting tessera serve on ${variant.id} (--threads ${s.threads} ${args.join(' ')})`);
  const server: TesseraServer = await startTesseraServer(model.dir, { threads: s.threads, args });
  cleanups.push(() => server.close());
  return {
    id: `tessera-${variant.id}${sleeping ? '-threads-sleep' : ''}`,
    side: 'Tessera',
    weights: variant.id,
    ...(sleeping ? { setting: 'threads sleep' } : {}),
    weightsBytes: fs.statSync(path.join(model.dir, model.manifest.weightsFile)).size,
    open: async (_n, outputTokens) => ({ generate: server.generate(outputTokens), close: async () => {} }),
  };
}

async function llamaSystem(s: Settings, model: LlamaModel, type: GgmlTypeName, file: string): Promise<System> {
  return {
    id: `llama.cpp-${type}`,
    side: 'llama.cpp',
    weights: type,
    weightsBytes: fs.statSync(file).size,
    open: (numStreams, outputTokens) => openLlamaStreams(model, { numStreams, tokensPerStream: s.promptTokens + outputTokens, threads: s.threads, outputTokens }),
  };
}

async function measure(ctx: BenchContext, s: Settings, systems: System[], vocabSize: number): Promise<Runs[]> {
  const runs: Runs[] = systems.map((system) => ({ system, byStreams: new Map() }));
  const maxStreams = Math.max(...s.streams);
  ctx.log(`warm-up: ${maxStreams} streams x 8 tokens on each system`);
  for (const system of systems) {
    const g = await system.open(maxStreams, 8);
    try {
      await runClosedLoop(benchPrompts({ numPrompts: maxStreams, lengthTokens: s.promptTokens, vocabSize, seed: 99 }), maxStreams, g.generate);
    } finally {
      await g.close();
    }
  }
  let turn = 0;
  for (let round = 0; round < s.rounds; round++) {
    for (const n of s.streams) {
      const prompts = benchPrompts({ numPrompts: s.requests(n), lengthTokens: s.promptTokens, vocabSize, seed: 1 + round * 100 + n });
      for (const r of rotate(runs, turn++)) {
        const g = await r.system.open(n, s.outputTokens);
        try {
          const result = await runClosedLoop(prompts, n, g.generate);
          ctx.log(`round ${round + 1}/${s.rounds}, ${n} streams, ${r.system.id}: ${significant(result.tokensPerS)} tok/s`);
          r.byStreams.set(n, [...(r.byStreams.get(n) ?? []), result]);
        } finally {
          await g.close();
        }
      }
    }
  }
  return runs;
}

interface QualityRow {
  system: System;
  meanKl: number;
  klStandardError: number;
  top1Agreement: number;
}

async function measureQuality(ctx: BenchContext, s: Settings, systems: System[], llama: Llama, ggufFiles: Map<string, string>, vocab: number, promptVocab: number): Promise<QualityRow[]> {
  const q = s.quality;
  const prompts = benchPrompts({ numPrompts: q.numPrompts, lengthTokens: q.promptTokens, vocabSize: promptVocab, seed: 7 });
  const tessera = async (variant: QuantVariant) => {
    const model = await ctx.models.converted(s.preset, variant);
    const runner = await openBenchRunner(model.dir, { maxSequences: prompts.length, maxSequenceTokens: q.promptTokens, intraOpThreads: s.threads });
    try {
      return await collectTailLogits(runner, prompts, q.fromTokens);
    } finally {
      await runner.release();
    }
  };
  ctx.log(`quality: ${q.numPrompts} prompts x ${q.promptTokens - q.fromTokens} positions, reference = Tessera fp32`);
  const reference = await tessera(FP32);
  const rows: QualityRow[] = [];
  for (const system of systems) {
    const got = system.side === 'Tessera' ? await tessera(s.tessera.find((v) => v.id === system.weights)!) : await nextTokenLogProbs(llama, ggufFiles.get(system.weights)!, prompts, q.fromTokens, { vocabSize: vocab, threads: s.threads });
    const positions = got.length / vocab;
    const perPosition = Array.from({ length: positions }, (_, p) => compareLogits(reference.subarray(p * vocab, (p + 1) * vocab), got.subarray(p * vocab, (p + 1) * vocab), vocab).meanKl);
    const all = compareLogits(reference, got, vocab);
    const mean = all.meanKl;
    const variance = perPosition.reduce((a, x) => a + (x - mean) ** 2, 0) / Math.max(1, positions - 1);
    rows.push({ system, meanKl: mean, klStandardError: Math.sqrt(variance / positions), top1Agreement: all.top1Agreement });
  }
  return rows;
}

function bestRound(results: LoopResult[]): LoopResult {
  return results.reduce((a, b) => (b.tokensPerS > a.tokensPerS ? b : a));
}

async function run(ctx: BenchContext): Promise<CaseOutput> {
  const s = SETTINGS[ctx.mode];
  ensurePeerInstalled(ctx.log);
  const hfDir = await ctx.models.checkpoint(s.preset);
  const checkpoint = openCheckpoint(hfDir);
  checkpoint.tensors.close();
  const vocab = checkpoint.config.vocabSize;
  // Prompt ids from the tokenizer's own tokens (not the padding ids past it), the same ids on both sides.
  const promptVocab = checkpoint.tokenizer?.vocabSize ?? vocab;

  const ggufDir = fs.mkdtempSync(path.join(os.tmpdir(), 'tessera-peer-gguf-'));
  const cleanups: Array<() => Promise<void>> = [];
  const serverCleanups: Array<() => Promise<void>> = [];
  const ggufFiles = new Map<string, string>();
  const ggufWriteMs: Record<string, number> = {};
  try {
    for (const type of s.llama) {
      const file = path.join(ggufDir, `${s.preset}-${type}.gguf`);
      const t0 = performance.now();
      writeLlamaGguf({ hfDir, outFile: file, type });
      ggufWriteMs[type] = performance.now() - t0;
      ggufFiles.set(type, file);
      ctx.log(`wrote ${path.basename(file)} (${significant(fs.statSync(file).size / MIB)} MiB) in ${significant(ggufWriteMs[type] / 1000)} s`);
    }
    const llama = await loadLlama({ maxThreads: s.threads });
    cleanups.push(() => llama.dispose());
    const systems: System[] = [];
    for (const variant of s.tessera) systems.push(await tesseraSystem(ctx, s, variant, serverCleanups));
    for (const variant of s.sleeping) systems.push(await tesseraSystem(ctx, s, variant, serverCleanups, true));
    for (const type of s.llama) {
      const model = await llama.loadModel({ modelPath: ggufFiles.get(type)!, gpuLayers: 0 });
      cleanups.push(() => model.dispose());
      systems.push(await llamaSystem(s, model, type, ggufFiles.get(type)!));
    }

    const runs = await measure(ctx, s, systems, promptVocab);
    for (const c of serverCleanups.splice(0)) await c(); // free the servers' memory for the quality runs
    // A serving setting changes no weights: one quality row per format.
    const quality = await measureQuality(ctx, s, systems.filter((sys) => sys.setting === undefined), llama, ggufFiles, vocab, promptVocab);
    return output(s, runs, quality, { llamaBuild: llama.buildType, ggufWriteMs });
  } finally {
    for (const c of [...serverCleanups, ...cleanups.reverse()]) await c().catch(() => {});
    fs.rmSync(ggufDir, { recursive: true, force: true });
  }
}

function output(s: Settings, runs: Runs[], quality: QualityRow[], extra: Record<string, unknown>): CaseOutput {
  const label = (sys: System) => `${sys.side} ${sys.weights}${sys.setting ? ` (${sys.setting})` : ''}`;
  const bestOf = (side: System['side'], n: number) =>
    runs
      .filter((r) => r.system.side === side && r.system.setting === undefined) // the ratios are of the serving default
      .map((r) => ({ system: r.system, best: bestRound(r.byStreams.get(n)!), all: r.byStreams.get(n)! }))
      .reduce((a, b) => (b.best.tokensPerS > a.best.tokensPerS ? b : a));

  const throughputRows: Cell[][] = s.streams.map((n) => {
    const t = bestOf('Tessera', n);
    const l = bestOf('llama.cpp', n);
    return [n, ...runs.map((r) => significant(bestRound(r.byStreams.get(n)!).tokensPerS)), significant(t.best.tokensPerS / l.best.tokensPerS), `${t.system.weights} / ${l.system.weights}`];
  });

  const latencyRows: Cell[][] = [];
  for (const n of s.streams) {
    const llamaBest = bestOf('llama.cpp', n).best.tokensPerS;
    for (const r of runs) {
      const results = r.byStreams.get(n)!;
      const { ttftMs, tpotMs } = requestLatencies(results.flatMap((x) => x.requests));
      latencyRows.push([
        label(r.system),
        n,
        significant(bestRound(results).tokensPerS),
        significant(bestRound(results).tokensPerS / llamaBest),
        significant(ttftMs!.p50),
        significant(ttftMs!.p90),
        significant(ttftMs!.p99),
        significant(tpotMs!.p50),
        significant(tpotMs!.p90),
        significant(tpotMs!.p99),
      ]);
    }
  }

  const qualityRows: Cell[][] = quality.map((q) => [label(q.system), significant(q.system.weightsBytes / MIB), significant(q.meanKl), significant(q.klStandardError, 2), significant(q.top1Agreement, 3)]);

  const summary: SummaryRow[] = [];
  for (const n of [s.streams[0], s.streams.at(-1)!]) {
    const t = bestOf('Tessera', n);
    const l = bestOf('llama.cpp', n);
    const tl = requestLatencies(t.all.flatMap((x) => x.requests));
    const ll = requestLatencies(l.all.flatMap((x) => x.requests));
    summary.push({
      metric: `${s.preset}, ${n} stream${n > 1 ? 's' : ''} x ${s.promptTokens}+${s.outputTokens} tokens: Tessera / llama.cpp ${NODE_LLAMA_CPP_VERSION} (best of each, ${s.threads} threads)`,
      value: `${significant(t.best.tokensPerS / l.best.tokensPerS)}x (${significant(t.best.tokensPerS)} tok/s ${t.system.weights} vs ${significant(l.best.tokensPerS)} ${l.system.weights}); TTFT p50 ${significant(tl.ttftMs!.p50)} vs ${significant(ll.ttftMs!.p50)} ms`,
    });
  }
  summary.push({
    metric: `${s.preset}: next-token KL vs fp32 (nats)`,
    value: quality.map((q) => `${label(q.system)} ${significant(q.meanKl, 2)}`).join(', '),
  });

  const data: Record<string, unknown> = {
    ...extra,
    nodeLlamaCpp: NODE_LLAMA_CPP_VERSION,
    llamaCppRelease: llamaCppRelease(),
    settings: { ...s, requests: s.streams.map((n) => ({ streams: n, requests: s.requests(n) })), tessera: s.tessera.map((v) => v.id), sleeping: s.sleeping.map((v) => v.id) },
    throughput: Object.fromEntries(runs.map((r) => [r.system.id, Object.fromEntries([...r.byStreams].map(([n, rs]) => [n, rs.map((x) => ({ tokensPerS: x.tokensPerS, wallMs: x.wallMs, ...requestLatencies(x.requests) }))]))])),
    quality: quality.map((q) => ({ system: q.system.id, weightsBytes: q.system.weightsBytes, meanKl: q.meanKl, klStandardError: q.klStandardError, top1Agreement: q.top1Agreement })),
  };

  const workload = `${s.preset}, N streams x ${s.promptTokens} prompt tokens x ${s.outputTokens} greedy tokens, ${s.threads} threads each side`;
  return {
    tables: [
      {
        title: `Total generated tokens/s, ${workload} (best of ${s.rounds} round${s.rounds > 1 ? 's' : ''})`,
        columns: ['streams', ...runs.map((r) => label(r.system)), 'best Tessera / best llama.cpp', 'formats'],
        rows: throughputRows,
        notes: [
          `Tessera: \`tessera serve --threads ${s.threads}\` (one process per format) measured over gRPC (GenerateStream) by the load generator's client; llama.cpp: node-llama-cpp ${NODE_LLAMA_CPP_VERSION} (prebuilt CPU binary, llama.cpp ${llamaCppRelease()}), one context with a sequence per stream, threads ${s.threads}, default KV cache (F16) and flash attention setting, in the bench process.`,
          `Tessera's default lets ORT's intra-op threads spin between kernels (ORT's default); "(threads sleep)" is the same server with \`--thread-spinning false\`, measured in the same rounds.`,
          'Same checkpoint (GGUF written from it by bench/lib/gguf), same prompt token ids, greedy, end-of-sequence ignored, exactly the output tokens above per request; every system loaded for the whole run, systems taking turns in a rotating order at each N.',
        ],
      },
      {
        title: `Latency, ${workload} (ms; percentiles over all requests of all rounds)`,
        columns: ['system', 'streams', 'tok/s', 'vs best llama.cpp', 'TTFT p50', 'TTFT p90', 'TTFT p99', 'TPOT p50', 'TPOT p90', 'TPOT p99'],
        rows: latencyRows,
        notes: ['TTFT = request start to its first generated token (Tessera: first streamed message, over gRPC); TPOT = (end - first token) / (tokens - 1).'],
      },
      {
        title: `Next-token quality vs fp32, ${s.preset}, ${s.quality.numPrompts} prompts x ${s.quality.promptTokens - s.quality.fromTokens} positions`,
        columns: ['system', 'weights MiB', 'mean KL nats', 'KL std err', 'top-1 agreement'],
        rows: qualityRows,
        notes: [
          'KL(fp32 || system) of the next-token distributions after the same tokens; fp32 = Tessera fp32 (equal to kernels/reference within 1e-4). llama.cpp with its default inference settings (F16 KV cache, flash attention on the CPU: F16 attention), which F16 weights show on their own.',
          `Tessera ${s.tessera.map((v) => `${v.id}: ${v.quant} codes in blocks of ${v.blockSize ?? '-'} (MatMulNBits, int8 activations)`).join('; ')}; embedding fp32, lm_head quantized. llama.cpp Q4_0 / Q8_0: 4 / 8-bit codes in blocks of 32 with an f16 scale, every matrix in that format, the tied embedding too (its output projection).`,
        ],
      },
    ],
    summary,
    data,
    docsPage: 'benchmarks.md',
  };
}

function llamaCppRelease(): string {
  try {
    const info = JSON.parse(fs.readFileSync(path.join(PEER_DIR, 'node_modules', 'node-llama-cpp', 'llama', 'llama.cpp.info.json'), 'utf8')) as { tag?: string };
    return info.tag ?? 'unknown';
  } catch {
    return 'unknown';
  }
}

const benchCase: BenchCase = {
  name: 'peer',
  onlyWhenNamed: true,
  description: `Tessera (gRPC serve, int4/int8) next to llama.cpp (node-llama-cpp ${NODE_LLAMA_CPP_VERSION}, F16/Q8_0/Q4_0 GGUF) on the same checkpoint and workload: tokens/s, TTFT/TPOT, KL vs fp32`,
  run,
};
export default benchCase;
