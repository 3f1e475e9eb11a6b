import { TesseraError } from '../../errors.ts';
import { buildBenchReport, formatBenchReport } from '../../loadgen/bench-report.ts';
import { createGenerationClient } from '../../loadgen/generation-client.ts';
import { createHttpGenerationClient } from '../../loadgen/http-generation-client.ts';
import { runLoad, type LoadOptions, type LoadProgress } from '../../loadgen/load-run.ts';
import { readProcessRssBytes } from '../../loadgen/process-rss.ts';
import { formatLengthDist, parseAdapterDist, parseLengthDist, type LengthDist } from '../../loadgen/random.ts';
import { runSoak } from '../../loadgen/soak.ts';
import { choiceOpt, floatOpt, intOpt, stringOpt, type CommandSpec, type ParsedArgs } from '../args.ts';
import type { CommandIo } from '../main.ts';
import { progressBar } from '../progress.ts';

export const benchSpec: CommandSpec = {
  name: 'bench',
  usage:
    'tessera bench --target HOST:PORT [--protocol grpc|http] [--tls] [--ca FILE] [--api-key KEY] (--requests N | --duration S | --soak-minutes M) [--concurrency C | --rate R] ' +
    '[--prompt-tokens N | --prompt-tokens-dist uniform:a:b|normal:mu:sigma] [--output-tokens N | --output-tokens-dist ...] [--adapters a,b,c] [--adapter-dist uniform|zipf:s] ' +
    '[--stream|--unary] [--json] [--seed S] [--timeout-s T]',
  summary:
    'Load-tests a running server over gRPC or its OpenAI-compatible HTTP face: random token-id prompts of exact lengths, ignore_eos so output lengths are exact, ' +
    'closed loop (--concurrency) or Poisson arrivals (--rate). Prints throughput, TTFT, TPOT, ITL, end-to-end latency and errors by status; ' +
    'with --soak-minutes, idles after the load and checks the server returns to rest (exit 1 if not).',
  options: {
    target: { type: 'string', description: 'server address HOST:PORT (the gRPC port, or the --http-port with --protocol http)' },
    protocol: { type: 'string', description: 'grpc (tessera.v1.Generation) or http (POST /v1/completions, SSE when streaming)', default: 'grpc' },
    tls: { type: 'boolean', description: 'connect with TLS', default: false },
    ca: { type: 'string', description: 'PEM CA bundle to verify the server certificate (with --tls; default: system roots)' },
    'api-key': { type: 'string', description: 'API key sent as authorization: Bearer KEY (default: $TESSERA_API_KEY)' },
    requests: { type: 'string', description: 'total requests (default 100 unless --duration or --soak-minutes)' },
    duration: { type: 'string', description: 'seconds to keep issuing requests' },
    concurrency: { type: 'string', description: 'calls in flight (closed loop); with --rate, a cap on calls in flight (default 1 without --rate)' },
    rate: { type: 'string', description: 'Poisson arrivals per second (open loop)' },
    'prompt-tokens': { type: 'string', description: 'prompt length in tokens', default: '32' },
    'prompt-tokens-dist': { type: 'string', description: 'prompt length distribution uniform:a:b or normal:mu:sigma (overrides --prompt-tokens)' },
    'output-tokens': { type: 'string', description: 'output length in tokens (max_new_tokens with ignore_eos)', default: '32' },
    'output-tokens-dist': { type: 'string', description: 'output length distribution uniform:a:b or normal:mu:sigma' },
    adapters: { type: 'string', description: 'comma-separated adapter ids to spread requests over (default: base model); also sent as x-tessera-adapter metadata' },
    'adapter-dist': { type: 'string', description: 'adapter popularity: uniform, or zipf:s (first id most popular)', default: 'uniform' },
    stream: { type: 'boolean', description: 'GenerateStream calls (the default; needed for TTFT/TPOT/ITL)' },
    unary: { type: 'boolean', description: 'Generate (unary) calls instead' },
    temperature: { type: 'string', description: 'sampling temperature of every request', default: '0' },
    seed: { type: 'string', description: 'seed of prompts, lengths, adapters and arrivals', default: '1' },
    'timeout-s': { type: 'string', description: 'deadline of each call, seconds', default: '60' },
    'max-wall-s': { type: 'string', description: 'hard cap on the whole run, seconds; outstanding calls are cancelled (default: duration + timeout, or 600)' },
    'warmup-requests': { type: 'string', description: 'requests sent first and left out of the results (soak default: --concurrency)' },
    json: { type: 'boolean', description: 'print one JSON object on stdout instead of the table', default: false },
    'soak-minutes': { type: 'string', description: 'soak mode: run load this long (fractions allowed), then idle and check the server returns to rest' },
    'soak-idle-s': { type: 'string', description: 'soak: longest wait after the load for KV, running sequences and RSS to settle', default: '30' },
    'metrics-url': { type: 'string', description: "soak: the server's Prometheus endpoint, e.g. http://127.0.0.1:9464/metrics" },
    'server-pid': { type: 'string', description: "soak: pid of a local server process whose RSS to check (else a process memory gauge on /metrics)" },
    'rss-tolerance': { type: 'string', description: 'soak: RSS after idle may exceed the baseline by this fraction (+64 MiB)', default: '0.25' },
    hostile: { type: 'boolean', description: 'soak: a quiet reference run first, then the load beside hostile calls (bad bytes and arguments, huge prompts, cancels, adapter loads); checks outputs and p99 ITL against the quiet run', default: false },
    'hostile-interval-ms': { type: 'string', description: 'soak --hostile: one hostile call every this many ms', default: '1000' },
    'hostile-prompt-bytes': { type: 'string', description: 'soak --hostile: size of the huge text prompt', default: '3900000' },
    'hostile-adapters': { type: 'string', description: 'soak --hostile: comma-separated adapter sources (readable by the server) to load, use and unload' },
  },
};

