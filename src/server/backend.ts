/**
 * What the gRPC server needs from the rest of Tessera. The composition root (src/cli) fills these in
 * from the engine, the tokenizer and the adapter registry; the server never imports src/model or
 * src/parallel.
 */
import type { GenerationEvent, ValidGenerateRequest } from '../engine/request.ts';

export interface ChatTurn {
  role: string;
  content: string;
}

/** How prompt text is tokenized. */
export interface PromptEncodeOptions {
  /**
   * false: special-token strings in the text (chat: in the message contents) are tokenized as text, never as control
   * tokens; true: parsed as control tokens (the client's explicit opt-in, `parse_special_tokens`).
   */
  parseSpecialTokens: boolean;
}

/**
 * Turns prompts into token ids, the way the served model expects them, off the event loop (a long prompt must not
 * stall other requests' streams).
 */
export interface PromptEncoder {
  /** Tokenizes prompt text (adding the model's usual special tokens, if any). */
  encode(text: string, opts: PromptEncodeOptions): Promise<number[]>;
  /** Renders chat messages with the model's chat template and tokenizes them; null when the model has no template. */
  encodeChat: ((messages: ChatTurn[], opts: PromptEncodeOptions) => Promise<number[]>) | null;
  /**
   * Most UTF-8 bytes of prompt text one token can stand for (null: no such bound for this tokenizer): text longer than
   * maxPromptTokens times this is refused from its length, before it is tokenized.
   */
  maxBytesPerToken: number | null;
}

export interface ModelInfo {
  modelId: string;
  /** Architecture family, e.g. 'llama'. */
  modelType: string;
  /** e.g. 'int4', 'int8', 'fp32'. */
  quantization: string;
  vocabSize: number;
  maxContextTokens: number;
  eosTokenIds: number[];
  /** 0 when adapters are not supported. */
  maxAdapterRank: number;
}

export type { AdapterState, AdapterStatus, AdapterTier } from '../adapters/adapter-status.ts';
import type { AdapterStatus } from '../adapters/adapter-status.ts';

/**
 * Adapter administration, scoped to the calling tenant (null when auth is off). Another tenant's
 * adapter must be answered with ADAPTER_NOT_FOUND (or PERMISSION_DENIED), never served.
 */
export interface AdapterAdmin {
  load(req: { adapterId: string; source: string; pin: boolean; tenantId: string | null }): Promise<AdapterStatus>;
  unload(req: { adapterId: string; tenantId: string | null }): Promise<void>;
  list(req: { tenantId: string | null }): Promise<AdapterStatus[]>;
  get(req: { adapterId: string; tenantId: string | null }): Promise<AdapterStatus>;
}

export interface ServingBackend {
  /**
   * Runs one request; yields 'tokens' events and ends with one 'finish' event. Aborting the signal
   * must remove the request and free its KV cache before the next step. Throws TesseraError for
   * admission failures (QUEUE_FULL, ADAPTER_NOT_FOUND, DRAINING, ...).
   */
  submit(req: ValidGenerateRequest, opts?: { signal?: AbortSignal }): AsyncIterable<GenerationEvent>;
  /** The engine's clock in milliseconds; `ValidGenerateRequest.deadlineMs` is on this clock. */
  nowMs(): number;
  /** null: only token-id prompts are accepted and `Tokenize` answers UNIMPLEMENTED. */
  encoder: PromptEncoder | null;
  modelInfo: ModelInfo;
  /** null: the Adapters service answers UNIMPLEMENTED. */
  adapters: AdapterAdmin | null;
  /** The text of one token id (logprobs of the HTTP face); unset: tokens read `token_id:N`. */
  tokenText?: (tokenId: number) => string;
}
