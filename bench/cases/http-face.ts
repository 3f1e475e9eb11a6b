/**
 * What the OpenAI-compatible HTTP face costs next to gRPC: one `tessera serve` process (both faces, one engine), driven
 * by the load generator of `tessera bench` from this process at 16 concurrent streams, the same seeded workload over
 * gRPC (GenerateStream) and HTTP (POST /v1/completions, server-sent events), runs interleaved (gRPC, HTTP, HTTP, gRPC,
 * ...) so drift on a shared machine hits both alike. Reports generated tokens/s per protocol, the HTTP/gRPC ratio per
 * pair of runs and its median, and TTFT / inter-token latency p50.
 */
import { spawn } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildBenchReport, type BenchReport } from '../../src/loadgen/bench-report.ts';
import { createGenerationClient, type GenerationClient } from '../../src/loadgen/generation-client.ts';
import { createHttpGenerationClient } from '../../src/loadgen/http-generation-client.ts';
import { runLoad } from '../../src/loadgen/load-run.ts';
import type { ModelPreset } from '../../src/model/checkpoint/make-model.ts';
import type { BenchCase, BenchContext, CaseOutput, Cell } from '../lib/bench-case.ts';
import { INT4 } from '../lib/quant-variants.ts';
import { median, significant } from '../lib/stats.ts';

interface Settings {
  preset: ModelPreset;
  concurrency: number;
  requestsPerRun: number;
  promptTokens: number;
  outputTokens: number;
  /** Pairs of runs (one gRPC, one HTTP each). */
  pairs: number;
}

const SETTINGS: Record<'quick' | 'full', Settings> = {
  quick: { preset: 'tiny', concurrency: 16, requestsPerRun: 32, promptTokens: 16, outputTokens: 16, pairs: 2 },
  // Many short pairs: on a shared machine the load drifts over minutes, and a pair's two runs should see the same load.
  full: { preset: 'small', concurrency: 16, requestsPerRun: 32, promptTokens: 32, outputTokens: 64, pairs: 10 },
};

const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

interface ServerProcess {
  grpcPort: number;
  httpPort: number;
  stop(): Promise<void>;
}

/** `tessera serve` with both faces on free ports, as its own process (the load generator must not share its event loop). */
function startServerProcess(modelDir: string): Promise<ServerProcess> {
  const child = spawn(process.execPath, [path.join(REPO_ROOT, 'bin/tessera.mjs'), 'serve', '--model', modelDir, '--port', '0', '--http-port', '0', '--adapter-slots', '0', '--log-level', 'warn'], {
    cwd: REPO_ROOT,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  child.stderr!.setEncoding('utf8').on('data', (s: string) => (err = (err + s).slice(-4000)));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`tessera serve did not start within 120 s:\n${err}`));
    }, 120_000);
    child.stdout!.setEncoding('utf8').on('data', (s: string) => {
      out += s;
      const grpc = /^listening on \S+:(\d+)$/m.exec(out);
      const http = /^http listening on \S+:(\d+)$/m.exec(out);
      if (!grpc || !http) return;
      clearTimeout(timer);
      resolve({
        grpcPort: Number(grpc[1]),
        httpPort: Number(http[1]),
        stop: async () => {
          child.kill('SIGTERM');
          await exited;
        },
      });
    });
    void exited.then(() => reject(new Error(`tessera serve exited before listening:\n${err}`)));
  });
}

async function run(client: GenerationClient, s: Settings, numRequests: number, seed: number): Promise<BenchReport> {
  const model = await client.getModelInfo(30_000);
  const result = await runLoad({
    client,
    model,
    promptTokens: { kind: 'fixed', tokens: s.promptTokens },
    outputTokens: { kind: 'fixed', tokens: s.outputTokens },
    temperature: 0,
    seed,
    concurrency: s.concurrency,
    numRequests,
    stream: true,
    requestTimeoutMs: 600_000,
    maxWallMs: 1_800_000,
  });
  const report = buildBenchReport(result, { modelId: model.modelId, quantization: model.quantization, vocabSize: model.vocabSize }, {});
  if (report.counts.failed > 0) throw new Error(`bench run failed requests: ${JSON.stringify(report.errorExamples)}`);
  return report;
}

