/**
 * Scripted test double for the Executor (no model): logits are a deterministic function of a sequence's tokens so
 * far, so a sequence's output is the same whatever it is batched with and however it was chunked or preempted.
 *
 * It checks every plan it receives and records a violation (and throws) when the engine breaks the executor
 * contract: token positions contiguous per sequence, block tables covering all positions and never rewriting blocks
 * already holding this sequence's KV, no block shared by two live sequences, ids in range, released sequences never
 * reused, optional budgets.
 */
import type { ExecutorLayout, Executor, SequenceOutcome, SequenceWork, StepPlan, StepResult } from '../executor.ts';
import type { ManualClock } from './manual-clock.ts';

/** Writes the logits ([vocabSize]) that follow `tokens` (all of the sequence's tokens so far). */
export type LogitsFn = (tokens: readonly number[], out: Float32Array, adapterSlot: number) => void;

export interface FakeExecutorOptions {
  layout?: Partial<ExecutorLayout>;
  /** Default: hashLogits(). */
  logits?: LogitsFn;
  /** Advanced by stepDelayMs during each execute. */
  clock?: ManualClock;
  stepDelayMs?: number | ((plan: StepPlan) => number);
  /** Returns an error message to fail this sequence alone in this step. */
  failSequence?: (work: SequenceWork, plan: StepPlan) => string | undefined;
  /** Returns an error to throw from execute for this plan. */
  throwOnStep?: (plan: StepPlan) => Error | undefined;
  /** Checked on every plan when given. */
  budgets?: { maxBatchTokens?: number; maxSequences?: number; prefillChunkTokens?: number };
}

export const DEFAULT_FAKE_LAYOUT: ExecutorLayout = {
  vocabSize: 64,
  maxContextTokens: 256,
  numKvBlocks: 64,
  blockSizeTokens: 4,
  numAdapterSlots: 4,
};

interface LiveSequence {
  tokens: number[];
  blockTable: number[];
  adapterSlot: number;
}

export class FakeExecutor implements Executor {
  readonly layout: ExecutorLayout;
  readonly plans: StepPlan[] = [];
  readonly violations: string[] = [];
  /** Sum of the fake's own time spent computing logits, ms (to subtract from engine timings). */
  logitsMs = 0;
  private readonly live = new Map<number, LiveSequence>();
  private readonly released = new Set<number>();
  private readonly blockOwner = new Map<number, number>();
  private lastStepId = 0;
  private shutDown = false;

  constructor(private readonly opts: FakeExecutorOptions = {}) {
    this.layout = { ...DEFAULT_FAKE_LAYOUT, ...opts.layout };
  }

  /** Tokens the executor has seen for a live sequence (its "KV cache"). */
  tokensOf(seqId: number): readonly number[] | undefined {
    return this.live.get(seqId)?.tokens;
  }

  liveSequenceIds(): number[] {
    return [...this.live.keys()];
  }

  async execute(plan: StepPlan): Promise<StepResult> {
    this.plans.push(structuredClone(plan));
    if (this.shutDown) throw new Error('FakeExecutor: execute after shutdown');
    this.check(plan);
    const injected = this.opts.throwOnStep?.(plan);
    const delay = typeof this.opts.stepDelayMs === 'function' ? this.opts.stepDelayMs(plan) : (this.opts.stepDelayMs ?? 0);
    this.opts.clock?.advance(delay);
    await new Promise<void>((resolve) => setImmediate(resolve));
    if (injected !== undefined) throw injected;

    const { vocabSize } = this.layout;
    const numRows = plan.sequences.filter((w) => w.sampleNext).length;
    const logits = new Float32Array(numRows * vocabSize);
    const outcomes: SequenceOutcome[] = [];
    let row = 0;
    const logitsFn = this.opts.logits ?? hashLogits();
    const t0 = performance.now();
    for (const work of plan.sequences) {
      const seq = this.live.get(work.seqId)!;
      seq.tokens.push(...work.tokenIds);
      const error = this.opts.failSequence?.(work, plan);
      if (error !== undefined) {
        outcomes.push({ kind: 'failed', seqId: work.seqId, logitsRow: -1, error });
        if (work.sampleNext) row++; // leave its row unused, like a real executor may
        continue;
      }
      if (work.sampleNext) {
        logitsFn(seq.tokens, logits.subarray(row * vocabSize, (row + 1) * vocabSize), work.adapterSlot);
        outcomes.push({ kind: 'logits', seqId: work.seqId, logitsRow: row });
        row++;
      } else {
        outcomes.push({ kind: 'none', seqId: work.seqId, logitsRow: -1 });
      }
    }
    this.logitsMs += performance.now() - t0;
    return { stepId: plan.stepId, outcomes, logits, vocabSize, runtimeMs: delay };
  }

  async shutdown(): Promise<void> {
    this.shutDown = true;
  }

  private violation(message: string): never {
    this.violations.push(message);
    throw new Error(`FakeExecutor: plan violation: ${message}`);
  }

