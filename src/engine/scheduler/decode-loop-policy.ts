/**
 * When a step may run several decode steps in one executor call (StepPlan.decodeSteps), and with which in-graph
 * sampling per row. Pure functions of the sequences; the scheduler reserves the KV blocks.
 *
 * In-graph sampling is an allow-list. The graph samples with temperature, top-k and the sequence's seed, nothing else;
 * every other SamplingParams key must be at its neutral value (the value that makes it a no-op), else the row is
 * sampled on the host. HOST_ONLY_NEUTRAL is typed over every key outside the allow-list, so a new sampling parameter
 * does not compile until it is placed in one or the other: it cannot be silently ignored by the in-graph paths.
 * Beside SamplingParams, top-n logprobs (alternatives per token) are host-only, and the seed must be in [0, 2^53).
 * A step with a host-only row runs one step; on executors that sample in the graph such a row is sampled on the host
 * from its logits while its eligible batch mates are sampled in the graph.
 */
import type { LoopSampling } from '../executor.ts';
import type { SamplingParams } from '../request.ts';
import type { Sequence } from '../sequence.ts';

/** The sampling parameters the graph honours (carried to the executor in LoopSampling). */
export const IN_GRAPH_SAMPLING_KEYS = ['temperature', 'topK', 'seed'] as const satisfies ReadonlyArray<keyof SamplingParams & keyof LoopSampling>;
type InGraphKey = (typeof IN_GRAPH_SAMPLING_KEYS)[number];

/** Every other parameter, at the value that turns it off. Host-only (penalties change with every token). */
export const HOST_ONLY_NEUTRAL: { readonly [K in Exclude<keyof SamplingParams, InGraphKey>]-?: SamplingParams[K] } = {
  topP: 1,
  minP: 0,
  repetitionPenalty: 1,
  presencePenalty: 0,
  frequencyPenalty: 0,
};
const HOST_ONLY_KEYS = Object.keys(HOST_ONLY_NEUTRAL) as Array<keyof typeof HOST_ONLY_NEUTRAL>;

export function loopSamplingOf(seq: Sequence): LoopSampling | null {
  const p = seq.request.sampling;
  for (const key of HOST_ONLY_KEYS) if (p[key] !== HOST_ONLY_NEUTRAL[key]) return null;
  if (seq.request.topNLogprobs > 0) return null;
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
