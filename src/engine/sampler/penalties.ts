/**
 * Logit penalties, applied to a float64 copy of one logits row.
 * - repetition (Hugging Face `RepetitionPenaltyLogitsProcessor` semantics): for every distinct token in prompt + output,
 *   a positive logit is divided by the penalty and a negative one multiplied by it.
 * - presence / frequency (OpenAI semantics, over generated tokens only): logit -= presence * [count > 0] + frequency * count.
 * Repetition is applied first, then presence/frequency (vLLM's order).
 */

export interface PenaltyState {
  /** Distinct tokens of prompt + output; only kept when the repetition penalty is active. */
  seen: Set<number> | null;
  /** Occurrences of each generated token. */
  generatedCounts: Map<number, number>;
}

export interface PenaltyParams {
  repetitionPenalty: number;
  presencePenalty: number;
  frequencyPenalty: number;
}

export function hasPenalties(p: PenaltyParams): boolean {
  return p.repetitionPenalty !== 1 || p.presencePenalty !== 0 || p.frequencyPenalty !== 0;
}

export function createPenaltyState(p: PenaltyParams, promptTokenIds: readonly number[]): PenaltyState {
  return { seen: p.repetitionPenalty !== 1 ? new Set(promptTokenIds) : null, generatedCounts: new Map() };
}

export function recordGenerated(state: PenaltyState, tokenId: number): void {
  state.generatedCounts.set(tokenId, (state.generatedCounts.get(tokenId) ?? 0) + 1);
  state.seen?.add(tokenId);
}

/** Applies the penalties in place to `logits` (indexed by token id). */
export function applyPenalties(logits: Float64Array, p: PenaltyParams, state: PenaltyState): void {
  if (state.seen !== null) {
    const r = p.repetitionPenalty;
    for (const t of state.seen) {
      if (t >= logits.length) continue;
      const x = logits[t];
      logits[t] = x > 0 ? x / r : x * r;
    }
  }
  if (p.presencePenalty !== 0 || p.frequencyPenalty !== 0) {
    for (const [t, count] of state.generatedCounts) {
      if (t >= logits.length) continue;
      logits[t] -= p.presencePenalty + p.frequencyPenalty * count;
    }
  }
}
