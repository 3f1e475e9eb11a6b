/** Per-request limits the server enforces while validating requests. */
import { TesseraError } from '../errors.ts';

export interface RequestLimits {
  /** Vocabulary size: every token id must be below it. */
  vocabSize: number;
  /** Longest prompt + generated sequence the model supports, in tokens. */
  maxContextTokens: number;
  maxPromptTokens: number;
  /** Largest accepted `stopping.max_new_tokens`. */
  maxNewTokens: number;
  /** Used when `stopping.max_new_tokens` is unset (then lowered to fit the context). */
  defaultMaxNewTokens: number;
  maxStopSequences: number;
  /** In UTF-16 code units (as the engine counts them). */
  maxStopSequenceLength: number;
  maxStopTokenIds: number;
  maxTopNLogprobs: number;
  /** In characters. */
  maxRequestIdLength: number;
  /** In characters. */
  maxAdapterIdLength: number;
  maxChatMessages: number;
}

export type RequestLimitsOptions = Partial<RequestLimits> & Pick<RequestLimits, 'vocabSize' | 'maxContextTokens'>;

/** Fills unset limits with defaults derived from the model's context. */
export function resolveRequestLimits(opts: RequestLimitsOptions): RequestLimits {
  const maxContextTokens = opts.maxContextTokens;
  const limits: RequestLimits = {
    vocabSize: opts.vocabSize,
    maxContextTokens,
    maxPromptTokens: opts.maxPromptTokens ?? Math.max(1, maxContextTokens - 1),
    maxNewTokens: opts.maxNewTokens ?? maxContextTokens,
    defaultMaxNewTokens: opts.defaultMaxNewTokens ?? Math.min(256, maxContextTokens),
    maxStopSequences: opts.maxStopSequences ?? 8,
    maxStopSequenceLength: opts.maxStopSequenceLength ?? 128,
    maxStopTokenIds: opts.maxStopTokenIds ?? 64,
    maxTopNLogprobs: opts.maxTopNLogprobs ?? 20,
    maxRequestIdLength: opts.maxRequestIdLength ?? 128,
    maxAdapterIdLength: opts.maxAdapterIdLength ?? 128,
    maxChatMessages: opts.maxChatMessages ?? 256,
  };
  for (const [key, value] of Object.entries(limits)) {
    if (!Number.isInteger(value) || value < 0) {
      throw new TesseraError('CONFIG_INVALID', `request limit \`${key}\` must be an integer >= 0. Given: ${JSON.stringify(value)}`);
    }
  }
  if (limits.vocabSize < 1 || limits.maxContextTokens < 2) {
    throw new TesseraError(
      'CONFIG_INVALID',
      `request limits need \`vocabSize\` >= 1 and \`maxContextTokens\` >= 2. Given: ${limits.vocabSize}, ${limits.maxContextTokens}`,
    );
  }
  return Object.freeze(limits);
}
