/**
 * When a step may run several decode steps in one executor call (StepPlan.decodeSteps), and with which in-graph
 * sampling per row. Pure functions of the sequences; the scheduler reserves the KV blocks.
 *
 * A sequence is loop-eligible when everything its sampler does can run in the graph: greedy, or temperature with an
 * optional top-k, and a seed in [0, 2^53). Penalties (the counts change with every token), top-p, min-p and top-n
 * logprobs (alternatives per token) are host-only, so a step with such a row runs one step; on executors that sample
 * in the graph such a row is sampled on the host from its logits while its eligible batch mates are sampled in the graph.
 */
import type { LoopSampling } from '../executor.ts';
import type { Sequence } from '../sequence.ts';

export function loopSamplingOf(seq: Sequence): LoopSampling | null {
  const p = seq.request.sampling;
  if (p.repetitionPenalty !== 1 || p.presencePenalty !== 0 || p.frequencyPenalty !== 0) return null;
  if (p.topP < 1 || p.minP > 0 || seq.request.topNLogprobs > 0) return null;
  if (!Number.isSafeInteger(seq.seed) || seq.seed < 0) return null;
  return { temperature: p.temperature, topK: p.topK, seed: seq.seed };
}

/** Tokens a running sequence may still generate (its pending token already counts as generated). */
export function remainingTokens(seq: Sequence): number {
  const generated = seq.tokenIds.length - seq.request.promptTokenIds.length;
  return seq.request.stopping.maxNewTokens - generated;
}

/**
 * Steps for a decode-only step: at most `maxSteps`, and no more than any row may still generate (so no row computes
 * past its max tokens or the model's context). 1 when some row is not loop-eligible.
 */
export function decodeStepsFor(seqs: readonly Sequence[], maxSteps: number): number {
  let steps = maxSteps;
  for (const seq of seqs) {
    if (loopSamplingOf(seq) === null) return 1;
    steps = Math.min(steps, remainingTokens(seq));
  }
  return Math.max(1, steps);
}
