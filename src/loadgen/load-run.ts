/**
 * Drives a Generation endpoint with synthetic requests: closed loop (`concurrency` calls always in flight) or open
 * loop (Poisson arrivals at `ratePerS`, optionally capped at `concurrency` in flight). Bounded by a request count or
 * a duration, and always by a hard wall-clock cap; calls still outstanding at the end are cancelled.
 */
import { performance } from 'node:perf_hooks';
import { TesseraError } from '../errors.ts';
import type { CallRecord, GenerationClient, LoadRequest, RunningCall, ServedModelInfo } from './generation-client.ts';
import { createAdapterPicker, createRng, exponentialGapMs, lengthDistMax, sampleLength, type AdapterDist, type LengthDist, type Rng } from './random.ts';

export interface WorkloadOptions {
  promptTokens: LengthDist;
  outputTokens: LengthDist;
  /** Adapter ids to spread requests over; empty = base model only. */
  adapterIds?: readonly string[];
  /** Default uniform. */
  adapterDist?: AdapterDist;
  /** Sampling temperature sent with every request (default 0: greedy). */
  temperature?: number;
  /** Seeds prompts, lengths, adapters, per-request sampling seeds and arrivals (default 1). */
  seed?: number;
  /** request_id prefix (default 'bench'). */
  requestIdPrefix?: string;
}

export interface LoadOptions extends WorkloadOptions {
  client: GenerationClient;
  model: ServedModelInfo;
  /** Stop issuing after this many requests. At least one of numRequests / durationMs is required. */
  numRequests?: number | null;
  /** Stop issuing after this long. */
  durationMs?: number | null;
  /** Most calls in flight. Default: 1 without a rate, unbounded with one. */
  concurrency?: number | null;
  /** Poisson arrivals per second (open loop); null = closed loop. */
  ratePerS?: number | null;
  /** GenerateStream (true, default) or Generate. */
  stream?: boolean;
  /** gRPC deadline of each call (default 60 s). */
  requestTimeoutMs?: number;
  /** Duration mode: how long calls in flight when the duration ends may still finish (default requestTimeoutMs). */
  graceMs?: number;
  /** Hard cap on the whole run; outstanding calls are cancelled when it fires (default 10 min). */
  maxWallMs?: number;
  onProgress?: (p: LoadProgress) => void;
  /** Default 250 ms. */
  progressIntervalMs?: number;
}

export interface LoadProgress {
  issued: number;
  completed: number;
  failed: number;
  inFlight: number;
  elapsedMs: number;
}

export type StopReason = 'count' | 'duration' | 'wall-cap';

export interface LoadResult {
  /** Calls that ended by themselves (success or a server/transport error), in completion order. */
  records: CallRecord[];
  /** Calls the load generator cancelled at the end (grace or wall cap ran out). */
  cancelledAtEnd: CallRecord[];
  /** performance.now() when the run started. */
  startMs: number;
  wallMs: number;
  stoppedBy: StopReason;
  /** Sampled lengths cut to the server's limits (distributions only). */
  numClampedLengths: number;
}

/** Makes request i of the workload: random prompt ids in [0, vocab), lengths clamped to the model's limits. */
export function createRequestFactory(model: ServedModelInfo, opts: WorkloadOptions): { next(): LoadRequest; numClamped(): number } {
  const maxPrompt = Math.min(model.maxPromptTokens, model.maxContextTokens - 1);
  if (opts.promptTokens.kind === 'fixed' && opts.promptTokens.tokens > maxPrompt) {
    throw new TesseraError('CONFIG_INVALID', `--prompt-tokens must be <= ${maxPrompt} (the server's prompt limit for ${model.modelId}). Given: ${opts.promptTokens.tokens}`);
  }
  const maxOutput = Math.min(model.maxNewTokens, model.maxContextTokens - 1);
  if (opts.outputTokens.kind === 'fixed' && opts.outputTokens.tokens > maxOutput) {
    throw new TesseraError('CONFIG_INVALID', `--output-tokens must be <= ${maxOutput} (the server's max_new_tokens for ${model.modelId}). Given: ${opts.outputTokens.tokens}`);
  }
  if (opts.promptTokens.kind === 'fixed' && opts.outputTokens.kind === 'fixed' && opts.promptTokens.tokens + opts.outputTokens.tokens > model.maxContextTokens) {
    throw new TesseraError('CONFIG_INVALID', `--prompt-tokens + --output-tokens must be <= ${model.maxContextTokens} (context of ${model.modelId}). Given: ${opts.promptTokens.tokens} + ${opts.outputTokens.tokens}`);
  }
  const rng: Rng = createRng(opts.seed ?? 1);
  const pickAdapter = createAdapterPicker(opts.adapterIds ?? [], opts.adapterDist ?? { kind: 'uniform' });
  const prefix = opts.requestIdPrefix ?? 'bench';
  let index = 0;
  let clamped = 0;
  return {
    next() {
      const promptLen = sampleLength(opts.promptTokens, rng, maxPrompt);
      const outMax = Math.min(maxOutput, model.maxContextTokens - promptLen);
      const outputLen = sampleLength(opts.outputTokens, rng, outMax);
      if (lengthDistMax(opts.promptTokens) > maxPrompt && promptLen === maxPrompt) clamped++;
      else if (lengthDistMax(opts.outputTokens) > outMax && outputLen === outMax) clamped++;
      const promptTokenIds = new Array<number>(promptLen);
      for (let i = 0; i < promptLen; i++) promptTokenIds[i] = rng.nextInt(model.vocabSize);
      return {
        requestId: `${prefix}-${index++}`,
        adapterId: pickAdapter ? pickAdapter(rng) : '',
        promptTokenIds,
        maxNewTokens: outputLen,
        temperature: opts.temperature ?? 0,
        seed: rng.nextInt(2 ** 31),
      };
    },
    numClamped: () => clamped,
  };
}

