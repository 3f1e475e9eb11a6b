/**
 * Soak mode: warm up, take a baseline, run load for a fixed time, then idle and check that the server returns to
 * rest: KV usage, running sequences and queue back to 0 (from its /metrics), RSS back near the baseline (from a local
 * pid, or a process-memory gauge on /metrics), and no errors (the load generator's own count and the server's
 * tessera_errors_total, cancellations by the load generator excepted).
 */
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
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
  onPhase?: (phase: 'warmup' | 'baseline' | 'load' | 'idle', detail: string) => void;
}

export interface SoakResult {
  run: LoadResult;
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
      serverErrors: metricsUrl ? (sumSamples(samples, 'tessera_errors_total', { code: (c) => c !== 'CANCELLED' }) ?? 0) : null,
      rssBytes: rss,
    };
  };

  const warmup = opts.warmupRequests ?? 0;
  if (warmup > 0) {
    opts.onPhase?.('warmup', `${warmup} requests`);
    await runLoad({ ...opts.load, numRequests: warmup, ratePerS: null, concurrency: opts.load.concurrency ?? 1, onProgress: undefined, requestIdPrefix: 'soak-warmup', seed: (opts.load.seed ?? 1) + 1 });
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
  try {
    run = await runLoad({ ...opts.load, durationMs: opts.soakMs, numRequests: null });
  } finally {
    sampling = false;
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
    checks.push({ name: 'no errors counted by the server', result: delta === 0 ? 'pass' : 'fail', detail: `tessera_errors_total (CANCELLED excepted) grew by ${delta}` });
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
  return { run, baseline, peak, final, idleMs, checks, ok: checks.every((c) => c.result !== 'fail') };
}
