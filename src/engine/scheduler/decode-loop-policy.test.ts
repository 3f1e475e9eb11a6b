import { describe, expect, it } from 'vitest';
import type { LoopSampling } from '../executor.ts';
import type { SamplingParams } from '../request.ts';
import { validateSamplingParams } from '../sampler/sampling-validation.ts';
import { createSequence, type Sequence } from '../sequence.ts';
import { createRequests, GREEDY } from '../testing/index.ts';
import { decodeStepsFor, loopSamplingOf } from './decode-loop-policy.ts';

function sequenceWith(sampling: Partial<SamplingParams>, opts: { topNLogprobs?: number; maxNewTokens?: number } = {}): Sequence {
  const [request] = createRequests(1, { sampling, topNLogprobs: opts.topNLogprobs ?? 0, maxNewTokens: opts.maxNewTokens ?? 8 });
  validateSamplingParams(request.sampling); // every case below is a request the server would accept
  return createSequence({ request, arrivalMs: 0, detokenizer: null, eosTokenIds: new Set(), emit: () => {} });
}

/** For every SamplingParams key, a valid value other than the greedy default (the type makes a new key fail here). */
const CHANGED: { readonly [K in keyof SamplingParams]-?: SamplingParams[K] } = {
  temperature: 0.7,
  topK: 5,
  topP: 0.9,
  minP: 0.05,
  seed: 1234,
  repetitionPenalty: 1.2,
  presencePenalty: 0.5,
  frequencyPenalty: -0.5,
};

/** A row sampled in the graph carries the parameter, or the row is not sampled in the graph: never dropped. */
function honoured(result: LoopSampling | null, key: keyof SamplingParams, value: unknown): boolean {
  return result === null || (key in result && (result as unknown as Record<string, unknown>)[key] === value);
}

describe('in-graph sampling eligibility (allow-list)', () => {
  it('the key list under test is every SamplingParams key', () => {
    expect(Object.keys(CHANGED).sort()).toEqual(Object.keys(GREEDY).sort());
  });

  it.each(Object.keys(GREEDY) as Array<keyof SamplingParams>)('%s: a non-default value is carried into the graph or keeps the row on the host', (key) => {
    const value = CHANGED[key];
    const result = loopSamplingOf(sequenceWith({ [key]: value }));
    expect(honoured(result, key, value)).toBe(true);
  });

  it('the graph samples with temperature, top-k and the seed; every other parameter keeps the row on the host', () => {
    const carried = (Object.keys(GREEDY) as Array<keyof SamplingParams>).filter((key) => loopSamplingOf(sequenceWith({ [key]: CHANGED[key] })) !== null);
    expect(carried.sort()).toEqual(['seed', 'temperature', 'topK']);
    expect(loopSamplingOf(sequenceWith({ temperature: 0.7, topK: 5, seed: 99 }))).toEqual({ temperature: 0.7, topK: 5, seed: 99 });
    expect(loopSamplingOf(sequenceWith({}))).toEqual({ temperature: 0, topK: 0, seed: 0 });
  });

  it('any mix of parameters: eligible only when nothing non-default would be dropped', () => {
    const keys = Object.keys(GREEDY) as Array<keyof SamplingParams>;
    for (let mask = 0; mask < 1 << keys.length; mask++) {
      const sampling: Partial<SamplingParams> = {};
      keys.forEach((key, i) => {
        if (mask & (1 << i)) (sampling as Record<string, unknown>)[key] = CHANGED[key];
      });
      const result = loopSamplingOf(sequenceWith(sampling));
      for (const key of keys) if (key in sampling) expect({ mask, key, ok: honoured(result, key, sampling[key]) }).toEqual({ mask, key, ok: true });
    }
  });

  it('top-n logprobs and a seed outside [0, 2^53) keep the row on the host', () => {
    expect(loopSamplingOf(sequenceWith({}, { topNLogprobs: 1 }))).toBeNull();
    const negative = { ...sequenceWith({}), seed: -1 };
    expect(loopSamplingOf(negative)).toBeNull();
  });

  it('decode steps: 1 when a row is host-only, else bounded by what every row may still generate', () => {
    expect(decodeStepsFor([sequenceWith({}, { maxNewTokens: 3 }), sequenceWith({ temperature: 0.5 }, { maxNewTokens: 8 })], 4)).toBe(3);
    expect(decodeStepsFor([sequenceWith({}), sequenceWith({ minP: 0.05 })], 4)).toBe(1);
  });
});
