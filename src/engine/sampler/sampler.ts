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
import { expNonPositive } from './fast-exp.ts';
import type { Prng } from './prng.ts';
import { argmax, selectNucleus, selectTopK, topNSorted, type Values } from './top-selection.ts';

/** Up to this k, top-k keeps a small sorted list in one pass instead of quickselect. */
const SMALL_TOP_K = 128;

/** Per-request sampling state. */
export interface SamplingState {
  params: SamplingParams;
  prng: Prng;
  penalties: PenaltyState;
  topNLogprobs: number;
}

export interface Sampler {
  /**
   * Samples one token from `logits` (one row, [vocabSize] float32). `logSumExp` of the row, when the executor gives it,
   * saves the one pass over the vocabulary that greedy decoding would otherwise need for the logprob.
   */
  sample(logits: Float32Array, state: SamplingState, logSumExp?: number): GeneratedToken;
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
    if (p.topK > 0 && p.topK < vocabSize) {
      if (p.topK <= SMALL_TOP_K) {
        const best = topNSorted(logits, vocabSize, p.topK);
        for (let i = 0; i < best.length; i++) idx[i] = best[i];
        count = best.length;
      } else {
        for (let i = 0; i < vocabSize; i++) idx[i] = i;
        count = selectTopK(logits, idx, vocabSize, p.topK);
      }
    } else {
      for (let i = 0; i < vocabSize; i++) idx[i] = i;
    }

    let maxLogit = -Infinity;
    for (let i = 0; i < count; i++) {
      const v = logits[idx[i]];
      if (v > maxLogit) maxLogit = v;
    }
    let total = 0;
    for (let i = 0; i < count; i++) {
      const t = idx[i];
      const w = expNonPositive((logits[t] - maxLogit) * invT);
      weights[t] = w;
      total += w;
    }
    if (p.topP < 1) {
      // Tokens below (1 - p) * total / count cannot be in the nucleus: together they weigh at most (1 - p) * total.
      const floor = ((1 - p.topP) * total) / count;
      let kept = 0;
      for (let i = 0; i < count; i++) {
        const t = idx[i];
        if (weights[t] >= floor) idx[kept++] = t;
      }
      count = selectNucleus(weights, idx, kept, p.topP * total);
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
    sample(raw: Float32Array, state: SamplingState, rowLogSumExp?: number): GeneratedToken {
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

      const lse = rowLogSumExp !== undefined && Number.isFinite(rowLogSumExp) ? rowLogSumExp : logSumExp(raw, vocabSize);
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
  for (let i = 0; i < count; i++) s += expNonPositive(x[i] - m);
  return m + Math.log(s);
}
