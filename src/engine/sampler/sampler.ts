/**
 * Token sampler for one logits row.
 *
 * Pipeline (Hugging Face processor order): penalties -> temperature -> top-k -> top-p -> min-p -> draw.
 * Temperature 0 is greedy (argmax, ties to the lowest id; no sort). top-k and top-p use partial selection
 * (quickselect), never a full sort of the vocabulary.
 *
 * Reported logprobs (chosen token and the top-n alternatives) are natural-log probabilities from the log-softmax of
 * the RAW logits over the full vocabulary: before penalties, temperature and truncation. They describe the model's
 * distribution, not the (possibly truncated) one the token was drawn from.
 *
 * The PRNG is advanced exactly once per sampled token, greedy included, so a request's stream depends only on its
 * own seed and token count.
 */
import type { GeneratedToken, SamplingParams } from '../request.ts';
import { applyPenalties, hasPenalties, type PenaltyState } from './penalties.ts';
import type { Prng } from './prng.ts';
import { argmax, selectNucleus, selectTopK, topNSorted, type Values } from './top-selection.ts';

/** Per-request sampling state. */
export interface SamplingState {
  params: SamplingParams;
  prng: Prng;
  penalties: PenaltyState;
  topNLogprobs: number;
}

export interface Sampler {
  /** Samples one token from `logits` (one row, [vocabSize] float32). */
  sample(logits: Float32Array, state: SamplingState): GeneratedToken;
}

/** One sampler per engine; scratch buffers are reused across rows (not re-entrant, which the step loop is not). */
export function createSampler(opts: { vocabSize: number }): Sampler {
  const vocabSize = opts.vocabSize;
  const work = new Float64Array(vocabSize); // penalised logits, [vocabSize]
  const weights = new Float64Array(vocabSize); // exp((l - max) / T), [vocabSize]
  const idx = new Int32Array(vocabSize);

  function draw(logits: Values, p: SamplingParams, u: number): number {
    const invT = 1 / p.temperature;
    let count = vocabSize;
    for (let i = 0; i < count; i++) idx[i] = i;
    if (p.topK > 0 && p.topK < count) count = selectTopK(logits, idx, count, p.topK);

    let maxLogit = -Infinity;
    for (let i = 0; i < count; i++) {
      const v = logits[idx[i]];
      if (v > maxLogit) maxLogit = v;
    }
    let total = 0;
    for (let i = 0; i < count; i++) {
      const t = idx[i];
      const w = Math.exp((logits[t] - maxLogit) * invT);
      weights[t] = w;
      total += w;
    }
    if (p.topP < 1) {
      count = selectNucleus(weights, idx, count, p.topP * total);
      total = 0;
      for (let i = 0; i < count; i++) total += weights[idx[i]];
    }
    if (p.minP > 0) {
      // The most likely token has weight 1, so the min-p rule p_i >= minP * p_max is w_i >= minP.
      let kept = 0;
      total = 0;
      for (let i = 0; i < count; i++) {
        const t = idx[i];
        if (weights[t] >= p.minP) {
          idx[kept++] = t;
          total += weights[t];
        }
      }
      count = kept;
    }
    const target = u * total;
    let acc = 0;
    for (let i = 0; i < count; i++) {
      acc += weights[idx[i]];
      if (acc > target) return idx[i];
    }
    return idx[count - 1]; // rounding: u * total landed on the sum itself
  }

  return {
    sample(raw: Float32Array, state: SamplingState): GeneratedToken {
      if (raw.length < vocabSize) throw new RangeError(`logits row has ${raw.length} values, vocab is ${vocabSize}`);
      const p = state.params;
      const u = state.prng.nextFloat();
      let logits: Values = raw;
      if (hasPenalties(p)) {
        for (let i = 0; i < vocabSize; i++) work[i] = raw[i];
        applyPenalties(work, p, state.penalties);
        logits = work;
      }
      const tokenId = p.temperature === 0 ? argmax(logits, vocabSize) : draw(logits, p, u);

      const lse = logSumExp(raw, vocabSize);
      const top = topNSorted(raw, vocabSize, state.topNLogprobs).map((t) => ({ tokenId: t, logprob: raw[t] - lse }));
      return { tokenId, logprob: raw[tokenId] - lse, top };
    },
  };
}

/** log(sum(exp(x))) over x[0..count), stable. */
export function logSumExp(x: Float32Array, count: number): number {
  let m = -Infinity;
  for (let i = 0; i < count; i++) if (x[i] > m) m = x[i];
  if (m === -Infinity) return -Infinity;
  let s = 0;
  for (let i = 0; i < count; i++) s += Math.exp(x[i] - m);
  return m + Math.log(s);
}
