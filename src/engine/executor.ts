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
   * Set on every row of a multi-step plan (StepPlan.decodeSteps), and on the sampleNext rows of a plan with
   * `sampleInGraph` that the executor samples in its graph: how it samples this row there.
   */
  loopSampling?: LoopSampling;
}

/**
 * In-graph sampling of one row in a multi-step decode (the executor samples; only these parameters are loop-eligible:
 * no penalties, top-p, min-p or top-n logprobs). Same stream for the same seed and positions, whatever the batch.
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
   * the result then carries `sampledTokens` instead of logits.
   */
  decodeSteps?: number;
  /**
   * One step in which the executor samples every sampleNext row that carries `loopSampling` in its graph (only for
   * executors whose layout has `samplesInGraph`; see `sampledInGraph`). The result carries `sampledTokens` with steps = 1
   * for those rows, and logits (with their log-sum-exp when computed) for the other sampleNext rows, which the host
   * samples; each outcome's logitsRow indexes the array of its row's kind. Rows without sampleNext (prefill chunks
   * before a prompt's end) only fill the KV cache, as in any step.
   */
  sampleInGraph?: boolean;
}

export interface SequenceOutcome {
  seqId: number;
  /**
   * Row of StepResult.logits for this sequence, or of StepResult.sampledTokens when the executor sampled it (multi-step
   * plans; `sampledInGraph` rows); -1 when sampleNext was false or the sequence failed.
   */
  logitsRow: number;
  /** Set when this sequence alone failed (the rest of the step is valid). */
  error?: string;
}

export interface StepResult {
  stepId: number;
  outcomes: SequenceOutcome[];
  /** [numRows, vocabSize] float32, raw logits (no softmax) of the rows the host samples. */
  logits: Float32Array;
  /**
   * [numRows] log(sum(exp(row))) of each logits row, when the executor computes it (in the graph, where it is much cheaper
   * than in JS); the sampler then turns logits into logprobs without a pass over the vocabulary.
   */
  logSumExp?: Float32Array;
  vocabSize: number;
  /**
   * Multi-step plans and plans with sampleInGraph: the tokens the executor sampled, [rows, steps] row-major (row = the
   * outcome's logitsRow; with sampleInGraph, steps = 1 and only the `sampledInGraph` rows), with
   * their log-probabilities under the raw logits. A row's tokens after its stop (EOS, stop id, max tokens) are discarded
   * by the engine.
   */
  sampledTokens?: { steps: number; tokenIds: Int32Array; logprobs: Float32Array };
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
  /** The executor runs plans with `sampleInGraph` (default false: the engine samples every row from logits). */
  samplesInGraph?: boolean;
}

/** Whether the executor samples this row of a one-step plan in its graph (its token comes back in sampledTokens). */
export function sampledInGraph(plan: Pick<StepPlan, 'sampleInGraph'>, work: SequenceWork): boolean {
  return plan.sampleInGraph === true && work.sampleNext && work.loopSampling !== undefined;
}

export interface Executor {
  readonly layout: ExecutorLayout;
  execute(plan: StepPlan): Promise<StepResult>;
  shutdown(): Promise<void>;
}
