/**
 * The seam between the engine (scheduling, sampling) and whatever runs the model (a worker thread, a shard group).
 * Plans and results are plain data: they cross thread and process boundaries unchanged.
 */

/** Work for one sequence in one step. */
export interface SequenceWork {
  seqId: number;
  /** Token ids fed this step: a chunk of the prompt, or the one token sampled in the previous step. */
  tokenIds: number[];
  /** Number of this sequence's tokens already in the KV cache = position of tokenIds[0]. */
  startPosition: number;
  /** KV block ids of the sequence in order; covers positions [0, startPosition + tokenIds.length). */
  blockTable: number[];
  /** Adapter device slot (0 = base model, no adapter). */
  adapterSlot: number;
  /** True when the logits after the last token of tokenIds are needed (decode, or the final prefill chunk). */
  sampleNext: boolean;
  /**
   * Set when the executor itself samples this sampleNext row in its graph, with these parameters: on every row of a
   * multi-step plan (StepPlan.decodeSteps > 1), and on the loop-eligible rows of a one-step plan for executors whose
   * layout has `samplesInGraph`. Its result is then sampled tokens, never logits. The only thing that says so.
   */
  loopSampling?: LoopSampling;
}

/**
 * In-graph sampling of one row (the executor samples; only these parameters are loop-eligible: no penalties, top-p,
 * min-p or top-n logprobs). Same stream for the same seed and positions, whatever the batch.
 */
export interface LoopSampling {
  /** 0 = greedy. */
  temperature: number;
  /** 0 = off. */
  topK: number;
  /** Non-negative safe integer. */
  seed: number;
}

export interface StepPlan {
  stepId: number;
  sequences: SequenceWork[];
  /**
   * Sequence ids that ended since the previous plan (finished, cancelled, failed or preempted), to be applied before
   * this plan's sequences: their KV blocks may already belong to sequences of this plan, and the executor may drop
   * any per-sequence state. A seqId is never reused (a preempted request comes back under a new one).
   */
  releasedSeqIds?: number[];
  /**
   * Decode steps to run for every sequence of this plan in one executor call (default 1). Only > 1 when every
   * sequence feeds one token, has `loopSampling`, and its block table covers positions up to startPosition + decodeSteps;
   * every outcome is then 'sampled' with that many tokens.
   */
  decodeSteps?: number;
}

/**
 * What became of one sequence in a step, produced by the executor (src/model/runner/step-batches.ts writes them all)
 * and read by the scheduler by `kind`, never re-derived from the plan:
 * - 'logits': the host samples it from row `logitsRow` of StepResult.logits (and StepResult.logSumExp);
 * - 'sampled': the executor sampled it; its tokens are row `sampledRow` of StepResult.sampledTokens;
 * - 'none': its tokens only filled the KV cache (sampleNext was false);
 * - 'failed': this sequence alone failed (the rest of the step is valid).
 * `logitsRow` is on every kind (-1 unless 'logits') so readers that want logits only need no switch.
 */
export type SequenceOutcome = LogitsOutcome | SampledOutcome | KvOnlyOutcome | FailedOutcome;

interface OutcomeBase {
  seqId: number;
  /** Row of StepResult.logits for a 'logits' outcome; -1 on every other kind. */
  logitsRow: number;
  error?: undefined;
}

export interface LogitsOutcome extends OutcomeBase {
  kind: 'logits';
}

export interface SampledOutcome extends OutcomeBase {
  kind: 'sampled';
  logitsRow: -1;
  /** Row of StepResult.sampledTokens ([rows, steps]). */
  sampledRow: number;
}

export interface KvOnlyOutcome extends OutcomeBase {
  kind: 'none';
  logitsRow: -1;
}

export interface FailedOutcome extends Omit<OutcomeBase, 'error'> {
  kind: 'failed';
  logitsRow: -1;
  error: string;
}

export interface SampledTokens {
  steps: number;
  /** [rows, steps] row-major */
  tokenIds: Int32Array;
  /** [rows, steps] log-probability of each token under the raw logits */
  logprobs: Float32Array;
}

export interface StepResult {
  stepId: number;
  outcomes: SequenceOutcome[];
  /** [numRows, vocabSize] float32, raw logits (no softmax) of the 'logits' outcomes. */
  logits: Float32Array;
  /**
   * [numRows] log(sum(exp(row))) of each logits row, when the executor computes it (in the graph, where it is much cheaper
   * than in JS); the sampler then turns logits into logprobs without a pass over the vocabulary.
   */
  logSumExp?: Float32Array;
  vocabSize: number;
  /**
   * The tokens of the 'sampled' outcomes (present when there is one): steps = the plan's decodeSteps. A row's tokens
   * after its stop (EOS, stop id, max tokens) are discarded by the engine.
   */
  sampledTokens?: SampledTokens;
  /** Time spent inside the model runtime for this step, in milliseconds. */
  runtimeMs: number;
}

/** What the engine needs to know about the executor's capacity. */
export interface ExecutorLayout {
  vocabSize: number;
  /** Longest sequence (prompt + output) the model supports. */
  maxContextTokens: number;
  numKvBlocks: number;
  blockSizeTokens: number;
  /** Adapter device slots, slot 0 (base) included. */
  numAdapterSlots: number;
  /** Largest StepPlan.decodeSteps the executor runs (default 1: single steps only). */
  maxDecodeStepsPerRun?: number;
  /** One-step plans may carry `loopSampling` rows, which the executor samples in its graph (default false). */
  samplesInGraph?: boolean;
}

export interface Executor {
  readonly layout: ExecutorLayout;
  execute(plan: StepPlan): Promise<StepResult>;
  shutdown(): Promise<void>;
}
