/**
 * Soak mode: warm up, take a baseline, run load for a fixed time, then idle and check that the server returns to
 * rest: KV usage, running sequences and queue back to 0 (from its /metrics), RSS back near the baseline (from a local
 * pid, or a process-memory gauge on /metrics), and no errors (the load generator's own count and the server's
 * tessera_errors_total, cancellations by the load generator excepted).
 *
 * With `hostile`, a quiet reference run of the same load (same seed, so request i is the same request) comes first;
 * then the load runs again beside the hostile mix (hostile-mix.ts). Further checks: every normal request's tokens
 * equal its tokens in the quiet run, the p99 inter-token gap stays within `itlRatioMax` (default 2) of the quiet
 * run's, every hostile call ended with a status it may end with; the server-error check then counts only server
 * faults (INTERNAL, UNKNOWN, UNAVAILABLE, DEADLINE_EXCEEDED, DATA_LOSS), since hostile calls are meant to fail.
 */
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import type { TargetOptions } from './generation-client.ts';
import { startHostileMix, type HostileMixOptions, type HostileResult } from './hostile-mix.ts';
import { percentile } from './latency-stats.ts';
import { runLoad, type LoadOptions, type LoadResult } from './load-run.ts';
import { scrapeMetrics, sumSamples, type MetricSample } from './prometheus-text.ts';

/** Process-memory gauges a server may expose, checked in this order (Prometheus client convention, OTel host metrics). */
export const RSS_METRIC_NAMES: readonly string[] = ['process_resident_memory_bytes', 'process_memory_usage_bytes', 'process_memory_usage', 'tessera_process_rss_bytes'];

export interface SoakSample {
  /** ms since the soak started. */
  atMs: number;
  kvUsageRatio: number | null;
  runningSequences: number | null;
  queueLength: number | null;
  /** tessera_errors_total over all codes except CANCELLED. */
  serverErrors: number | null;
  rssBytes: number | null;
}

export interface SoakCheck {
  name: string;
  /** 'skip' when the data is not available (no --metrics-url, no RSS source). */
  result: 'pass' | 'fail' | 'skip';
  detail: string;
}

export interface SoakOptions {
  /** Load settings; the soak sets the duration itself. */
  load: Omit<LoadOptions, 'numRequests' | 'durationMs'>;
  soakMs: number;
  /** Requests sent (closed loop, at the load's concurrency) before the baseline, so one-time allocations are not a leak. */
  warmupRequests?: number;
  /** Longest wait after the load for the server to return to rest (default 30 s). */
  idleMs?: number;
  /** Server's Prometheus endpoint, e.g. http://127.0.0.1:9464/metrics; null = server-side checks skipped. */
  metricsUrl?: string | null;
  /** RSS of the server in bytes (e.g. from its pid); null = look for a process-memory gauge on /metrics. */
  readRssBytes?: (() => number) | null;
  /** RSS may end at most this fraction above the baseline ... (default 0.25) */
  rssToleranceFraction?: number;
  /** ... plus this many bytes (default 64 MiB: allocator arenas, JIT). */
  rssSlackBytes?: number;
  /** Sampling period during load and idle (default 500 ms). */
  sampleIntervalMs?: number;
  /** Run the load beside the hostile mix, after a quiet reference run (see the top of this file). */
  hostile?: (HostileMixOptions & { target: TargetOptions; itlRatioMax?: number }) | null;
  onPhase?: (phase: 'warmup' | 'quiet' | 'baseline' | 'load' | 'idle', detail: string) => void;
}

/** Status names that are the server's fault; hostile calls must never end with them. */
const SERVER_FAULTS = new Set(['INTERNAL', 'UNKNOWN', 'UNAVAILABLE', 'DEADLINE_EXCEEDED', 'DATA_LOSS']);

export interface SoakResult {
  run: LoadResult;
  /** The quiet reference run and the hostile calls (hostile soaks only). */
  quiet: LoadResult | null;
  hostile: HostileResult[] | null;
  baseline: SoakSample;
  /** Largest values seen while the load ran. */
  peak: SoakSample;
  final: SoakSample;
  /** How long the idle phase took to reach rest (or idleMs). */
  idleMs: number;
  checks: SoakCheck[];
  ok: boolean;
}

