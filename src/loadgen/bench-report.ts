/**
 * Turns a load run's call records into the bench report (throughput, TTFT, TPOT, ITL, end-to-end latency, errors by
 * status) and formats it as a text table. Latencies are in ms; TTFT / TPOT / ITL need streaming (null for unary).
 */
import type { CallRecord } from './generation-client.ts';
import { summarize, type LatencySummary } from './latency-stats.ts';
import type { LoadResult, StopReason } from './load-run.ts';

export interface BenchReport {
  /** Settings of the run, echoed (target, mode, lengths, adapters, seed ...). */
  config: Record<string, unknown>;
  model: { modelId: string; quantization: string; vocabSize: number };
  stoppedBy: StopReason;
  /** From the first call's start to the last call's end (cancelled ones included). */
  durationS: number;
  counts: {
    /** Calls started. issued = succeeded + failed + cancelledAtEnd. */
    issued: number;
    succeeded: number;
    failed: number;
    cancelledAtEnd: number;
    clampedLengths: number;
  };
  /** Successful requests per second. */
  requestThroughputPerS: number;
  /** Output tokens of successful requests per second. */
  outputTokensPerS: number;
  /** Prompt tokens of successful requests per second. */
  inputTokensPerS: number;
  totalInputTokens: number;
  totalOutputTokens: number;
  /** Time to the first token-carrying stream message. */
  ttftMs: LatencySummary | null;
  /** Per request: (end-to-end - TTFT) / (output tokens - 1), for requests with at least 2 output tokens. */
  tpotMs: LatencySummary | null;
  /** Gaps between consecutive token-carrying stream messages, over all requests. */
  itlMs: LatencySummary | null;
  e2eMs: LatencySummary | null;
  /** Failed calls by gRPC status name. */
  errors: Record<string, number>;
  /** First failure message per status, to see why. */
  errorExamples: Record<string, string>;
  /** Issued requests per adapter id ('' = base model). */
  requestsByAdapter: Record<string, number>;
}

/** Microsecond resolution is plenty for ms latencies and keeps the JSON readable. */
const round3 = (v: number): number => Math.round(v * 1000) / 1000;
const roundSummary = (s: LatencySummary | null): LatencySummary | null =>
  s && { count: s.count, mean: round3(s.mean), min: round3(s.min), p50: round3(s.p50), p90: round3(s.p90), p99: round3(s.p99), max: round3(s.max) };

export function buildBenchReport(run: LoadResult, model: BenchReport['model'], config: Record<string, unknown>): BenchReport {
  const ok = run.records.filter((r) => r.status === 'OK');
  const errors: Record<string, number> = {};
  const errorExamples: Record<string, string> = {};
  for (const r of run.records) {
    if (r.status === 'OK') continue;
    errors[r.status] = (errors[r.status] ?? 0) + 1;
    errorExamples[r.status] ??= r.details;
  }
  const requestsByAdapter: Record<string, number> = {};
  for (const r of [...run.records, ...run.cancelledAtEnd]) requestsByAdapter[r.adapterId] = (requestsByAdapter[r.adapterId] ?? 0) + 1;

  const all = [...run.records, ...run.cancelledAtEnd];
  const firstStart = all.reduce((m, r) => Math.min(m, r.startMs), Infinity);
  const lastEnd = all.reduce((m, r) => Math.max(m, r.endMs), -Infinity);
  const durationS = all.length > 0 ? (lastEnd - firstStart) / 1000 : 0;
  const perS = (n: number) => (durationS > 0 ? n / durationS : 0);
  const totalOutputTokens = ok.reduce((s, r) => s + r.outputTokens, 0);
  const totalInputTokens = ok.reduce((s, r) => s + r.promptTokens, 0);

  const ttft: number[] = [];
  const tpot: number[] = [];
  const itl: number[] = [];
  for (const r of ok) {
    if (r.firstTokenMs === null) continue;
    const t = r.firstTokenMs - r.startMs;
    ttft.push(t);
    if (r.outputTokens > 1) tpot.push((r.endMs - r.startMs - t) / (r.outputTokens - 1));
    for (const g of r.interTokenGapsMs) itl.push(g);
  }
  return {
    config,
    model,
    stoppedBy: run.stoppedBy,
    durationS: round3(durationS),
    counts: { issued: all.length, succeeded: ok.length, failed: run.records.length - ok.length, cancelledAtEnd: run.cancelledAtEnd.length, clampedLengths: run.numClampedLengths },
    requestThroughputPerS: round3(perS(ok.length)),
    outputTokensPerS: round3(perS(totalOutputTokens)),
    inputTokensPerS: round3(perS(totalInputTokens)),
    totalInputTokens,
    totalOutputTokens,
    ttftMs: roundSummary(summarize(ttft)),
    tpotMs: roundSummary(summarize(tpot)),
    itlMs: roundSummary(summarize(itl)),
    e2eMs: roundSummary(summarize(ok.map((r: CallRecord) => r.endMs - r.startMs))),
    errors,
    errorExamples,
    requestsByAdapter,
  };
}

const fmt = (v: number, digits = 2): string => (Number.isFinite(v) ? v.toFixed(digits) : '-');

/** A plain-text table for people (the JSON report is for machines). */
export function formatBenchReport(report: BenchReport): string {
  const c = report.counts;
  const lines = [
    `model ${report.model.modelId} (${report.model.quantization}), stopped by ${report.stoppedBy} after ${fmt(report.durationS)} s`,
    `requests: ${c.issued} issued, ${c.succeeded} ok, ${c.failed} failed, ${c.cancelledAtEnd} cancelled at end${c.clampedLengths ? `, ${c.clampedLengths} lengths clamped to server limits` : ''}`,
    `throughput: ${fmt(report.requestThroughputPerS)} req/s, ${fmt(report.outputTokensPerS, 1)} output tok/s, ${fmt(report.inputTokensPerS, 1)} input tok/s (${report.totalOutputTokens} output, ${report.totalInputTokens} input tokens)`,
    '',
    `${'latency (ms)'.padEnd(14)}${['mean', 'p50', 'p90', 'p99', 'max', 'n'].map((h) => h.padStart(10)).join('')}`,
  ];
  const unary = report.config.stream === false;
  const row = (name: string, s: BenchReport['e2eMs'], streamOnly: boolean) =>
    lines.push(`${name.padEnd(14)}${s ? [s.mean, s.p50, s.p90, s.p99, s.max].map((v) => fmt(v).padStart(10)).join('') + String(s.count).padStart(10) : `  ${streamOnly && unary ? '(needs --stream)' : '(no samples)'}`}`);
  row('TTFT', report.ttftMs, true);
  row('TPOT', report.tpotMs, true);
  row('ITL', report.itlMs, true);
  row('end-to-end', report.e2eMs, false);
  const codes = Object.entries(report.errors);
  if (codes.length > 0) {
    lines.push('', 'errors:');
    for (const [code, n] of codes) lines.push(`  ${code.padEnd(20)} ${String(n).padStart(6)}  e.g. ${report.errorExamples[code] ?? ''}`);
  }
  const adapters = Object.entries(report.requestsByAdapter);
  if (adapters.length > 1 || (adapters.length === 1 && adapters[0][0] !== '')) {
    lines.push('', 'requests by adapter:', ...adapters.sort((a, b) => b[1] - a[1]).map(([id, n]) => `  ${(id || '(base)').padEnd(20)} ${String(n).padStart(6)}`));
  }
  return lines.join('\n');
}
