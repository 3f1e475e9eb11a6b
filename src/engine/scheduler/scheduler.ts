/**
 * Iteration-level scheduler: `schedule()` builds the next StepPlan, `update(plan, result)` consumes the executor's
 * result. Sequences join (admission) and leave (finish, cancel, preemption) only between steps.
 *
 * A step, within `maxBatchTokens` tokens and `maxRunningSequences` resident sequences:
 *   1. one decode token for every running sequence that has exactly one token to feed (admission order);
 *   2. the next prefill chunk (<= prefillChunkTokens) of running sequences still prefilling (admission order);
 *   3. admissions from the queue, in the admission policy's order, each with its first prefill chunk.
 * So running sequences keep producing tokens while long prompts are prefilled chunk by chunk. `sampleNext` is set
 * only on the chunk that reaches the last known token.
 *
 * KV blocks: admission needs blocks for all known tokens plus one; a decode that crosses a block boundary takes one
 * more. When none is free, the most recently admitted sequence is preempted (recompute): its blocks and adapter
 * reference are freed, it goes back to the front of the queue and later re-prefills prompt + generated tokens. After
 * `maxPreemptionsPerRequest` preemptions a request fails with KV_CACHE_EXHAUSTED. Nothing is ever truncated.
 *
 * Multi-step decode (`decodeStepsPerRun` > 1, decode-loop-policy.ts): a step that turned out decode-only (no prefill
 * chunk, no admission), whose rows are all loop-eligible, asks the executor for k steps in one call, k = min(
 * decodeStepsPerRun, tokens any row may still generate), when blocks for positions up to start + k can be reserved
 * without preempting anyone (else one step). `update` then applies each row's k tokens one by one (EOS, stop ids,
 * stop sequences, max tokens, streaming) and drops a row's tokens after its stop. Sequences join and leave, and
 * cancellation and deadlines take effect, at those k-step boundaries.
 *
 * In-graph sampling (executors with `layout.samplesInGraph`, e.g. the device-KV runner on WebGPU): in a one-step plan
 * every loop-eligible sampling row (decode or prompt-ending prefill chunk) gets its `loopSampling`, and the plan
 * `sampleInGraph`; the executor returns one sampled token for each such row and logits for the other sampling rows
 * (penalties, top-p, min-p, top-n logprobs), which the host samples. A seeded row is thus always drawn from the graph's
 * stream, whatever its batch mates need, and keeps its tokens. Prefill + decode steps qualify too: under continuous
 * batching most steps while requests arrive are mixed.
 */
import { TesseraError, isTesseraError } from '../../errors.ts';
import type { AdapterSlots } from '../adapter-slots.ts';
import type { Clock } from '../clock.ts';
import { sampledInGraph, type ExecutorLayout, type SequenceWork, type StepPlan, type StepResult } from '../executor.ts';
import { createKvBlockAllocator } from '../kv-cache/kv-block-allocator.ts';
import type { FinishReason, GeneratedToken } from '../request.ts';
import { recordGenerated } from '../sampler/penalties.ts';
import { createSampler, type Sampler } from '../sampler/sampler.ts';
import { numPendingTokens, type Sequence } from '../sequence.ts';
import type { AdmissionPolicy } from './admission-policy.ts';
import { decodeStepsFor, loopSamplingOf } from './decode-loop-policy.ts';
import { fcfsPolicy } from './scheduler-policy-fcfs.ts';

export interface SchedulerOptions {
  layout: ExecutorLayout;
  clock: Clock;
  /** Tokens per step over all sequences (decodes + prefill chunks). */
  maxBatchTokens?: number;
  /** Largest prefill chunk of one sequence in one step. */
  prefillChunkTokens?: number;
  /** Sequences holding KV blocks at once; <= maxBatchTokens. Default min(64, maxBatchTokens). */
  maxRunningSequences?: number;
  maxPreemptionsPerRequest?: number;
  admissionPolicy?: AdmissionPolicy;
  /** null: base model only. */
  adapterSlots?: AdapterSlots | null;
  /** Defaults to one created for layout.vocabSize. */
  sampler?: Sampler;
  /** Decode steps per executor call for decode-only steps (<= layout.maxDecodeStepsPerRun). Default 1. */
  decodeStepsPerRun?: number;
}