export async function runSoak(opts: SoakOptions): Promise<SoakResult> {
  const t0 = performance.now();
  const metricsUrl = opts.metricsUrl ?? null;
  const intervalMs = opts.sampleIntervalMs ?? 500;
  const tolerance = opts.rssToleranceFraction ?? 0.25;
  const slackBytes = opts.rssSlackBytes ?? 64 * 1024 * 1024;

  const sample = async (): Promise<SoakSample> => {
    let samples: MetricSample[] = [];
    if (metricsUrl) samples = await scrapeMetrics(metricsUrl);
    let rss: number | null = opts.readRssBytes ? opts.readRssBytes() : null;
    if (rss === null) for (const name of RSS_METRIC_NAMES) rss ??= sumSamples(samples, name);
    return {
      atMs: performance.now() - t0,
      kvUsageRatio: sumSamples(samples, 'tessera_kv_usage_ratio'),
      runningSequences: sumSamples(samples, 'tessera_running_sequences'),
      queueLength: sumSamples(samples, 'tessera_queue_length'),
      serverErrors: metricsUrl ? (sumSamples(samples, 'tessera_errors_total', { code: opts.hostile ? (c) => c !== undefined && SERVER_FAULTS.has(c) : (c) => c !== 'CANCELLED' }) ?? 0) : null,
      rssBytes: rss,
    };
  };

  const warmup = opts.warmupRequests ?? 0;
  if (warmup > 0) {
    opts.onPhase?.('warmup', `${warmup} requests`);
    await runLoad({ ...opts.load, numRequests: warmup, ratePerS: null, concurrency: opts.load.concurrency ?? 1, onProgress: undefined, requestIdPrefix: 'soak-warmup', seed: (opts.load.seed ?? 1) + 1 });
  }
  let quiet: LoadResult | null = null;
  if (opts.hostile) {
    opts.onPhase?.('quiet', `${(opts.soakMs / 1000).toFixed(1)} s reference run without hostile calls`);
    quiet = await runLoad({ ...opts.load, durationMs: opts.soakMs, numRequests: null });
  }
  // Let the server's gauges (sampled periodically) catch up with the end of the warmup.
  await sleep(intervalMs);
  opts.onPhase?.('baseline', '');
  const baseline = await sample();

  opts.onPhase?.('load', `${(opts.soakMs / 1000).toFixed(1)} s`);
  const peak: SoakSample = { ...baseline };
  const max = (a: number | null, b: number | null) => (a === null ? b : b === null ? a : Math.max(a, b));
  let sampling = true;
  const sampler = (async () => {
    while (sampling) {
      await sleep(intervalMs);
      if (!sampling) break;
      const s = await sample().catch(() => null);
      if (!s) continue;
      peak.kvUsageRatio = max(peak.kvUsageRatio, s.kvUsageRatio);
      peak.runningSequences = max(peak.runningSequences, s.runningSequences);
      peak.queueLength = max(peak.queueLength, s.queueLength);
      peak.rssBytes = max(peak.rssBytes, s.rssBytes);
      peak.atMs = s.atMs;
    }
  })();
  let run: LoadResult;
  const mix = opts.hostile ? startHostileMix(opts.hostile.target, opts.load.model, opts.hostile) : null;
  let hostile: HostileResult[] | null = null;
  try {
    run = await runLoad({ ...opts.load, durationMs: opts.soakMs, numRequests: null });
  } finally {
    sampling = false;
    hostile = (await mix?.stop()) ?? null;
    await sampler;
  }

  // Idle: wait until the server is at rest or the idle budget is spent.
  const idleBudgetMs = opts.idleMs ?? 30_000;
  const idleStart = performance.now();
  opts.onPhase?.('idle', `up to ${(idleBudgetMs / 1000).toFixed(1)} s`);
  const rssLimit = (base: number) => base * (1 + tolerance) + slackBytes;
  let final: SoakSample;
  for (;;) {
    await sleep(intervalMs);
    final = await sample();
    const atRest =
      (final.kvUsageRatio ?? 0) === 0 &&
      (final.runningSequences ?? 0) === 0 &&
      (final.queueLength ?? 0) === 0 &&
      (final.rssBytes === null || baseline.rssBytes === null || final.rssBytes <= rssLimit(baseline.rssBytes));
    if (atRest || performance.now() - idleStart >= idleBudgetMs) break;
  }
  const idleMs = performance.now() - idleStart;

  const checks: SoakCheck[] = [];
  const clientErrors = run.records.filter((r) => r.status !== 'OK');
  const byCode = new Map<string, number>();
  for (const r of clientErrors) byCode.set(r.status, (byCode.get(r.status) ?? 0) + 1);
  checks.push({
    name: 'no errors seen by the load generator',
    result: clientErrors.length === 0 && run.records.length > 0 ? 'pass' : 'fail',
    detail: run.records.length === 0 ? 'no request completed' : clientErrors.length === 0 ? `${run.records.length} requests ok` : `${clientErrors.length} failed: ${[...byCode].map(([c, n]) => `${c} x${n}`).join(', ')}`,
  });
  const gauge = (name: string, base: number | null, pk: number | null, end: number | null) => {
    const show = (v: number | null) => (v === null ? '-' : String(Number(v.toPrecision(4))));
    if (end === null) checks.push({ name, result: 'skip', detail: metricsUrl ? 'metric not exposed by the server' : 'no --metrics-url' });
    else checks.push({ name, result: end === 0 ? 'pass' : 'fail', detail: `baseline ${show(base)}, peak ${show(pk)}, after idle ${show(end)}` });
  };
  gauge('KV cache usage back to 0', baseline.kvUsageRatio, peak.kvUsageRatio, final.kvUsageRatio);
  gauge('running sequences back to 0', baseline.runningSequences, peak.runningSequences, final.runningSequences);
  gauge('queue empty', baseline.queueLength, peak.queueLength, final.queueLength);
  if (final.serverErrors === null || baseline.serverErrors === null) checks.push({ name: 'no errors counted by the server', result: 'skip', detail: 'no --metrics-url' });
  else {
    const delta = final.serverErrors - baseline.serverErrors;
    const counted = opts.hostile ? `server faults (${[...SERVER_FAULTS].join(', ')})` : 'CANCELLED excepted';
    checks.push({ name: 'no errors counted by the server', result: delta === 0 ? 'pass' : 'fail', detail: `tessera_errors_total (${counted}) grew by ${delta}` });
  }
  if (final.rssBytes === null || baseline.rssBytes === null) {
    checks.push({ name: 'RSS back near baseline', result: 'skip', detail: 'no RSS source (--server-pid, or a process memory gauge on /metrics)' });
  } else {
    const mib = (b: number) => `${(b / 1048576).toFixed(1)} MiB`;
    const limit = rssLimit(baseline.rssBytes);
    checks.push({
      name: 'RSS back near baseline',
      result: final.rssBytes <= limit ? 'pass' : 'fail',
      detail: `baseline ${mib(baseline.rssBytes)}, peak ${mib(peak.rssBytes ?? final.rssBytes)}, after idle ${mib(final.rssBytes)} (limit ${mib(limit)})`,
    });
  }
  if (quiet !== null && hostile !== null) checks.push(...hostileChecks(quiet, run, hostile, opts.hostile?.itlRatioMax ?? 2));
  return { run, quiet, hostile, baseline, peak, final, idleMs, checks, ok: checks.every((c) => c.result !== 'fail') };
}

