/**
 * Held-out loss through an Executor: the same executor the server schedules onto scores fixed token windows by
 * teacher forcing. An executor returns logits only after a sequence's last fed token, so every window is fed one token
 * per step, as decode steps (the serving path):
 *
 *   for each wave of windows that fits the KV cache (fresh sequence ids, disjoint block tables):
 *     for i in 0 .. length - 2:
 *       step: every window of the wave feeds tokenIds[i] at position i, in its adapter slot, sampleNext
 *       nll[window][i] = logSumExp(logits row) - row[tokenIds[i + 1]]        (float64)
 *   the next wave's first plan releases the previous wave's sequences (the last wave's: a later call's first plan).
 *
 * loss of a window = mean of its nll; of a set of windows = sum of nll / number of predictions.
 */
import { TesseraError, outOfRange } from '../../errors.ts';
import { exactLogSumExp } from '../../util/log-sum-exp.ts';
import type { Executor, SequenceWork, StepPlan } from '../executor.ts';

export interface ScoredWindow {
  tokenIds: readonly number[];
  /** Adapter device slot (0 = base model). */
  adapterSlot: number;
}

export interface WindowNll {
  /** nll[i] = -log p(tokenIds[i + 1] | tokenIds[0..i]), nats; length tokenIds.length - 1. */
  nll: Float64Array;
}

export interface TeacherForcedOptions {
  /** Most windows fed in one step (rows per step); also capped by the KV cache. Default 16. */
  maxWindowsPerStep?: number;
  /** Called with each row's raw logits [vocab] (a view valid during the call), e.g. to compare with another model. */
  onLogits?: (window: number, position: number, logits: Float32Array) => void;
  /** First sequence id to use (ids must never repeat on one executor); default 1. */
  firstSeqId?: number;
  /** First step id; default 1. */
  firstStepId?: number;
  /** Sequences of an earlier call to release in the first plan (that call's `pendingRelease`). */
  release?: readonly number[];
}

export interface TeacherForcedResult {
  windows: WindowNll[];
  /** For a later call on the same executor: the next unused sequence and step ids, and the sequences to release. */
  nextSeqId: number;
  nextStepId: number;
  pendingRelease: number[];
}

export async function teacherForcedNll(executor: Executor, windows: readonly ScoredWindow[], opts: TeacherForcedOptions = {}): Promise<TeacherForcedResult> {
  const { vocabSize, blockSizeTokens, numKvBlocks, maxContextTokens, numAdapterSlots } = executor.layout;
  for (const [w, win] of windows.entries()) {
    if (win.tokenIds.length < 2 || win.tokenIds.length > maxContextTokens) {
      throw outOfRange(`windows[${w}].tokenIds.length`, `between 2 and the model's context (${maxContextTokens})`, win.tokenIds.length);
    }
    if (!(Number.isInteger(win.adapterSlot) && win.adapterSlot >= 0 && win.adapterSlot < numAdapterSlots)) {
      throw outOfRange(`windows[${w}].adapterSlot`, `an integer in [0, ${numAdapterSlots})`, win.adapterSlot);
    }
    const bad = win.tokenIds.findIndex((t) => !(Number.isInteger(t) && t >= 0 && t < vocabSize));
    if (bad >= 0) throw outOfRange(`windows[${w}].tokenIds[${bad}]`, `a token id in [0, ${vocabSize})`, win.tokenIds[bad]);
  }
  const longest = Math.max(0, ...windows.map((w) => w.tokenIds.length));
  const blocksPerWindow = Math.ceil(longest / blockSizeTokens);
  const perStep = Math.min(opts.maxWindowsPerStep ?? 16, Math.floor(numKvBlocks / Math.max(1, blocksPerWindow)));
  if (windows.length > 0 && perStep < 1) {
    throw new TesseraError('INVALID_ARGUMENT', `a window of ${longest} tokens needs ${blocksPerWindow} KV blocks; the executor has ${numKvBlocks}`);
  }
  const out: WindowNll[] = windows.map((w) => ({ nll: new Float64Array(w.tokenIds.length - 1) }));
  let seqId = opts.firstSeqId ?? 1;
  let stepId = opts.firstStepId ?? 1;
  let released: number[] = [...(opts.release ?? [])];
  for (let first = 0; first < windows.length; first += perStep) {
    const wave = windows.slice(first, first + perStep).map((win, k) => ({
      index: first + k,
      win,
      seqId: seqId++,
      blockTable: Array.from({ length: blocksPerWindow }, (_, b) => k * blocksPerWindow + b),
    }));
    const steps = Math.max(...wave.map((q) => q.win.tokenIds.length)) - 1;
    for (let i = 0; i < steps; i++) {
      const active = wave.filter((q) => i < q.win.tokenIds.length - 1);
      const sequences: SequenceWork[] = active.map((q) => ({
        seqId: q.seqId,
        tokenIds: [q.win.tokenIds[i]],
        startPosition: i,
        blockTable: q.blockTable,
        adapterSlot: q.win.adapterSlot,
        sampleNext: true,
      }));
      const plan: StepPlan = { stepId: stepId++, sequences, ...(released.length > 0 ? { releasedSeqIds: released } : {}) };
      released = [];
      const result = await executor.execute(plan);
      for (const q of active) {
        const outcome = result.outcomes.find((o) => o.seqId === q.seqId);
        if (outcome === undefined || outcome.error !== undefined || outcome.logitsRow < 0) {
          throw new TesseraError('INTERNAL', `window ${q.index} position ${i}: the executor returned no logits (${outcome?.error ?? 'no outcome'})`);
        }
        const row = result.logits.subarray(outcome.logitsRow * vocabSize, (outcome.logitsRow + 1) * vocabSize);
        out[q.index].nll[i] = exactLogSumExp(row) - row[q.win.tokenIds[i + 1]];
        opts.onLogits?.(q.index, i, row);
      }
    }
    released = wave.map((q) => q.seqId);
  }
  return { windows: out, nextSeqId: seqId, nextStepId: stepId, pendingRelease: released };
}

/** Mean nll over every prediction of the given windows (nats per token). */
export function meanNll(windows: readonly WindowNll[]): number {
  let sum = 0;
  let count = 0;
  for (const w of windows) {
    for (const v of w.nll) sum += v;
    count += w.nll.length;
  }
  return count > 0 ? sum / count : NaN;
}