export interface SchedulerStats {
  queued: number;
  running: number;
  /** Queued sequences whose adapter was 'pending' at the last admission attempt. */
  waitingForAdapter: number;
  kvBlocksUsed: number;
  kvBlocksTotal: number;
  stepCount: number;
  preemptionCount: number;
  finishedCount: number;
  /** Tokens in the last plan. */
  lastStepTokens: number;
  lastStepSequences: number;
}

export interface Scheduler {
  readonly maxBatchTokens: number;
  readonly prefillChunkTokens: number;
  readonly maxRunningSequences: number;
  enqueue(seq: Sequence): void;
  /** Ends a sequence now: frees its KV blocks and adapter reference, emits its finish event. No-op once finished. */
  abort(seq: Sequence, reason: FinishReason, error?: Error): void;
  /** Ends every waiting and running sequence. */
  abortAll(reason: FinishReason, error?: Error): void;
  schedule(): StepPlan;
  update(plan: StepPlan, result: StepResult): void;
  /** The executor threw for this plan: fails the sequences of that plan only. */
  failStep(plan: StepPlan, error: unknown): void;
  hasWork(): boolean;
  stats(): SchedulerStats;
  /** Distinct adapter ids of running sequences, and of waiting ones whose adapter is known (loading or resident). */
  adapterActivity(): AdapterActivity;
}

export interface AdapterActivity {
  running: string[];
  waiting: string[];
}

