/**
 * The same closed-loop workload for any generator: `numStreams` streams, each taking the next prompt as soon as its
 * previous request finished, until the prompts run out. Per request: when it started, when its first generated token
 * arrived and when it finished, so throughput, TTFT and TPOT come out of one definition for every system compared.
 */
import { summarize, type LatencySummary } from '../../src/loadgen/latency-stats.ts';

export interface RequestTiming {
  /** performance.now() clock, ms. */
  startMs: number;
  firstTokenMs: number;
  endMs: number;
  outputTokens: number;
}

/** Generates for one prompt on stream `stream` (0 .. numStreams - 1; a stream runs one request at a time). */
export type Generate = (promptTokenIds: number[], stream: number) => Promise<RequestTiming>;

export interface LoopResult {
  numStreams: number;
  requests: RequestTiming[];
  wallMs: number;
  /** All generated tokens / wall time. */
  tokensPerS: number;
}

export async function runClosedLoop(prompts: readonly number[][], numStreams: number, generate: Generate): Promise<LoopResult> {
  let next = 0;
  const requests: RequestTiming[] = [];
  const started = performance.now();
  const stream = async (s: number) => {
    while (next < prompts.length) requests.push(await generate(prompts[next++], s));
  };
  await Promise.all(Array.from({ length: numStreams }, (_, s) => stream(s)));
  const wallMs = performance.now() - started;
  const tokens = requests.reduce((a, r) => a + r.outputTokens, 0);
  return { numStreams, requests, wallMs, tokensPerS: (tokens * 1000) / wallMs };
}

/** TTFT (start to first token) and TPOT ((end - first token) / (tokens - 1)) over requests, ms. */
export function requestLatencies(requests: readonly RequestTiming[]): { ttftMs: LatencySummary | null; tpotMs: LatencySummary | null } {
  return {
    ttftMs: summarize(requests.map((r) => r.firstTokenMs - r.startMs)),
    tpotMs: summarize(requests.filter((r) => r.outputTokens > 1).map((r) => (r.endMs - r.firstTokenMs) / (r.outputTokens - 1))),
  };
}
