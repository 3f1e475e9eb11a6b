import { TesseraError } from '../../errors.ts';
import { concatArrays } from '../../util/concat-arrays.ts';
import type { ExecutorLayout, SampledTokens, SequenceOutcome, SequenceWork, StepPlan, StepResult } from '../../engine/executor.ts';

/**
 * How a step becomes batches and batches become a StepResult, written once for every executor: the runners (one
 * worker, batches run one after the other) and the shard controller (batches fanned out over workers, in flight at once).
 *
 *   split:  rows that cannot run fail alone (checkRow); the others form a decode batch (one token each) and a prefill
 *           batch, so a long prompt chunk never pads the decode rows to its length; each may be cut into micro-batches
 *           (pipeline parallelism keeps several in flight)
 *   run:    each batch -> BatchOutput: the logits of its 'logits' rows, the tokens of its 'sampled' rows, in row order
 *   gather: outcomes by rowResult, logits / log-sum-exp / sampled tokens concatenated in batch order
 */

/** What a row of a plan gets back: nothing (it only fills the KV cache), a logits row for the host, or sampled tokens. */
export type RowResult = 'none' | 'logits' | 'sampled';

export function rowResult(work: SequenceWork): RowResult {
  if (!work.sampleNext) return 'none';
  return work.loopSampling !== undefined ? 'sampled' : 'logits';
}

/**
 * Why this row cannot run in a plan of `decodeSteps` steps on an executor with this layout (it then fails alone), or
 * null. The one per-row check: every executor runs it on the rows it is handed.
 */
export function checkRow(work: SequenceWork, decodeSteps: number, layout: ExecutorLayout): string | null {
  const n = work.tokenIds.length;
  if (n === 0) return 'no tokens in step';
  if (!Number.isInteger(work.startPosition) || work.startPosition < 0) return `start position ${work.startPosition} is not a non-negative integer`;
  // A k-step row writes positions start .. start + k - 1: the fed token, then the k - 1 it samples before the last.
  const end = work.startPosition + n + decodeSteps - 1;
  if (end > layout.maxContextTokens) return `position ${end} past the model's ${layout.maxContextTokens}`;
  for (const id of work.tokenIds) if (!Number.isInteger(id) || id < 0 || id >= layout.vocabSize) return `token id ${id} outside [0, ${layout.vocabSize})`;
  if (!Number.isInteger(work.adapterSlot) || work.adapterSlot < 0 || work.adapterSlot >= layout.numAdapterSlots) {
    return `adapter slot ${work.adapterSlot} outside [0, ${layout.numAdapterSlots})`;
  }
  const needed = Math.ceil(end / layout.blockSizeTokens);
  if (work.blockTable.length < needed) return `block table has ${work.blockTable.length} blocks, positions up to ${end} need ${needed}`;
  for (const block of work.blockTable) if (!Number.isInteger(block) || block < 0 || block >= layout.numKvBlocks) return `KV block ${block} outside [0, ${layout.numKvBlocks})`;
  if (decodeSteps > 1 && (n !== 1 || !work.sampleNext || work.loopSampling === undefined)) return 'a multi-step plan row must feed one token, sample next and carry loopSampling';
  if (rowResult(work) !== 'sampled') return null;
  if (decodeSteps === 1 && layout.samplesInGraph !== true) return 'this executor samples in its graph only in multi-step plans: a one-step row must not carry loopSampling';
  const { temperature, topK, seed } = work.loopSampling!;
  if (!Number.isFinite(temperature) || temperature < 0) return `\`temperature\` must be a finite number >= 0. Given: ${temperature}`;
  if (!Number.isSafeInteger(topK) || topK < 0) return `\`topK\` must be a safe integer >= 0. Given: ${topK}`;
  if (!Number.isSafeInteger(seed) || seed < 0) return `\`seed\` must be a safe integer >= 0. Given: ${seed}`;
  return null;
}

/** One batch's result, as a runner returns it and the shard protocol carries it (wire.ts RunReply). */
export interface BatchOutput {
  /** [rows whose rowResult is 'logits', vocabSize] in batch row order */
  logits: Float32Array;
  /** [those rows] their log-sum-exp, when the graph computes it */
  logSumExp: Float32Array | null;
  /** the tokens of the rows whose rowResult is 'sampled', [rows, steps] in batch row order; null when there are none */
  sampled: SampledTokens | null;
}

export interface StepSplit {
  /** Outcomes of the rows that failed their checks. */
  failed: SequenceOutcome[];
  /** Decode rows first, then prefill rows, each cut into at most `microBatches` parts. */
  batches: SequenceWork[][];
  decodeSteps: number;
}

