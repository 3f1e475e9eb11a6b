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
}

export interface SequenceOutcome {
  seqId: number;
  /** Row of StepResult.logits for this sequence, or -1 when sampleNext was false or the sequence failed. */
  logitsRow: number;
  /** Set when this sequence alone failed (the rest of the step is valid). */
  error?: string;
}

export interface StepResult {
  stepId: number;
  outcomes: SequenceOutcome[];
  /** [numRows, vocabSize] float32, raw logits (no softmax). */
  logits: Float32Array;
  /**
   * [numRows] log(sum(exp(row))) of each logits row, when the executor computes it (in the graph, where it is much cheaper
   * than in JS); the sampler then turns logits into logprobs without a pass over the vocabulary.
   */
  logSumExp?: Float32Array;
  vocabSize: number;
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
}

export interface Executor {
  readonly layout: ExecutorLayout;
  execute(plan: StepPlan): Promise<StepResult>;
  shutdown(): Promise<void>;
}
