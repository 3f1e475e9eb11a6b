/**
 * The continuous-batching engine: validates and queues requests, runs the step loop
 * `plan = scheduler.schedule(); result = await executor.execute(plan); scheduler.update(plan, result)` while there is
 * work, and sleeps (no spinning) when there is none. Events reach callers through one async iterable per request.
 *
 * Context-length rule (decided here): a request is rejected at submit with PROMPT_TOO_LONG when
 * `prompt + maxNewTokens > maxContextTokens`, naming both values. Generation is never cut short by the context
 * silently, and a request never fails mid-stream for lack of positions.
 */
import { TesseraError, outOfRange } from '../errors.ts';
import type { AdapterSlots } from './adapter-slots.ts';
import { systemClock, type Clock } from './clock.ts';
import { createEventChannel } from './event-channel.ts';
import type { Executor } from './executor.ts';
import type { Detokenizer } from './output/incremental-detokenizer.ts';
import type { GenerationEvent, ValidGenerateRequest } from './request.ts';
import {
  DEFAULT_MAX_TOP_N_LOGPROBS,
  validatePromptTokenIds,
  validateSamplingParams,
  validateStopping,
  validateTopNLogprobs,
} from './sampler/sampling-validation.ts';
import type { AdmissionPolicy } from './scheduler/admission-policy.ts';
import { createScheduler, type AdapterActivity, type SchedulerStats } from './scheduler/scheduler.ts';
import { createSequence, type Sequence } from './sequence.ts';

export interface EngineLimits {
  /** Upper bound of stopping.maxNewTokens (default: maxContextTokens - 1). */
  maxNewTokens: number;
  maxStopSequences: number;
  maxStopSequenceChars: number;
  maxStopTokenIds: number;
  maxTopNLogprobs: number;
}

export interface EngineOptions {
  executor: Executor;
  /** null: token-id-only mode (every text field is '', stop sequences are rejected). */
  detokenizer: Detokenizer | null;
  eosTokenIds: readonly number[];
  /** Tokens per step over all sequences. Default 2048. */
  maxBatchTokens?: number;
  /** Largest prefill chunk of one sequence per step. Default 512. */
  prefillChunkTokens?: number;
  /** Sequences holding KV blocks at once (<= maxBatchTokens). Default min(64, maxBatchTokens). */
  maxRunningSequences?: number;
  /** Waiting (not yet admitted) requests; a submit beyond it throws QUEUE_FULL. Default 1024. */
  maxQueuedRequests?: number;
  /** Default 3. */
  maxPreemptionsPerRequest?: number;
  /** Default systemClock (Date.now). */
  clock?: Clock;
  /** Default FCFS. */
  admissionPolicy?: AdmissionPolicy;
  /**
   * Decode steps per executor call when a step is decode-only and every row is loop-eligible (greedy or temperature
   * with top-k; see scheduler/decode-loop-policy.ts). Must be <= executor.layout.maxDecodeStepsPerRun. Default 1.
   */
  decodeStepsPerRun?: number;
  /** null (default): base model only; requests with an adapter fail ADAPTER_NOT_FOUND. */
  adapterSlots?: AdapterSlots | null;
  /** While every queued request waits for an adapter load, the loop re-checks after this long. Default 2 ms. */
  adapterPollMs?: number;
  limits?: Partial<EngineLimits>;
}

export interface EngineStats extends SchedulerStats {
  draining: boolean;
  stopped: boolean;
}

export interface SubmitOptions {
  signal?: AbortSignal;
}

export interface Engine {
  /**
   * Queues a request and returns its event stream ('tokens'... then one 'finish'). Throws at once (TesseraError)
   * for invalid parameters (INVALID_ARGUMENT), PROMPT_TOO_LONG, KV_CACHE_EXHAUSTED (prompt larger than the whole
   * cache), ADAPTER_NOT_FOUND (no adapter provider), QUEUE_FULL and DRAINING. Aborting `signal`, or leaving the
   * iteration early, cancels the request (finish 'cancelled') and frees its KV blocks at once.
   */
  submit(req: ValidGenerateRequest, opts?: SubmitOptions): AsyncIterable<GenerationEvent>;
  stats(): EngineStats;
  /** Adapters of running and waiting requests (the LoRA info metric of the inference gateway). */
  adapterActivity(): AdapterActivity;
  /**
   * Stops admitting new submits (they throw DRAINING) and resolves once every request has finished; requests still
   * unfinished at `deadlineMs` (absolute, on the engine clock) are cancelled with a DRAINING error.
   */
  drain(deadlineMs: number): Promise<void>;
  /** Cancels everything, stops the loop and waits for the step in flight. Idempotent. The executor is not shut down. */
  shutdown(): Promise<void>;
}