export async function runLoad(opts: LoadOptions): Promise<LoadResult> {
  const numRequests = opts.numRequests ?? null;
  const durationMs = opts.durationMs ?? null;
  if (numRequests === null && durationMs === null) throw new TesseraError('CONFIG_INVALID', 'give --requests or --duration (the run must be bounded)');
  const ratePerS = opts.ratePerS ?? null;
  const maxInFlight = opts.concurrency ?? (ratePerS === null ? 1 : Infinity);
  const requestTimeoutMs = opts.requestTimeoutMs ?? 60_000;
  const graceMs = opts.graceMs ?? requestTimeoutMs;
  const maxWallMs = opts.maxWallMs ?? 600_000;
  const stream = opts.stream ?? true;
  const factory = createRequestFactory(opts.model, opts);
  const arrivalRng = createRng(opts.seed ?? 1, 'arrivals');

  const startMs = performance.now();
  const elapsed = () => performance.now() - startMs;
  const inFlight = new Set<RunningCall>();
  const records: CallRecord[] = [];
  let issued = 0;
  let failed = 0;
  let stoppedBy: StopReason | null = null;
  let wake: (() => void) | null = null;
  const wakeUp = () => {
    const w = wake;
    wake = null;
    w?.();
  };
  /** Resolves after ms, or earlier when a call finishes or the run stops. */
  const nap = (ms: number) =>
    new Promise<void>((resolve) => {
      const t = setTimeout(() => {
        if (wake === done) wake = null;
        resolve();
      }, Math.max(0, ms));
      const done = () => {
        clearTimeout(t);
        resolve();
      };
      wake = done;
    });
  let wallCapHit = false;
  const capped = () => wallCapHit;
  const wallTimer = setTimeout(() => {
    wallCapHit = true;
    stoppedBy = 'wall-cap'; // also when the issue phase had already ended: calls are cut short
    wakeUp();
  }, maxWallMs);
  const progressTimer = opts.onProgress ? setInterval(() => opts.onProgress!({ issued, completed: records.length, failed, inFlight: inFlight.size, elapsedMs: elapsed() }), opts.progressIntervalMs ?? 250) : null;
  const cancelled: CallRecord[] = [];
  let cancelling = false;

  const launch = () => {
    const call = opts.client.start(factory.next(), { stream, timeoutMs: requestTimeoutMs });
    issued++;
    inFlight.add(call);
    void call.done.then((rec) => {
      inFlight.delete(call);
      if (cancelling && rec.status === 'CANCELLED') cancelled.push(rec);
      else {
        records.push(rec);
        if (rec.status !== 'OK') failed++;
      }
      wakeUp();
    });
  };

  try {
    // Issue phase. Rate mode: nextArrivalMs is when the next request is due (cumulative exponential gaps, so the
    // schedule does not drift); a request due while `concurrency` calls are in flight goes out as soon as one ends.
    let nextArrivalMs = 0;
    for (;;) {
      if (stoppedBy) break;
      if (numRequests !== null && issued >= numRequests) {
        stoppedBy = 'count';
        break;
      }
      const leftMs = durationMs !== null ? durationMs - elapsed() : Infinity;
      if (leftMs <= 0) {
        stoppedBy = 'duration';
        break;
      }
      if (ratePerS !== null && nextArrivalMs > elapsed()) {
        await nap(Math.min(nextArrivalMs - elapsed(), leftMs));
        continue;
      }
      if (inFlight.size >= maxInFlight) {
        await nap(Math.min(leftMs, maxWallMs));
        continue;
      }
      launch();
      if (ratePerS !== null) nextArrivalMs += exponentialGapMs(arrivalRng, ratePerS);
    }
    // Drain phase: calls in flight may finish until the grace (duration mode) or the wall cap ends.
    const drainEndMs = stoppedBy === 'duration' ? Math.min(maxWallMs, elapsed() + graceMs) : maxWallMs;
    while (inFlight.size > 0 && !capped() && elapsed() < drainEndMs) await nap(drainEndMs - elapsed());
  } finally {
    clearTimeout(wallTimer);
    cancelling = true;
    const outstanding = [...inFlight];
    for (const call of outstanding) call.cancel();
    await Promise.all(outstanding.map((c) => c.done));
    if (progressTimer) clearInterval(progressTimer);
  }
  opts.onProgress?.({ issued, completed: records.length, failed, inFlight: 0, elapsedMs: elapsed() });
  return { records, cancelledAtEnd: cancelled, startMs, wallMs: elapsed(), stoppedBy: stoppedBy ?? 'count', numClampedLengths: factory.numClamped() };
}
