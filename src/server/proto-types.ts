/**
 * TypeScript shapes of the tessera.v1 messages as decoded and encoded with the options in proto-loader.ts
 * (snake_case names, enums as names, uint64 as decimal strings on input). Only what the server reads or
 * writes is typed; proto-loader.test.ts checks these names against the loaded descriptors.
 */

export interface TokenIdsMsg {
  ids: number[];
}

export interface ChatMessageMsg {
  role: string;
  content: string;
}

export interface ChatMessagesMsg {
  messages: ChatMessageMsg[];
}

export interface SamplingParametersMsg {
  temperature?: number;
  top_k?: number;
  top_p?: number;
  min_p?: number;
  /** uint64 as a decimal string (numbers are accepted too). */
  seed?: string | number;
  repetition_penalty?: number;
  presence_penalty?: number;
  frequency_penalty?: number;
}

export interface StoppingCriteriaMsg {
  max_new_tokens?: number;
  stop_sequences?: string[];
  stop_token_ids?: number[];
  ignore_eos?: boolean;
}

/** GenerateRequest and GenerateStreamRequest (same fields). */
export interface GenerateRequestMsg {
  request_id?: string;
  adapter_id?: string;
  prompt?: 'text' | 'token_ids' | 'chat';
  text?: string;
  token_ids?: TokenIdsMsg | null;
  chat?: ChatMessagesMsg | null;
  sampling?: SamplingParametersMsg | null;
  stopping?: StoppingCriteriaMsg | null;
  top_n_logprobs?: number;
  parse_special_tokens?: boolean;
}

export type FinishReasonName =
  | 'FINISH_REASON_UNSPECIFIED'
  | 'FINISH_REASON_LENGTH'
  | 'FINISH_REASON_STOP'
  | 'FINISH_REASON_EOS'
  | 'FINISH_REASON_CANCELLED'
  | 'FINISH_REASON_ERROR'
  | 'FINISH_REASON_DEADLINE';

export interface UsageMsg {
  prompt_tokens: number;
  generated_tokens: number;
}

export interface TopLogprobMsg {
  token_id: number;
  logprob: number;
}

export interface TokenLogprobMsg {
  token_id: number;
  logprob: number;
  top: TopLogprobMsg[];
}

/** GenerateResponse and GenerateStreamResponse (same fields). */
export interface GenerateResponseMsg {
  request_id: string;
  token_ids: number[];
  text: string;
  finish_reason: FinishReasonName;
  usage: UsageMsg | null;
  logprobs: TokenLogprobMsg[];
}

export interface TokenizeRequestMsg {
  input?: 'text' | 'chat';
  text?: string;
  chat?: ChatMessagesMsg | null;
  parse_special_tokens?: boolean;
}

export interface TokenizeResponseMsg {
  token_ids: number[];
}

export interface GetModelInfoResponseMsg {
  model_id: string;
  model_type: string;
  quantization: string;
  vocab_size: number;
  max_context_tokens: number;
  max_prompt_tokens: number;
  max_new_tokens: number;
  default_max_new_tokens: number;
  max_top_n_logprobs: number;
  max_stop_sequences: number;
  max_stop_sequence_length: number;
  max_request_id_length: number;
  eos_token_ids: number[];
  has_chat_template: boolean;
  max_adapter_rank: number;
}

export type AdapterStateName =
  | 'ADAPTER_STATE_UNSPECIFIED'
  | 'ADAPTER_STATE_REGISTERED'
  | 'ADAPTER_STATE_FETCHING'
  | 'ADAPTER_STATE_CACHED'
  | 'ADAPTER_STATE_DECODING'
  | 'ADAPTER_STATE_RESIDENT'
  | 'ADAPTER_STATE_EVICTED'
  | 'ADAPTER_STATE_FAILED';

export type AdapterTierName = 'ADAPTER_TIER_UNSPECIFIED' | 'ADAPTER_TIER_SOURCE' | 'ADAPTER_TIER_HOST' | 'ADAPTER_TIER_DEVICE';

export interface AdapterInfoMsg {
  adapter_id: string;
  state: AdapterStateName;
  tier: AdapterTierName;
  rank: number;
  size_bytes: number;
  version: number;
  tenant: string;
  source: string;
  compressed_size_bytes: number;
  decompressed_size_bytes: number;
  pinned: boolean;
  error: string;
}

export interface LoadAdapterRequestMsg {
  adapter_id: string;
  source: string;
  pin: boolean;
}

export interface AdapterIdRequestMsg {
  adapter_id: string;
}