/** The checks of a hostile soak: same tokens as the quiet run, p99 ITL within `ratioMax` of it, hostile statuses. */
function hostileChecks(quiet: LoadResult, run: LoadResult, hostile: HostileResult[], ratioMax: number): SoakCheck[] {
  const checks: SoakCheck[] = [];
  const reference = new Map(quiet.records.filter((r) => r.status === 'OK').map((r) => [r.requestId, r.outputTokenIds]));
  let compared = 0;
  const differing: string[] = [];
  for (const r of run.records) {
    const ref = reference.get(r.requestId);
    if (r.status !== 'OK' || ref === undefined) continue;
    compared++;
    if (ref.length !== r.outputTokenIds.length || ref.some((t, i) => t !== r.outputTokenIds[i])) differing.push(r.requestId);
  }
  checks.push({
    name: 'normal outputs identical to the quiet run',
    result: compared > 0 && differing.length === 0 ? 'pass' : 'fail',
    detail: `${compared} requests compared${differing.length > 0 ? `, ${differing.length} differ (e.g. ${differing.slice(0, 3).join(', ')})` : ', all identical'}`,
  });
  const p99 = (r: LoadResult) => percentile(r.records.flatMap((x) => x.interTokenGapsMs).sort((a, b) => a - b), 99);
  const quietP99 = p99(quiet);
  const hostileP99 = p99(run);
  if (Number.isNaN(quietP99) || Number.isNaN(hostileP99)) checks.push({ name: `p99 inter-token gap within ${ratioMax}x of the quiet run`, result: 'skip', detail: 'no streamed gaps (--unary?)' });
  else {
    checks.push({
      name: `p99 inter-token gap within ${ratioMax}x of the quiet run`,
      result: hostileP99 <= ratioMax * quietP99 ? 'pass' : 'fail',
      detail: `quiet ${quietP99.toFixed(1)} ms, with hostile calls ${hostileP99.toFixed(1)} ms (x${(hostileP99 / quietP99).toFixed(2)})`,
    });
  }
  const byOutcome = new Map<string, number>();
  for (const h of hostile) byOutcome.set(`${h.action}:${h.status}`, (byOutcome.get(`${h.action}:${h.status}`) ?? 0) + 1);
  const unexpected = hostile.filter((h) => !h.expected);
  checks.push({
    name: 'hostile calls answered as expected',
    result: hostile.length > 0 && unexpected.length === 0 ? 'pass' : 'fail',
    detail: `${hostile.length} calls: ${[...byOutcome].map(([k, n]) => `${k} x${n}`).join(', ')}${unexpected.length > 0 ? `; unexpected: ${unexpected.slice(0, 2).map((h) => `${h.action} ${h.status} ${h.details}`).join('; ')}` : ''}`,
  });
  return checks;
}