function lengthOpt(args: ParsedArgs, name: 'prompt-tokens' | 'output-tokens'): LengthDist {
  const dist = stringOpt(args, `${name}-dist`);
  return dist !== undefined ? parseLengthDist(`${name}-dist`, dist) : parseLengthDist(name, stringOpt(args, name)!);
}

export async function runBench(args: ParsedArgs, io: CommandIo): Promise<number> {
  const target = stringOpt(args, 'target');
  if (!target) throw new TesseraError('CONFIG_INVALID', '--target HOST:PORT is required');
  if (args.values.stream === true && args.values.unary === true) throw new TesseraError('CONFIG_INVALID', 'give at most one of --stream and --unary');
  const stream = args.values.unary !== true;
  const soakMinutes = floatOpt(args, 'soak-minutes', { min: 0.001, max: 7 * 24 * 60 }) ?? null;
  let numRequests = intOpt(args, 'requests', { min: 1, max: 100_000_000 }) ?? null;
  const durationS = floatOpt(args, 'duration', { min: 0.001, max: 7 * 24 * 3600 }) ?? null;
  const bounds = [numRequests, durationS, soakMinutes].filter((v) => v !== null).length;
  if (bounds > 1) throw new TesseraError('CONFIG_INVALID', 'give only one of --requests, --duration and --soak-minutes');
  if (bounds === 0) numRequests = 100;
  const ratePerS = floatOpt(args, 'rate', { min: 0.001, max: 1_000_000 }) ?? null;
  const concurrency = intOpt(args, 'concurrency', { min: 1, max: 100_000 }) ?? (ratePerS === null ? 1 : null);
  const timeoutS = floatOpt(args, 'timeout-s', { min: 0.001, max: 86_400 })!;
  const loadS = soakMinutes !== null ? soakMinutes * 60 : durationS;
  const maxWallS = floatOpt(args, 'max-wall-s', { min: 0.001, max: 2_000_000 }) ?? (loadS !== null ? loadS + timeoutS + 5 : 600);
  const adapterIds = (stringOpt(args, 'adapters') ?? '').split(',').map((s) => s.trim()).filter((s) => s !== '');
  const adapterDist = parseAdapterDist(stringOpt(args, 'adapter-dist')!);
  const seed = intOpt(args, 'seed', { min: 0, max: 2 ** 31 - 1 })!;
  const workload = {
    promptTokens: lengthOpt(args, 'prompt-tokens'),
    outputTokens: lengthOpt(args, 'output-tokens'),
    adapterIds,
    adapterDist,
    temperature: floatOpt(args, 'temperature', { min: 0, max: 100 })!,
    seed,
  };
  const json = args.values.json === true;
  const serverPid = intOpt(args, 'server-pid', { min: 1, max: 2 ** 31 - 1 }) ?? null;
  const metricsUrl = stringOpt(args, 'metrics-url') ?? null;
  if (soakMinutes === null && (serverPid !== null || metricsUrl !== null || args.values.hostile === true)) {
    throw new TesseraError('CONFIG_INVALID', '--metrics-url, --server-pid and --hostile are soak settings: add --soak-minutes');
  }
  if (serverPid !== null) readProcessRssBytes(serverPid); // fail now, not after the load

  const protocol = choiceOpt(args, 'protocol', ['grpc', 'http'] as const)!;
  const targetOptions = { target, tls: args.values.tls === true, caFile: stringOpt(args, 'ca') ?? null, apiKey: stringOpt(args, 'api-key') ?? process.env.TESSERA_API_KEY ?? null };
  if (protocol === 'http' && args.values.hostile === true) throw new TesseraError('CONFIG_INVALID', '--hostile sends its bad calls over gRPC: use it with --protocol grpc');
  const hostile =
    args.values.hostile === true
      ? {
          target: targetOptions,
          intervalMs: intOpt(args, 'hostile-interval-ms', { min: 10, max: 3_600_000 })!,
          hugePromptBytes: intOpt(args, 'hostile-prompt-bytes', { min: 1, max: 1 << 30 })!,
          adapterSources: (stringOpt(args, 'hostile-adapters') ?? '').split(',').map((x) => x.trim()).filter((x) => x !== ''),
        }
      : null;
  const client = protocol === 'http' ? createHttpGenerationClient(targetOptions) : createGenerationClient(targetOptions);
  try {
    const model = await client.getModelInfo(Math.min(timeoutS, 30) * 1000);
    const config = {
      target,
      protocol,
      tls: args.values.tls === true,
      stream,
      numRequests,
      durationS: loadS,
      soakMinutes,
      concurrency,
      ratePerS,
      promptTokens: formatLengthDist(workload.promptTokens),
      outputTokens: formatLengthDist(workload.outputTokens),
      adapters: adapterIds,
      adapterDist: stringOpt(args, 'adapter-dist'),
      temperature: workload.temperature,
      seed,
      timeoutS,
      maxWallS,
    };
    const bar = progressBar(soakMinutes !== null ? 'soak' : 'bench');
    const onProgress = (p: LoadProgress) => {
      if (numRequests !== null) bar.update(p.issued - p.inFlight, numRequests);
      else bar.update(Math.min(Math.round(p.elapsedMs / 1000), Math.ceil(loadS!)), Math.ceil(loadS!));
    };
    const load: Omit<LoadOptions, 'numRequests' | 'durationMs'> = {
      client,
      model,
      ...workload,
      concurrency,
      ratePerS,
      stream,
      requestTimeoutMs: timeoutS * 1000,
      maxWallMs: maxWallS * 1000,
      onProgress,
    };
    const warmupRequests = intOpt(args, 'warmup-requests', { min: 0, max: 1_000_000 }) ?? (soakMinutes !== null ? (concurrency ?? 1) : 0);
    const modelSummary = { modelId: model.modelId, quantization: model.quantization, vocabSize: model.vocabSize };

    if (soakMinutes === null) {
      if (warmupRequests > 0) await runLoad({ ...load, onProgress: undefined, numRequests: warmupRequests, ratePerS: null, concurrency: concurrency ?? 1, requestIdPrefix: 'bench-warmup', seed: seed + 1 });
      const run = await runLoad({ ...load, numRequests, durationMs: durationS !== null ? durationS * 1000 : null });
      bar.stop();
      const report = buildBenchReport(run, modelSummary, config);
      io.out(json ? `${JSON.stringify(report)}\n` : `${formatBenchReport(report)}\n`);
      return report.counts.succeeded > 0 ? 0 : 1;
    }

    if (metricsUrl === null) io.err('warning: soak without --metrics-url: KV, running-sequence and server-error checks are skipped');
    const soak = await runSoak({
      load,
      soakMs: soakMinutes * 60_000,
      warmupRequests,
      idleMs: floatOpt(args, 'soak-idle-s', { min: 0, max: 86_400 })! * 1000,
      metricsUrl,
      readRssBytes: serverPid !== null ? () => readProcessRssBytes(serverPid) : null,
      rssToleranceFraction: floatOpt(args, 'rss-tolerance', { min: 0, max: 100 })!,
      hostile,
      onPhase: (phase, detail) => {
        if (phase === 'idle') bar.stop();
        if (!json || phase !== 'load') io.err(`soak: ${phase}${detail ? ` (${detail})` : ''}`);
      },
    });
    bar.stop();
    const report = buildBenchReport(soak.run, modelSummary, config);
    const soakPart = {
      ok: soak.ok,
      checks: soak.checks,
      baseline: soak.baseline,
      peak: soak.peak,
      final: soak.final,
      idleS: soak.idleMs / 1000,
      ...(soak.quiet ? { quiet: buildBenchReport(soak.quiet, modelSummary, config), hostileCalls: soak.hostile } : {}),
    };
    if (json) io.out(`${JSON.stringify({ ...report, soak: soakPart })}\n`);
    else {
      const mark = { pass: 'PASS', fail: 'FAIL', skip: 'skip' } as const;
      io.out(`${formatBenchReport(report)}\n\nsoak checks (idle ${(soak.idleMs / 1000).toFixed(1)} s):\n${soak.checks.map((c) => `  ${mark[c.result]}  ${c.name.padEnd(40)} ${c.detail}`).join('\n')}\n${soak.ok ? 'soak passed' : 'soak FAILED'}\n`);
    }
    return soak.ok ? 0 : 1;
  } finally {
    client.close();
  }
}
