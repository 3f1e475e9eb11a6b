import { describe, expect, it } from 'vitest';
import type { SamplingParams } from '../request.ts';
import { GREEDY } from '../testing/create-requests.ts';
import { applyPenalties, createPenaltyState, recordGenerated } from './penalties.ts';
import { createPrng } from './prng.ts';
import { createSampler, logSumExp, type SamplingState } from './sampler.ts';

const LOGITS = Float32Array.of(2.0, 1.5, 1.0, 0.2, -0.5, -1.0, -3.0, 0.9);
const VOCAB = LOGITS.length;

function stateFor(params: Partial<SamplingParams>, prompt: number[] = [], topN = 0): SamplingState {
  const p = { ...GREEDY, ...params };
  return { params: p, prng: createPrng(p.seed ?? 1), penalties: createPenaltyState(p, prompt), topNLogprobs: topN };
}

function softmax(x: ArrayLike<number>, t = 1): number[] {
  const m = Math.max(...Array.from(x));
  const e = Array.from(x, (v) => Math.exp((v - m) / t));
  const s = e.reduce((a, b) => a + b, 0);
  return e.map((v) => v / s);
}

function frequencies(params: Partial<SamplingParams>, n: number, logits = LOGITS): number[] {
  const sampler = createSampler({ vocabSize: logits.length });
  const state = stateFor({ seed: 1234, ...params });
  const counts = new Array<number>(logits.length).fill(0);
  for (let i = 0; i < n; i++) counts[sampler.sample(logits, state).tokenId]++;
  return counts.map((c) => c / n);
}