export function createScheduler(opts: SchedulerOptions): Scheduler {
  const layout = opts.layout;
  const clock = opts.clock;
  const maxBatchTokens = opts.maxBatchTokens ?? 2048;
  const prefillChunkTokens = opts.prefillChunkTokens ?? 512;
  const maxRunningSequences = opts.maxRunningSequences ?? Math.min(64, maxBatchTokens);
  const maxPreemptions = opts.maxPreemptionsPerRequest ?? 3;
  const policy = opts.admissionPolicy ?? fcfsPolicy;
  const adapterSlots = opts.adapterSlots ?? null;
  const sampler = opts.sampler ?? createSampler({ vocabSize: layout.vocabSize });
  requirePositiveInteger('maxBatchTokens', maxBatchTokens);
  requirePositiveInteger('prefillChunkTokens', prefillChunkTokens);
  requirePositiveInteger('maxRunningSequences', maxRunningSequences);
  if (maxBatchTokens < maxRunningSequences) {
    // Otherwise the same oldest sequences would take every decode slot and the rest would stall.
    throw new TesseraError(
      'CONFIG_INVALID',
      `\`maxBatchTokens\` must be >= maxRunningSequences (${maxRunningSequences}), one decode token per running sequence. Given: ${maxBatchTokens}`,
    );
  }
  const decodeStepsPerRun = opts.decodeStepsPerRun ?? 1;
  const maxStepsPerRun = layout.maxDecodeStepsPerRun ?? 1;
  if (!Number.isSafeInteger(decodeStepsPerRun) || decodeStepsPerRun < 1 || decodeStepsPerRun > maxStepsPerRun) {
    throw new TesseraError(
      'CONFIG_INVALID',
      `\`decodeStepsPerRun\` must be an integer >= 1 and <= ${maxStepsPerRun} (the executor's maxDecodeStepsPerRun). Given: ${JSON.stringify(decodeStepsPerRun)}`,
    );
  }
  const kv = createKvBlockAllocator({ numKvBlocks: layout.numKvBlocks, blockSizeTokens: layout.blockSizeTokens });

  let waiting: Sequence[] = [];
  /** Resident sequences in admission order (oldest first). */
  const running: Sequence[] = [];
  const bySeqId = new Map<number, Sequence>();
  let released: number[] = [];
  let nextSeqId = 0;
  let nextAdmittedOrder = 0;
  let stepCount = 0;
  let preemptionCount = 0;
  let finishedCount = 0;
  let lastStepTokens = 0;
  let lastStepSequences = 0;
  const pendingAdapter = new Set<Sequence>();

  function leaveResidency(seq: Sequence): void {
    if (seq.phase === 'running') {
      kv.free(seq.blockTable);
      seq.blockTable = [];
      running.splice(running.indexOf(seq), 1);
      bySeqId.delete(seq.seqId);
      released.push(seq.seqId);
      seq.seqId = -1;
      seq.numComputed = 0;
    }
    if (seq.adapterHeld) {
      adapterSlots!.release(seq.request.adapterId!, seq.adapterSlot);
      seq.adapterHeld = false;
      seq.adapterSlot = 0;
    }
  }

  function abort(seq: Sequence, reason: FinishReason, error?: Error): void {
    if (seq.phase === 'finished') return;
    leaveResidency(seq);
    if (seq.phase === 'waiting') {
      waiting = waiting.filter((s) => s !== seq);
      pendingAdapter.delete(seq);
    }
    seq.phase = 'finished';
    finishedCount++;
    seq.output.finish(reason, error);
  }

  function preempt(seq: Sequence): void {
    leaveResidency(seq);
    seq.numPreemptions++;
    preemptionCount++;
    if (seq.numPreemptions > maxPreemptions) {
      seq.phase = 'waiting'; // so that abort() finds nothing resident to free
      abort(
        seq,
        'error',
        new TesseraError(
          'KV_CACHE_EXHAUSTED',
          `request ${seq.request.requestId} was preempted for KV cache space more than ${maxPreemptions} times ` +
            `(maxPreemptionsPerRequest); ${kv.numKvBlocks} blocks of ${kv.blockSizeTokens} tokens in all`,
        ),
      );
      return;
    }
    seq.phase = 'waiting';
    waiting.unshift(seq);
  }

  /**
   * Grows seq's block table to cover `numTokens` positions, preempting the most recently admitted sequences while
   * blocks are short. Returns false when seq itself had to go. `planned` loses the entries of preempted sequences.
   */
  function ensureBlocks(seq: Sequence, numTokens: number, planned: Map<Sequence, SequenceWork>): boolean {
    const missing = kv.blocksFor(numTokens) - seq.blockTable.length;
    if (missing <= 0) return true;
    for (;;) {
      const got = kv.allocate(missing);
      if (got !== null) {
        seq.blockTable.push(...got);
        return true;
      }
      const victim = running[running.length - 1];
      planned.delete(victim);
      preempt(victim);
      if (victim === seq) return false;
    }
  }

  function workFor(seq: Sequence, numTokens: number): SequenceWork {
    const start = seq.numComputed;
    return {
      seqId: seq.seqId,
      tokenIds: seq.tokenIds.slice(start, start + numTokens),
      startPosition: start,
      blockTable: seq.blockTable.slice(),
      adapterSlot: seq.adapterSlot,
      sampleNext: start + numTokens === seq.tokenIds.length,
    };
  }

  function expireDeadlines(nowMs: number): void {
    for (const seq of [...running, ...waiting]) {
      const deadline = seq.request.deadlineMs;
      if (deadline !== null && nowMs >= deadline) {
        abort(
          seq,
          'deadline',
          new TesseraError('DEADLINE_EXCEEDED', `request ${seq.request.requestId} passed its deadline (${deadline} ms, now ${nowMs} ms)`),
        );
      }
    }
  }

  /** Takes an adapter reference; false when the sequence must stay queued ('pending') or has failed. */
  function acquireAdapter(seq: Sequence): boolean {
    const adapterId = seq.request.adapterId;
    if (adapterId === null) return true;
    if (adapterSlots === null) {
      abort(seq, 'error', new TesseraError('ADAPTER_NOT_FOUND', `adapter ${JSON.stringify(adapterId)} not found: this engine serves the base model only`));
      return false;
    }
    const slot = adapterSlots.acquire(adapterId, seq.request.tenantId);
    if (slot === 'pending') {
      pendingAdapter.add(seq);
      return false;
    }
    pendingAdapter.delete(seq);
    if (isTesseraError(slot)) {
      abort(seq, 'error', slot);
      return false;
    }
    if (!Number.isSafeInteger(slot) || slot < 1 || slot >= layout.numAdapterSlots) {
      adapterSlots.release(adapterId, slot);
      abort(seq, 'error', new TesseraError('INTERNAL', `adapter ${adapterId} was given slot ${slot}, outside [1, ${layout.numAdapterSlots})`));
      return false;
    }
    seq.adapterSlot = slot;
    seq.adapterHeld = true;
    return true;
  }

  function admit(planned: Map<Sequence, SequenceWork>, budgetTokens: number): number {
    let budget = budgetTokens;
    for (const seq of policy.order(waiting, clock.nowMs())) {
      if (budget === 0 || running.length >= maxRunningSequences) break;
      if (seq.phase !== 'waiting') continue;
      const blocksNeeded = kv.blocksFor(seq.tokenIds.length + 1);
      if (blocksNeeded > kv.numKvBlocks) {
        abort(
          seq,
          'error',
          new TesseraError(
            'KV_CACHE_EXHAUSTED',
            `request ${seq.request.requestId} needs ${blocksNeeded} KV blocks for ${seq.tokenIds.length} tokens; the cache has ${kv.numKvBlocks}`,
          ),
        );
        continue;
      }
      if (kv.numFree() < blocksNeeded) break; // head-of-line: admit in order, no starvation
      if (!acquireAdapter(seq)) continue;
      seq.blockTable = kv.allocate(blocksNeeded)!;
      waiting = waiting.filter((s) => s !== seq);
      seq.phase = 'running';
      seq.seqId = nextSeqId++;
      seq.admittedOrder = nextAdmittedOrder++;
      seq.numComputed = 0;
      running.push(seq);
      bySeqId.set(seq.seqId, seq);
      const chunk = Math.min(numPendingTokens(seq), prefillChunkTokens, budget);
      planned.set(seq, workFor(seq, chunk));
      budget -= chunk;
    }
    return budget;
  }

  /** k > 1 when the step is decode-only, every row is loop-eligible and blocks for k positions are free (see top). */
  function planMultiStep(planned: Map<Sequence, SequenceWork>): number {
    const seqs = [...planned.keys()];
    if (seqs.length === 0 || [...planned.values()].some((w) => w.tokenIds.length !== 1 || !w.sampleNext)) return 1;
    const steps = decodeStepsFor(seqs, decodeStepsPerRun);
    if (steps === 1) return 1;
    for (const seq of seqs) {
      const missing = kv.blocksFor(seq.numComputed + steps) - seq.blockTable.length;
      if (missing <= 0) continue;
      const got = kv.allocate(missing);
      if (got === null) return 1; // blocks already taken stay with their sequences: they need them soon anyway
      seq.blockTable.push(...got);
    }
    for (const [seq, work] of planned) {
      work.blockTable = seq.blockTable.slice();
      work.loopSampling = loopSamplingOf(seq)!;
    }
    return steps;
  }

  function schedule(): StepPlan {
    expireDeadlines(clock.nowMs());
    const planned = new Map<Sequence, SequenceWork>();
    let budget = maxBatchTokens;

    for (const seq of [...running]) {
      if (budget === 0) break;
      if (seq.phase !== 'running' || numPendingTokens(seq) !== 1) continue;
      if (!ensureBlocks(seq, seq.numComputed + 1, planned)) continue;
      planned.set(seq, workFor(seq, 1));
      budget -= 1;
    }
    // Preemption above may have removed planned decodes: recount what is left.
    budget = maxBatchTokens - [...planned.values()].reduce((n, w) => n + w.tokenIds.length, 0);

    for (const seq of [...running]) {
      if (budget === 0) break;
      if (seq.phase !== 'running' || planned.has(seq) || numPendingTokens(seq) <= 1) continue;
      const chunk = Math.min(numPendingTokens(seq), prefillChunkTokens, budget);
      if (!ensureBlocks(seq, seq.numComputed + chunk, planned)) continue;
      planned.set(seq, workFor(seq, chunk));
      budget -= chunk;
    }
    if (budget > 0) admit(planned, budget);

    const decodeSteps = decodeStepsPerRun > 1 ? planMultiStep(planned) : 1;
    const sequences = [...planned.values()];
    stepCount++;
    lastStepSequences = sequences.length;
    lastStepTokens = sequences.reduce((n, w) => n + w.tokenIds.length, 0);
    const plan: StepPlan = { stepId: stepCount, sequences };
    if (decodeSteps > 1) plan.decodeSteps = decodeSteps;
    else if (layout.samplesInGraph === true) {
      for (const [seq, work] of planned) {
        const sampling = work.sampleNext ? loopSamplingOf(seq) : null;
        if (sampling === null) continue;
        work.loopSampling = sampling;
        plan.sampleInGraph = true;
      }
    }
    if (released.length > 0) {
      plan.releasedSeqIds = released;
      released = [];
    }
    return plan;
  }

  /**
   * One-step plans: each sampling row's token comes from the host sampler over its logits row, or, for rows the
   * executor sampled in its graph (`sampledInGraph`), from StepResult.sampledTokens.
   */
  function update(plan: StepPlan, result: StepResult): void {
    if ((plan.decodeSteps ?? 1) > 1) {
      updateSampled(plan, result);
      return;
    }
    const vocabSize = layout.vocabSize;
    const hostSampled = plan.sequences.some((w) => w.sampleNext && !sampledInGraph(plan, w));
    if (hostSampled && result.vocabSize !== vocabSize) {
      failStep(plan, new TesseraError('INTERNAL', `executor returned vocabSize ${result.vocabSize}, layout says ${vocabSize}`));
      return;
    }
    const sampled = result.sampledTokens;
    if (plan.sampleInGraph === true && (sampled === undefined || sampled.steps !== 1)) {
      failStep(plan, new TesseraError('INTERNAL', `executor returned ${sampled ? sampled.steps : 'no'} sampled steps for a plan sampled in the graph (1 step)`));
      return;
    }
    const numRows = Math.floor(result.logits.length / vocabSize);
    const numSampledRows = sampled?.tokenIds.length ?? 0;
    const outcomes = new Map(result.outcomes.map((o) => [o.seqId, o]));
    for (const work of plan.sequences) {
      const seq = bySeqId.get(work.seqId);
      if (seq === undefined || seq.phase !== 'running') continue; // cancelled while the step ran
      const outcome = outcomes.get(work.seqId);
      if (outcome === undefined || outcome.error !== undefined) {
        const why = outcome === undefined ? 'no outcome returned' : outcome.error;
        abort(seq, 'error', new TesseraError('INTERNAL', `executor failed sequence ${work.seqId} of request ${seq.request.requestId} in step ${plan.stepId}: ${why}`));
        continue;
      }
      seq.numComputed += work.tokenIds.length;
      if (!work.sampleNext) continue;
      const inGraph = sampledInGraph(plan, work);
      const rows = inGraph ? numSampledRows : numRows;
      if (!(outcome.logitsRow >= 0 && outcome.logitsRow < rows)) {
        const what = inGraph ? 'sampled-token' : 'logits';
        abort(seq, 'error', new TesseraError('INTERNAL', `executor gave ${what} row ${outcome.logitsRow} for sequence ${work.seqId}; the result has ${rows} rows`));
        continue;
      }
      let token: GeneratedToken;
      if (inGraph) token = { tokenId: sampled!.tokenIds[outcome.logitsRow], logprob: sampled!.logprobs[outcome.logitsRow], top: [] };
      else {
        const row = result.logits.subarray(outcome.logitsRow * vocabSize, (outcome.logitsRow + 1) * vocabSize);
        token = sampler.sample(row, seq.sampling, result.logSumExp?.[outcome.logitsRow]);
      }
      seq.tokenIds.push(token.tokenId);
      recordGenerated(seq.sampling.penalties, token.tokenId);
      const reason = seq.output.accept(token);
      if (reason !== null) abort(seq, reason);
    }
  }

  /**
   * Multi-step plans: applies each sampling row's k tokens one by one through the normal output logic; tokens after a
   * stop are dropped. Rows without sampleNext only advance.
   */
  function updateSampled(plan: StepPlan, result: StepResult): void {
    const steps = plan.decodeSteps ?? 1;
    const sampled = result.sampledTokens;
    if (sampled === undefined || sampled.steps !== steps) {
      failStep(plan, new TesseraError('INTERNAL', `executor returned ${sampled ? sampled.steps : 'no'} sampled steps for a plan of ${steps} decode steps`));
      return;
    }
    const numRows = Math.floor(sampled.tokenIds.length / steps);
    const outcomes = new Map(result.outcomes.map((o) => [o.seqId, o]));
    for (const work of plan.sequences) {
      const seq = bySeqId.get(work.seqId);
      if (seq === undefined || seq.phase !== 'running') continue; // cancelled while the step ran
      const outcome = outcomes.get(work.seqId);
      const rowMissing = work.sampleNext && outcome !== undefined && !(outcome.logitsRow >= 0 && outcome.logitsRow < numRows);
      if (outcome === undefined || outcome.error !== undefined || rowMissing) {
        const why = outcome === undefined ? 'no outcome returned' : (outcome.error ?? `row ${outcome.logitsRow} of ${numRows}`);
        abort(seq, 'error', new TesseraError('INTERNAL', `executor failed sequence ${work.seqId} of request ${seq.request.requestId} in step ${plan.stepId}: ${why}`));
        continue;
      }
      if (!work.sampleNext) {
        seq.numComputed += work.tokenIds.length;
        continue;
      }
      for (let i = 0; i < steps; i++) {
        const at = outcome.logitsRow * steps + i;
        // The fed tokens are in the cache, and each earlier sampled token of this plan after them.
        seq.numComputed = work.startPosition + work.tokenIds.length + i;
        const tokenId = sampled.tokenIds[at];
        seq.tokenIds.push(tokenId);
        recordGenerated(seq.sampling.penalties, tokenId);
        const reason = seq.output.accept({ tokenId, logprob: sampled.logprobs[at], top: [] });
        if (reason !== null) {
          abort(seq, reason);
          break;
        }
      }
    }
  }

  function failStep(plan: StepPlan, error: unknown): void {
    const err = isTesseraError(error)
      ? error
      : new TesseraError('INTERNAL', `executor failed step ${plan.stepId}: ${error instanceof Error ? error.message : String(error)}`, { cause: error });
    for (const work of plan.sequences) {
      const seq = bySeqId.get(work.seqId);
      if (seq !== undefined) abort(seq, 'error', err);
    }
  }

  return {
    maxBatchTokens,
    prefillChunkTokens,
    maxRunningSequences,
    enqueue(seq: Sequence): void {
      if (seq.phase !== 'waiting') throw new TesseraError('INTERNAL', `sequence of request ${seq.request.requestId} enqueued twice`);
      waiting.push(seq);
    },
    abort,
    abortAll(reason: FinishReason, error?: Error): void {
      for (const seq of [...running, ...waiting]) abort(seq, reason, error);
    },
    schedule,
    update,
    failStep,
    hasWork: () => running.length > 0 || waiting.length > 0,
    adapterActivity() {
      const running_ = new Set<string>();
      for (const seq of running) if (seq.request.adapterId !== null && seq.adapterHeld) running_.add(seq.request.adapterId);
      // A waiting sequence's adapter is known once acquire said 'pending', or when a running sequence holds it; an id
      // nobody checked yet stays out (made-up ids fail at their first admission attempt).
      const waiting_ = new Set<string>();
      for (const seq of pendingAdapter) if (seq.request.adapterId !== null) waiting_.add(seq.request.adapterId);
      for (const seq of waiting) if (seq.request.adapterId !== null && (running_.has(seq.request.adapterId) || seq.numPreemptions > 0)) waiting_.add(seq.request.adapterId);
      return { running: [...running_].sort(), waiting: [...waiting_].sort() };
    },
    stats: () => ({
      queued: waiting.length,
      running: running.length,
      waitingForAdapter: pendingAdapter.size,
      kvBlocksUsed: kv.numUsed(),
      kvBlocksTotal: kv.numKvBlocks,
      stepCount,
      preemptionCount,
      finishedCount,
      lastStepTokens,
      lastStepSequences,
    }),
  };
}

function requirePositiveInteger(field: string, value: number): void {
  if (!Number.isSafeInteger(value) || value < 1) {
    throw new TesseraError('CONFIG_INVALID', `\`${field}\` must be an integer >= 1. Given: ${JSON.stringify(value)}`);
  }
}