  private check(plan: StepPlan): void {
    const { vocabSize, blockSizeTokens, numKvBlocks, numAdapterSlots } = this.layout;
    if (!(plan.stepId > this.lastStepId)) this.violation(`stepId ${plan.stepId} not after ${this.lastStepId}`);
    this.lastStepId = plan.stepId;
    for (const id of plan.releasedSeqIds ?? []) {
      const seq = this.live.get(id);
      if (seq === undefined) this.violation(`step ${plan.stepId}: released seqId ${id} is not live`);
      for (const b of seq.blockTable) this.blockOwner.delete(b);
      this.live.delete(id);
      this.released.add(id);
    }
    const budgets = this.opts.budgets;
    const numTokens = plan.sequences.reduce((n, w) => n + w.tokenIds.length, 0);
    if (budgets?.maxBatchTokens !== undefined && numTokens > budgets.maxBatchTokens) {
      this.violation(`step ${plan.stepId}: ${numTokens} tokens > maxBatchTokens ${budgets.maxBatchTokens}`);
    }
    if (budgets?.maxSequences !== undefined && plan.sequences.length > budgets.maxSequences) {
      this.violation(`step ${plan.stepId}: ${plan.sequences.length} sequences > ${budgets.maxSequences}`);
    }
    const inPlan = new Set<number>();
    for (const w of plan.sequences) {
      const where = `step ${plan.stepId} seq ${w.seqId}`;
      if (inPlan.has(w.seqId)) this.violation(`${where}: twice in one plan`);
      inPlan.add(w.seqId);
      if (this.released.has(w.seqId)) this.violation(`${where}: seqId was released before`);
      if (w.tokenIds.length === 0) this.violation(`${where}: no tokens`);
      if (budgets?.prefillChunkTokens !== undefined && w.tokenIds.length > budgets.prefillChunkTokens) {
        this.violation(`${where}: chunk of ${w.tokenIds.length} > prefillChunkTokens ${budgets.prefillChunkTokens}`);
      }
      for (const t of w.tokenIds) {
        if (!Number.isInteger(t) || t < 0 || t >= vocabSize) this.violation(`${where}: token id ${t} outside vocab ${vocabSize}`);
      }
      if (!Number.isInteger(w.adapterSlot) || w.adapterSlot < 0 || w.adapterSlot >= numAdapterSlots) {
        this.violation(`${where}: adapterSlot ${w.adapterSlot} outside [0, ${numAdapterSlots})`);
      }
      let seq = this.live.get(w.seqId);
      if (seq === undefined) {
        seq = { tokens: [], blockTable: [], adapterSlot: w.adapterSlot };
        this.live.set(w.seqId, seq);
      }
      if (w.startPosition !== seq.tokens.length) {
        this.violation(`${where}: startPosition ${w.startPosition} but ${seq.tokens.length} tokens are cached`);
      }
      if (w.adapterSlot !== seq.adapterSlot) this.violation(`${where}: adapterSlot changed ${seq.adapterSlot} -> ${w.adapterSlot}`);
      const end = w.startPosition + w.tokenIds.length;
      if (end > this.layout.maxContextTokens) this.violation(`${where}: position ${end} > maxContextTokens`);
      if (w.blockTable.length * blockSizeTokens < end) {
        this.violation(`${where}: ${w.blockTable.length} blocks of ${blockSizeTokens} do not cover ${end} positions`);
      }
      const usedBlocks = Math.ceil(w.startPosition / blockSizeTokens);
      for (let i = 0; i < usedBlocks; i++) {
        if (w.blockTable[i] !== seq.blockTable[i]) this.violation(`${where}: block ${i} holding cached KV changed`);
      }
      for (const b of w.blockTable) {
        if (!Number.isInteger(b) || b < 0 || b >= numKvBlocks) this.violation(`${where}: block id ${b} outside [0, ${numKvBlocks})`);
        const owner = this.blockOwner.get(b);
        if (owner !== undefined && owner !== w.seqId) this.violation(`${where}: block ${b} also owned by live seq ${owner}`);
      }
      if (new Set(w.blockTable).size !== w.blockTable.length) this.violation(`${where}: repeated block in table`);
      for (const b of w.blockTable) this.blockOwner.set(b, w.seqId);
      seq.blockTable = w.blockTable.slice();
    }
  }
}

/** FNV-1a style hash of the last `window` tokens and the length. */
function hashTokens(tokens: readonly number[], window: number): number {
  let h = 0x811c9dc5 ^ tokens.length;
  for (let i = Math.max(0, tokens.length - window); i < tokens.length; i++) {
    h = Math.imul(h ^ tokens[i], 0x01000193);
  }
  return h >>> 0;
}

/**
 * Pseudo-random logits in [-spread, spread] seeded by a hash of the recent tokens (and the adapter slot, so adapters
 * change outputs). Deterministic: same tokens -> same logits.
 */
export function hashLogits(opts: { spread?: number; window?: number } = {}): LogitsFn {
  const spread = opts.spread ?? 8;
  const window = opts.window ?? 4;
  return (tokens, out, adapterSlot) => {
    let x = (hashTokens(tokens, window) ^ Math.imul(adapterSlot + 1, 0x9e3779b9)) >>> 0 || 1;
    for (let i = 0; i < out.length; i++) {
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      out[i] = (((x >>> 0) / 4294967296) * 2 - 1) * spread;
    }
  };
}

/** Greedy decoding picks `next(tokens)`: that id gets logit `high`, all others 0. */
export function scriptedLogits(next: (tokens: readonly number[]) => number, high = 10): LogitsFn {
  return (tokens, out) => {
    out.fill(0);
    out[next(tokens)] = high;
  };
}

/** Fixed logits whatever the tokens (sampling statistics). */
export function constantLogits(values: ArrayLike<number>): LogitsFn {
  return (_tokens, out) => {
    out.fill(-Infinity);
    for (let i = 0; i < values.length; i++) out[i] = values[i];
  };
}