const httpFaceCase: BenchCase = {
  name: 'http-face',
  description: 'OpenAI-compatible HTTP face vs gRPC: generated tokens/s at 16 concurrent streams, one server, interleaved runs',
  async run(ctx: BenchContext): Promise<CaseOutput> {
    const s = SETTINGS[ctx.mode];
    const model = await ctx.models.converted(s.preset, INT4);
    ctx.log(`starting tessera serve (${s.preset} ${INT4.id}) with gRPC and HTTP faces`);
    const server = await startServerProcess(model.dir);
    const grpc = createGenerationClient({ target: `127.0.0.1:${server.grpcPort}` });
    const http = createHttpGenerationClient({ target: `127.0.0.1:${server.httpPort}` });
    const rows: Cell[][] = [];
    const ratios: number[] = [];
    const perProtocol: Record<'grpc' | 'http', BenchReport[]> = { grpc: [], http: [] };
    try {
      // Warm-up on both faces (graph caches, JIT, connections), left out.
      await run(grpc, s, s.concurrency, 99);
      await run(http, s, s.concurrency, 99);
      for (let pair = 0; pair < s.pairs; pair++) {
        const order: Array<'grpc' | 'http'> = pair % 2 === 0 ? ['grpc', 'http'] : ['http', 'grpc'];
        const reports: Partial<Record<'grpc' | 'http', BenchReport>> = {};
        for (const protocol of order) {
          ctx.log(`pair ${pair + 1}/${s.pairs}: ${protocol}`);
          reports[protocol] = await run(protocol === 'grpc' ? grpc : http, s, s.requestsPerRun, 1 + pair);
          perProtocol[protocol].push(reports[protocol]!);
        }
        const ratio = reports.http!.outputTokensPerS / reports.grpc!.outputTokensPerS;
        ratios.push(ratio);
        rows.push([pair + 1, order.join(' then '), significant(reports.grpc!.outputTokensPerS), significant(reports.http!.outputTokensPerS), significant(ratio)]);
      }
    } finally {
      grpc.close();
      http.close();
      await server.stop();
    }
    const med = median(ratios);
    const geomean = Math.exp(ratios.reduce((sum, r) => sum + Math.log(r), 0) / ratios.length);
    // All tokens over all time per protocol: weighs every run by its length instead of every pair alike.
    const pooledTokPerS = (reports: BenchReport[]): number => reports.reduce((sum, r) => sum + r.totalOutputTokens, 0) / reports.reduce((sum, r) => sum + r.durationS, 0);
    const pooled = pooledTokPerS(perProtocol.http) / pooledTokPerS(perProtocol.grpc);
    const p50 = (reports: BenchReport[], key: 'ttftMs' | 'itlMs'): number => significant(median(reports.map((r) => r[key]!.p50)));
    const tokPerS = (reports: BenchReport[]): number => significant(median(reports.map((r) => r.outputTokensPerS)));
    return {
      tables: [
        {
          title: `HTTP vs gRPC, ${s.preset} ${INT4.id}, ${s.concurrency} streams, ${s.promptTokens} prompt + ${s.outputTokens} generated tokens, ${s.requestsPerRun} requests per run`,
          columns: ['pair', 'order', 'gRPC tok/s', 'HTTP tok/s', 'HTTP / gRPC'],
          rows,
          notes: [
            `HTTP / gRPC: median of the pairs ${significant(med)}, geometric mean ${significant(geomean)}, pooled (all tokens / all time) ${significant(pooled)}; target >= 0.95 (HTTP costs <= 5%)`,
            `pairs range ${significant(Math.min(...ratios))} to ${significant(Math.max(...ratios))}: on a shared machine one pair says little; the summaries across pairs are the measurement`,
          ],
        },
        {
          title: 'Latency (median over runs of each run\'s p50, ms)',
          columns: ['protocol', 'tok/s (median)', 'TTFT p50', 'inter-token p50'],
          rows: (['grpc', 'http'] as const).map((p) => [p, tokPerS(perProtocol[p]), p50(perProtocol[p], 'ttftMs'), p50(perProtocol[p], 'itlMs')]),
          notes: ['HTTP inter-token gaps are between text chunks (a chunk whose text is still empty, e.g. half a UTF-8 character, is not counted)'],
        },
      ],
      summary: [
        {
          metric: `HTTP face vs gRPC throughput, ${s.concurrency} streams (${s.preset} ${INT4.id})`,
          value: `${significant(med)}x median of ${ratios.length} interleaved pairs (geomean ${significant(geomean)}, pooled ${significant(pooled)}; pairs ${significant(Math.min(...ratios))}-${significant(Math.max(...ratios))})`,
        },
      ],
      data: { settings: s, ratios, medianRatio: med, geomeanRatio: geomean, pooledRatio: pooled, grpc: perProtocol.grpc, http: perProtocol.http },
    };
  },
};

export default httpFaceCase;