describe('sampler', () => {
  it('greedy picks the argmax and reports log-softmax logprobs of the raw logits with sorted top-n', () => {
    const sampler = createSampler({ vocabSize: VOCAB });
    const tok = sampler.sample(LOGITS, stateFor({}, [], 3));
    const logZ = Math.log(Array.from(LOGITS).reduce((s, v) => s + Math.exp(v), 0));
    expect(tok.tokenId).toBe(0);
    expect(tok.logprob).toBeCloseTo(LOGITS[0] - logZ, 6);
    expect(tok.top.map((t) => t.tokenId)).toEqual([0, 1, 2]);
    tok.top.forEach((t) => expect(t.logprob).toBeCloseTo(LOGITS[t.tokenId] - logZ, 6));
    expect(logSumExp(LOGITS, VOCAB)).toBeCloseTo(logZ, 6);
  });

  it('temperature sampling follows softmax(logits / T)', () => {
    for (const t of [0.5, 1, 2]) {
      const f = frequencies({ temperature: t }, 40_000);
      softmax(LOGITS, t).forEach((p, i) => expect(Math.abs(f[i] - p)).toBeLessThan(0.01));
    }
  });

  it('the same seed gives the same tokens, another seed other tokens', () => {
    const sampler = createSampler({ vocabSize: VOCAB });
    const run = (seed: number): number[] => {
      const s = stateFor({ temperature: 1.3, seed });
      return Array.from({ length: 64 }, () => sampler.sample(LOGITS, s).tokenId);
    };
    expect(run(7)).toEqual(run(7));
    expect(run(7)).not.toEqual(run(8));
  });

  it('top-k restricts the support to the k best tokens, renormalised', () => {
    const f = frequencies({ temperature: 1, topK: 3 }, 30_000);
    const p = softmax([2.0, 1.5, 1.0]);
    [0, 1, 2].forEach((i) => expect(Math.abs(f[i] - p[i])).toBeLessThan(0.012));
    expect(f.slice(3).every((x) => x === 0)).toBe(true);
  });

  it('top-p keeps the smallest set of best tokens reaching p', () => {
    const logits = Float32Array.from([0.5, 0.25, 0.15, 0.1], Math.log); // probabilities as given
    const f = frequencies({ temperature: 1, topP: 0.7 }, 20_000, logits);
    expect(f[2]).toBe(0);
    expect(f[3]).toBe(0);
    expect(Math.abs(f[0] - 2 / 3)).toBeLessThan(0.015);
    const f2 = frequencies({ temperature: 1, topP: 0.8 }, 20_000, logits);
    expect(f2[2]).toBeGreaterThan(0.1);
    expect(f2[3]).toBe(0);
  });

  it('min-p drops tokens below minP * p(max)', () => {
    const logits = Float32Array.from([0.5, 0.25, 0.15, 0.1], Math.log);
    const f = frequencies({ temperature: 1, minP: 0.25 }, 20_000, logits); // keeps p >= 0.125
    expect(f[3]).toBe(0);
    expect(Math.abs(f[0] - 0.5 / 0.9)).toBeLessThan(0.015);
    expect(Math.abs(f[2] - 0.15 / 0.9)).toBeLessThan(0.015);
    const f2 = frequencies({ temperature: 1, minP: 0.4 }, 20_000, logits); // keeps p >= 0.2
    expect(f2[2]).toBe(0);
    expect(Math.abs(f2[0] - 2 / 3)).toBeLessThan(0.015);
  });

  it('top-k and top-p on a 49152 vocabulary agree with a brute-force sort', () => {
    const vocab = 49_152;
    const prng = createPrng(99);
    const logits = Float32Array.from({ length: vocab }, () => (prng.nextFloat() - 0.5) * 20);
    const sorted = Array.from(logits.keys()).sort((a, b) => logits[b] - logits[a]);
    const top50 = new Set(sorted.slice(0, 50));
    const probs = softmax(logits);
    let acc = 0;
    const nucleus = new Set<number>();
    for (const i of sorted) {
      if (acc >= 0.5) break;
      nucleus.add(i);
      acc += probs[i];
    }
    const sampler = createSampler({ vocabSize: vocab });
    const sk = stateFor({ temperature: 1, topK: 50, seed: 5 });
    const sp = stateFor({ temperature: 1, topP: 0.5, seed: 5 });
    for (let i = 0; i < 100; i++) {
      const a = sampler.sample(logits, sk).tokenId;
      const b = sampler.sample(logits, sp).tokenId;
      if (!top50.has(a) || !nucleus.has(b)) throw new Error(`draw ${i}: ${a} outside top-50 or ${b} outside the nucleus`);
    }
  });

  it('repetition penalty divides positive and multiplies negative logits of prompt + output tokens', () => {
    const p = { ...GREEDY, repetitionPenalty: 2 };
    const state = createPenaltyState(p, [0, 4]);
    recordGenerated(state, 1);
    const x = Float64Array.from(LOGITS);
    applyPenalties(x, p, state);
    expect(x[0]).toBeCloseTo(1.0); // 2.0 / 2
    expect(x[4]).toBeCloseTo(-1.0); // -0.5 * 2
    expect(x[1]).toBeCloseTo(0.75);
    expect(x[2]).toBeCloseTo(1.0); // untouched
    // Greedy now prefers token 2 over the penalised 0 and 1? 0 -> 1.0 ties with 2 -> 1.0: lowest id wins.
    const sampler = createSampler({ vocabSize: VOCAB });
    const s = stateFor({ repetitionPenalty: 3 }, [0, 1]);
    const tok = sampler.sample(LOGITS, s);
    expect(tok.tokenId).toBe(2);
    // logprob stays the unpenalised one
    expect(tok.logprob).toBeCloseTo(LOGITS[2] - logSumExp(LOGITS, VOCAB), 6);
  });

  it('presence and frequency penalties subtract per generated occurrence (prompt tokens untouched)', () => {
    const p = { ...GREEDY, presencePenalty: 0.5, frequencyPenalty: 0.25 };
    const state = createPenaltyState(p, [2]);
    recordGenerated(state, 0);
    recordGenerated(state, 0);
    recordGenerated(state, 1);
    const x = Float64Array.from(LOGITS);
    applyPenalties(x, p, state);
    expect(x[0]).toBeCloseTo(2.0 - 0.5 - 0.5);
    expect(x[1]).toBeCloseTo(1.5 - 0.5 - 0.25);
    expect(x[2]).toBeCloseTo(1.0);
  });
});
