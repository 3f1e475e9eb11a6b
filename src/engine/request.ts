/** Checked inputs and outputs of the engine (the server builds these from protos; the engine never sees protos). */

export interface SamplingParams {
  /** 0 = greedy. */
  temperature: number;
  /** 0 = disabled. */
  topK: number;
  /** 1 = disabled. */
  topP: number;
  /** 0 = disabled. */
  minP: number;
  /** null = random seed per request. */
  seed: number | null;
  /** 1 = disabled. */
  repetitionPenalty: number;
  /** 0 = disabled. */
  presencePenalty: number;
  /** 0 = disabled. */
  frequencyPenalty: number;
}

export interface StoppingParams {
  maxNewTokens: number;
  stopSequences: string[];
  stopTokenIds: number[];
  ignoreEos: boolean;
}

export interface ValidGenerateRequest {
  requestId: string;
  promptTokenIds: number[];
  /** null = base model. */
  adapterId: string | null;
  tenantId: string | null;
  sampling: SamplingParams;
  stopping: StoppingParams;
  /** Alternatives per generated token (0 = only the chosen token's logprob). */
  topNLogprobs: number;
  /** Absolute deadline on the engine clock, or null. */
  deadlineMs: number | null;
}

export type FinishReason = 'length' | 'stop' | 'eos' | 'cancelled' | 'error' | 'deadline';

export interface TokenLogprob {
  tokenId: number;
  logprob: number;
}

export interface GeneratedToken {
  tokenId: number;
  /** Natural-log probability after log-softmax over the full vocabulary. */
  logprob: number;
  top: TokenLogprob[];
}

/**
 * Streamed to the caller as tokens are produced: 'tokens' events carry text deltas; the one 'finish' event at the end
 * carries the whole generated text (the deltas concatenated).
 */
export type GenerationEvent =
  | { type: 'tokens'; tokens: GeneratedToken[]; text: string }
  | { type: 'finish'; reason: FinishReason; text: string; usage: { promptTokens: number; generatedTokens: number }; error?: Error };