/** Checks the plan and its rows against the executor's layout and cuts the runnable rows into batches. */
export function splitStep(plan: StepPlan, layout: ExecutorLayout, microBatches = 1): StepSplit {
  const decodeSteps = plan.decodeSteps ?? 1;
  const maxSteps = layout.maxDecodeStepsPerRun ?? 1;
  if (!Number.isSafeInteger(decodeSteps) || decodeSteps < 1 || decodeSteps > maxSteps) {
    throw new TesseraError('INVALID_ARGUMENT', `\`decodeSteps\` must be an integer in [1, ${maxSteps}]. Given: ${decodeSteps}`);
  }
  const failed: SequenceOutcome[] = [];
  const decode: SequenceWork[] = [];
  const prefill: SequenceWork[] = [];
  for (const work of plan.sequences) {
    const problem = checkRow(work, decodeSteps, layout);
    if (problem !== null) failed.push({ kind: 'failed', seqId: work.seqId, logitsRow: -1, error: problem });
    else (work.tokenIds.length === 1 ? decode : prefill).push(work);
  }
  const batches: SequenceWork[][] = [];
  for (const group of [decode, prefill]) {
    const parts = Math.min(microBatches, group.length);
    let offset = 0;
    for (let m = 0; m < parts; m++) {
      const size = Math.floor(group.length / parts) + (m < group.length % parts ? 1 : 0);
      batches.push(group.slice(offset, offset + size));
      offset += size;
    }
  }
  return { failed, batches, decodeSteps };
}

/** The one place step outcomes are made: batch i's rows against outputs[i]. Throws INTERNAL if an output has the wrong size. */
export function gatherStep(plan: StepPlan, split: StepSplit, outputs: BatchOutput[], vocabSize: number, runtimeMs: number): StepResult {
  const outcomes: SequenceOutcome[] = [...split.failed];
  const steps = split.decodeSteps;
  let numLogits = 0;
  let numSampled = 0;
  split.batches.forEach((rows, i) => {
    const out = outputs[i];
    const firstLogits = numLogits;
    const firstSampled = numSampled;
    for (const work of rows) {
      const result = rowResult(work);
      if (result === 'logits') outcomes.push({ kind: 'logits', seqId: work.seqId, logitsRow: numLogits++ });
      else if (result === 'sampled') outcomes.push({ kind: 'sampled', seqId: work.seqId, logitsRow: -1, sampledRow: numSampled++ });
      else outcomes.push({ kind: 'none', seqId: work.seqId, logitsRow: -1 });
    }
    const logitsRows = numLogits - firstLogits;
    const sampledRows = numSampled - firstSampled;
    if (out.logits.length !== logitsRows * vocabSize || (out.logSumExp !== null && out.logSumExp.length !== logitsRows)) {
      throw new TesseraError('INTERNAL', `step ${plan.stepId}: a batch returned ${out.logits.length / vocabSize} logits rows (log-sum-exp: ${out.logSumExp?.length ?? 'none'}) for its ${logitsRows} host-sampled rows`);
    }
    const numTokens = out.sampled === null ? 0 : out.sampled.tokenIds.length;
    if (numTokens !== sampledRows * steps || (out.sampled !== null && out.sampled.steps !== steps)) {
      throw new TesseraError('INTERNAL', `step ${plan.stepId}: a batch returned ${numTokens} sampled tokens (steps ${out.sampled?.steps ?? 'none'}) for its ${sampledRows} rows sampled in the graph, ${steps} steps each`);
    }
  });
  const logits = concat(Float32Array, outputs.map((o) => o.logits));
  // The sampler skips its own pass over the vocabulary when every logits row comes with its log-sum-exp.
  const withLse = outputs.every((o) => o.logSumExp !== null || o.logits.length === 0);
  const logSumExp = withLse ? concat(Float32Array, outputs.flatMap((o) => (o.logSumExp ? [o.logSumExp] : []))) : undefined;
  const result: StepResult = { stepId: plan.stepId, outcomes, logits, ...(logSumExp ? { logSumExp } : {}), vocabSize, runtimeMs };
  const sampled = outputs.flatMap((o) => (o.sampled ? [o.sampled] : []));
  if (numSampled > 0) {
    result.sampledTokens = { steps, tokenIds: concat(Int32Array, sampled.map((s) => s.tokenIds)), logprobs: concat(Float32Array, sampled.map((s) => s.logprobs)) };
  }
  return result;
}

/** What executeStep needs of a runner. */
export interface BatchRunner {
  readonly layout: ExecutorLayout;
  runBatch(rows: SequenceWork[], decodeSteps: number): Promise<BatchOutput>;
}

/** A whole step on one runner: split, the batches one after the other (they share the runner's state), gather. */
export async function executeStep(runner: BatchRunner, plan: StepPlan): Promise<StepResult> {
  const started = performance.now();
  const split = splitStep(plan, runner.layout);
  const outputs: BatchOutput[] = [];
  for (const rows of split.batches) outputs.push(await runner.runBatch(rows, split.decodeSteps));
  return gatherStep(plan, split, outputs, runner.layout.vocabSize, performance.now() - started);
}

/** The parts one after another; a step of one batch (one non-empty part) hands its runner's array on without a copy. */
function concat<T extends Float32Array | Int32Array>(Type: new (length: number) => T, parts: T[]): T {
  const nonEmpty = parts.filter((p) => p.length > 0);
  return nonEmpty.length === 1 ? nonEmpty[0] : concatArrays(Type, nonEmpty);
}
