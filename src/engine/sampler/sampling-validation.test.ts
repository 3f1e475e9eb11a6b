import { describe, expect, it } from 'vitest';
import type { SamplingParams, StoppingParams } from '../request.ts';
import { GREEDY } from '../testing/create-requests.ts';
import { validatePromptTokenIds, validateSamplingParams, validateStopping, validateTopNLogprobs } from './sampling-validation.ts';

const STOP: StoppingParams = { maxNewTokens: 16, stopSequences: ['\n'], stopTokenIds: [2], ignoreEos: false };
const LIMITS = { maxNewTokens: 100, maxStopSequences: 2, maxStopSequenceChars: 8, maxStopTokenIds: 2, vocabSize: 50 };

describe('sampling validation', () => {
  it('accepts valid parameters, including the bounds', () => {
    expect(() => validateSamplingParams(GREEDY)).not.toThrow();
    expect(() =>
      validateSamplingParams({ ...GREEDY, temperature: 100, topP: 1, minP: 1, repetitionPenalty: 10, presencePenalty: -2, frequencyPenalty: 2, seed: null }),
    ).not.toThrow();
    expect(() => validateStopping({ ...STOP, maxNewTokens: 100 }, LIMITS)).not.toThrow();
  });

  const badSampling: Array<[keyof SamplingParams, unknown, string]> = [
    ['temperature', -0.1, '>= 0 and <= 100'],
    ['temperature', 101, '>= 0 and <= 100'],
    ['temperature', NaN, '>= 0 and <= 100'],
    ['topP', 0, '> 0 and <= 1'],
    ['topP', 1.5, '> 0 and <= 1'],
    ['topK', -1, 'an integer >= 0'],
    ['topK', 2.5, 'an integer >= 0'],
    ['minP', 1.01, '>= 0 and <= 1'],
    ['seed', -1, 'null or an integer >= 0'],
    ['seed', 0.5, 'null or an integer >= 0'],
    ['repetitionPenalty', 0, '> 0 and <= 10'],
    ['presencePenalty', 2.5, '>= -2 and <= 2'],
    ['frequencyPenalty', -3, '>= -2 and <= 2'],
  ];
  it.each(badSampling)('rejects %s = %s naming field, bound and value', (field, value, bound) => {
    const s = { ...GREEDY, [field]: value } as SamplingParams;
    expect(() => validateSamplingParams(s)).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }));
    expect(() => validateSamplingParams(s)).toThrow(`\`sampling.${field}\` must be ${bound}`);
    expect(() => validateSamplingParams(s)).toThrow(`Given: ${JSON.stringify(value)}`);
  });

  it('rejects stopping parameters outside their limits', () => {
    const cases: Array<[Partial<StoppingParams>, string]> = [
      [{ maxNewTokens: 0 }, '`stopping.maxNewTokens` must be an integer >= 1 and <= 100. Given: 0'],
      [{ maxNewTokens: 101 }, 'Given: 101'],
      [{ stopSequences: ['a', 'b', 'c'] }, '`stopping.stopSequences.length` must be <= 2. Given: 3'],
      [{ stopSequences: ['ok', ''] }, '`stopping.stopSequences[1].length` must be >= 1 and <= 8. Given: 0'],
      [{ stopSequences: ['123456789'] }, 'Given: 9'],
      [{ stopTokenIds: [1, 2, 3] }, '`stopping.stopTokenIds.length` must be <= 2'],
      [{ stopTokenIds: [50] }, '`stopping.stopTokenIds[0]` must be an integer >= 0 and < 50 (vocab size). Given: 50'],
    ];
    for (const [patch, message] of cases) expect(() => validateStopping({ ...STOP, ...patch }, LIMITS)).toThrow(message);
  });

  it('rejects topN above its limit and prompt ids outside the vocabulary', () => {
    expect(() => validateTopNLogprobs(21)).toThrow('`topNLogprobs` must be an integer >= 0 and <= 20. Given: 21');
    expect(() => validateTopNLogprobs(5, 5)).not.toThrow();
    expect(() => validatePromptTokenIds([1, 99], 50)).toThrow('`promptTokenIds[1]` must be an integer >= 0 and < 50 (vocab size). Given: 99');
    expect(() => validatePromptTokenIds([], 50)).toThrow('`promptTokenIds.length` must be >= 1. Given: 0');
  });
});