export function createEngine(opts: EngineOptions): Engine {
  const executor = opts.executor;
  const layout = executor.layout;
  const clock = opts.clock ?? systemClock;
  const detokenizer = opts.detokenizer;
  const eosTokenIds = new Set(opts.eosTokenIds);
  const maxQueuedRequests = opts.maxQueuedRequests ?? 1024;
  const adapterSlots = opts.adapterSlots ?? null;
  const adapterPollMs = opts.adapterPollMs ?? 2;
  const limits: EngineLimits = {
    maxNewTokens: opts.limits?.maxNewTokens ?? layout.maxContextTokens - 1,
    maxStopSequences: opts.limits?.maxStopSequences ?? 8,
    maxStopSequenceChars: opts.limits?.maxStopSequenceChars ?? 256,
    maxStopTokenIds: opts.limits?.maxStopTokenIds ?? 64,
    maxTopNLogprobs: opts.limits?.maxTopNLogprobs ?? DEFAULT_MAX_TOP_N_LOGPROBS,
  };
  const scheduler = createScheduler({
    layout,
    clock,
    maxBatchTokens: opts.maxBatchTokens ?? 2048,
    prefillChunkTokens: opts.prefillChunkTokens ?? 512,
    maxRunningSequences: opts.maxRunningSequences,
    maxPreemptionsPerRequest: opts.maxPreemptionsPerRequest ?? 3,
    admissionPolicy: opts.admissionPolicy,
    adapterSlots,
    decodeStepsPerRun: opts.decodeStepsPerRun,
  });

  let draining = false;
  let drainDeadlineMs = Infinity;
  let stopped = false;
  let shutdownPromise: Promise<void> | null = null;
  const drainWaiters: Array<() => void> = [];
  let wakeLoop: (() => void) | null = null;
  let loopDone: Promise<void> | null = null;

  function wake(): void {
    const w = wakeLoop;
    wakeLoop = null;
    w?.();
  }

  /** Resolves on wake(), or after timeoutMs when given. */
  function sleep(timeoutMs: number | null): Promise<void> {
    return new Promise((resolve) => {
      let timer: NodeJS.Timeout | undefined;
      wakeLoop = () => {
        if (timer !== undefined) clearTimeout(timer);
        resolve();
      };
      if (timeoutMs !== null) timer = setTimeout(wake, timeoutMs);
    });
  }

  function validate(req: ValidGenerateRequest): void {
    validatePromptTokenIds(req.promptTokenIds, layout.vocabSize);
    validateSamplingParams(req.sampling);
    validateStopping(req.stopping, { ...limits, vocabSize: layout.vocabSize });
    validateTopNLogprobs(req.topNLogprobs, limits.maxTopNLogprobs);
    if (detokenizer === null && req.stopping.stopSequences.length > 0) {
      throw outOfRange('stopping.stopSequences.length', '0 when the engine runs in token-id-only mode (no detokenizer)', req.stopping.stopSequences.length);
    }
    const promptTokens = req.promptTokenIds.length;
    const total = promptTokens + req.stopping.maxNewTokens;
    if (total > layout.maxContextTokens) {
      throw new TesseraError(
        'PROMPT_TOO_LONG',
        `\`promptTokenIds.length + stopping.maxNewTokens\` must be <= ${layout.maxContextTokens} (model context). ` +
          `Given: ${promptTokens} + ${req.stopping.maxNewTokens} = ${total}`,
      );
    }
    const blocksNeeded = Math.ceil((promptTokens + 1) / layout.blockSizeTokens);
    if (blocksNeeded > layout.numKvBlocks) {
      throw new TesseraError(
        'KV_CACHE_EXHAUSTED',
        `prompt of ${promptTokens} tokens needs ${blocksNeeded} KV blocks; the cache has ${layout.numKvBlocks} (of ${layout.blockSizeTokens} tokens)`,
      );
    }
    if (req.adapterId !== null && adapterSlots === null) {
      throw new TesseraError('ADAPTER_NOT_FOUND', `adapter ${JSON.stringify(req.adapterId)} not found: this engine serves the base model only`);
    }
  }

  function submit(req: ValidGenerateRequest, submitOpts?: SubmitOptions): AsyncIterable<GenerationEvent> {
    if (stopped || draining) throw new TesseraError('DRAINING', 'the engine is draining or shut down and accepts no new requests');
    validate(req);
    const stats = scheduler.stats();
    if (stats.queued >= maxQueuedRequests) {
      throw new TesseraError('QUEUE_FULL', `\`queued requests\` must be < ${maxQueuedRequests} (maxQueuedRequests). Given: ${stats.queued} queued`);
    }
    const signal = submitOpts?.signal;
    let seq: Sequence | null = null;
    const cancel = (): void => {
      if (seq === null || seq.phase === 'finished') return;
      scheduler.abort(seq, 'cancelled', new TesseraError('CANCELLED', `request ${req.requestId} was cancelled`));
      wake();
    };
    const channel = createEventChannel<GenerationEvent>(cancel);
    seq = createSequence({
      request: req,
      arrivalMs: clock.nowMs(),
      detokenizer,
      eosTokenIds,
      emit: (event) => {
        channel.push(event);
        if (event.type === 'finish') {
          channel.close();
          signal?.removeEventListener('abort', cancel);
        }
      },
    });
    scheduler.enqueue(seq);
    if (signal !== undefined) {
      if (signal.aborted) cancel();
      else signal.addEventListener('abort', cancel, { once: true });
    }
    wake();
    return channel.iterable;
  }

  function settleDrain(): void {
    if (scheduler.hasWork()) return;
    for (const resolve of drainWaiters.splice(0)) resolve();
  }

  async function runLoop(): Promise<void> {
    while (!stopped) {
      if (draining && clock.nowMs() >= drainDeadlineMs) {
        scheduler.abortAll('cancelled', new TesseraError('DRAINING', 'server shut down before the request finished (its drain timeout passed); retry on another replica'));
      }
      if (!scheduler.hasWork()) {
        settleDrain();
        await sleep(null);
        continue;
      }
      let plan;
      try {
        plan = scheduler.schedule();
      } catch (err) {
        // A scheduler bug must not leave callers hanging: fail what is outstanding, keep serving.
        const message = err instanceof Error ? err.message : String(err);
        scheduler.abortAll('error', new TesseraError('INTERNAL', `scheduler failed: ${message}`, { cause: err }));
        continue;
      }
      if (plan.sequences.length === 0) {
        // Work exists but none is runnable now (adapters loading): look again shortly.
        if (scheduler.hasWork()) await sleep(adapterPollMs);
        continue;
      }
      let result;
      try {
        result = await executor.execute(plan);
      } catch (err) {
        scheduler.failStep(plan, err);
        continue;
      }
      try {
        scheduler.update(plan, result);
      } catch (err) {
        scheduler.failStep(plan, err);
      }
      // Let timers, I/O and abort signals run between steps even when the executor resolves at once.
      await new Promise<void>((resolve) => setImmediate(resolve));
    }
  }

  loopDone = runLoop();

  return {
    submit,
    stats: () => ({ ...scheduler.stats(), draining, stopped }),
    adapterActivity: () => scheduler.adapterActivity(),
    drain(deadlineMs: number): Promise<void> {
      draining = true;
      drainDeadlineMs = Math.min(drainDeadlineMs, deadlineMs);
      const done = new Promise<void>((resolve) => drainWaiters.push(resolve));
      settleDrain();
      wake();
      return done;
    },
    shutdown(): Promise<void> {
      if (shutdownPromise !== null) return shutdownPromise;
      stopped = true;
      draining = true;
      scheduler.abortAll('cancelled', new TesseraError('DRAINING', 'cancelled: the engine is shutting down'));
      settleDrain();
      wake();
      shutdownPromise = loopDone!.then(() => undefined);
      return shutdownPromise;
    },
  };
}
