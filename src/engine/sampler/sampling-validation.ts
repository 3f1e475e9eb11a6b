/**
 * Checks of sampling and stopping parameters. Each failure is outOfRange(field, bound, value): INVALID_ARGUMENT with a
 * message naming the field, the bound and the value given. The server calls these while building a
 * ValidGenerateRequest; the engine calls them again at submit.
 */
import { outOfRange } from '../../errors.ts';
import type { SamplingParams, StoppingParams } from '../request.ts';

export const MAX_TEMPERATURE = 100;
export const MAX_REPETITION_PENALTY = 10;
export const MAX_ABS_PRESENCE_FREQUENCY_PENALTY = 2;

export interface StoppingLimits {
  /** Upper bound of maxNewTokens. */
  maxNewTokens: number;
  maxStopSequences: number;
  /** Longest stop sequence, in UTF-16 code units. */
  maxStopSequenceChars: number;
  maxStopTokenIds: number;
  vocabSize: number;
}

export const DEFAULT_MAX_TOP_N_LOGPROBS = 20;

function isSafeNonNegativeInteger(x: number): boolean {
  return Number.isSafeInteger(x) && x >= 0;
}

export function validateSamplingParams(s: SamplingParams, field = 'sampling'): void {
  const f = (name: string): string => `${field}.${name}`;
  if (!Number.isFinite(s.temperature) || s.temperature < 0 || s.temperature > MAX_TEMPERATURE) {
    throw outOfRange(f('temperature'), `>= 0 and <= ${MAX_TEMPERATURE}`, s.temperature);
  }
  if (!Number.isFinite(s.topP) || s.topP <= 0 || s.topP > 1) throw outOfRange(f('topP'), '> 0 and <= 1', s.topP);
  if (!Number.isSafeInteger(s.topK) || s.topK < 0 || s.topK > 0x7fffffff) {
    throw outOfRange(f('topK'), `an integer >= 0 and <= ${0x7fffffff} (0 = disabled)`, s.topK);
  }
  if (!Number.isFinite(s.minP) || s.minP < 0 || s.minP > 1) throw outOfRange(f('minP'), '>= 0 and <= 1', s.minP);
  if (s.seed !== null && !isSafeNonNegativeInteger(s.seed)) {
    throw outOfRange(f('seed'), `null or an integer >= 0 and <= ${Number.MAX_SAFE_INTEGER}`, s.seed);
  }
  if (!Number.isFinite(s.repetitionPenalty) || s.repetitionPenalty <= 0 || s.repetitionPenalty > MAX_REPETITION_PENALTY) {
    throw outOfRange(f('repetitionPenalty'), `> 0 and <= ${MAX_REPETITION_PENALTY} (1 = disabled)`, s.repetitionPenalty);
  }
  const b = MAX_ABS_PRESENCE_FREQUENCY_PENALTY;
  if (!Number.isFinite(s.presencePenalty) || Math.abs(s.presencePenalty) > b) {
    throw outOfRange(f('presencePenalty'), `>= -${b} and <= ${b}`, s.presencePenalty);
  }
  if (!Number.isFinite(s.frequencyPenalty) || Math.abs(s.frequencyPenalty) > b) {
    throw outOfRange(f('frequencyPenalty'), `>= -${b} and <= ${b}`, s.frequencyPenalty);
  }
}

export function validateStopping(s: StoppingParams, limits: StoppingLimits, field = 'stopping'): void {
  const f = (name: string): string => `${field}.${name}`;
  if (!Number.isSafeInteger(s.maxNewTokens) || s.maxNewTokens < 1 || s.maxNewTokens > limits.maxNewTokens) {
    throw outOfRange(f('maxNewTokens'), `an integer >= 1 and <= ${limits.maxNewTokens}`, s.maxNewTokens);
  }
  if (s.stopSequences.length > limits.maxStopSequences) {
    throw outOfRange(`${f('stopSequences')}.length`, `<= ${limits.maxStopSequences}`, s.stopSequences.length);
  }
  s.stopSequences.forEach((seq, i) => {
    if (seq.length < 1 || seq.length > limits.maxStopSequenceChars) {
      throw outOfRange(`${f('stopSequences')}[${i}].length`, `>= 1 and <= ${limits.maxStopSequenceChars}`, seq.length);
    }
  });
  if (s.stopTokenIds.length > limits.maxStopTokenIds) {
    throw outOfRange(`${f('stopTokenIds')}.length`, `<= ${limits.maxStopTokenIds}`, s.stopTokenIds.length);
  }
  s.stopTokenIds.forEach((id, i) => {
    if (!Number.isSafeInteger(id) || id < 0 || id >= limits.vocabSize) {
      throw outOfRange(`${f('stopTokenIds')}[${i}]`, `an integer >= 0 and < ${limits.vocabSize} (vocab size)`, id);
    }
  });
}

export function validateTopNLogprobs(n: number, limit = DEFAULT_MAX_TOP_N_LOGPROBS, field = 'topNLogprobs'): void {
  if (!Number.isSafeInteger(n) || n < 0 || n > limit) throw outOfRange(field, `an integer >= 0 and <= ${limit}`, n);
}

export function validatePromptTokenIds(ids: readonly number[], vocabSize: number, field = 'promptTokenIds'): void {
  if (ids.length === 0) throw outOfRange(`${field}.length`, '>= 1', 0);
  for (let i = 0; i < ids.length; i++) {
    const id = ids[i];
    if (!Number.isSafeInteger(id) || id < 0 || id >= vocabSize) {
      throw outOfRange(`${field}[${i}]`, `an integer >= 0 and < ${vocabSize} (vocab size)`, id);
    }
  }
}
