/**
 * OpenAI Completions and Chat Completions request bodies -> the GenerateRequestMsg both faces validate with the same
 * code (../validate.ts). This module checks only what is HTTP-specific: JSON types, fields Tessera does not support
 * (an error naming the field, never silently ignored), `n` = 1, and the mapping of OpenAI names onto the engine's.
 * Bounds (temperature, max_tokens, prompt length, ...) are checked once, by the shared validation.
 */
import { outOfRange, TesseraError } from '../../errors.ts';
import type { ChatMessage__Output as ChatMessageMsg } from '../../gen/tessera/v1/ChatMessage.ts';
import type { GenerateRequest__Output as GenerateRequestMsg } from '../../gen/tessera/v1/GenerateRequest.ts';
import type { SamplingParameters__Output as SamplingParametersMsg } from '../../gen/tessera/v1/SamplingParameters.ts';
import type { StoppingCriteria__Output as StoppingCriteriaMsg } from '../../gen/tessera/v1/StoppingCriteria.ts';

export type OpenAiEndpoint = 'completions' | 'chat';

export interface OpenAiRequest {
  endpoint: OpenAiEndpoint;
  /** The `model` as sent (echoed in replies). */
  model: string;
  msg: GenerateRequestMsg;
  stream: boolean;
  /** stream_options.include_usage: a last chunk with `usage` and no choices. */
  includeUsage: boolean;
  /** Whether logprobs go into the reply (completions: `logprobs` set; chat: `logprobs: true`). */
  logprobs: boolean;
  /** Name of the field that set top_n_logprobs (error messages). */
  logprobsField: 'logprobs' | 'top_logprobs';
}

type Body = Record<string, unknown>;

/** Fields both endpoints accept. Extensions beyond OpenAI's (vLLM's names): top_k, min_p, repetition_penalty, ignore_eos, stop_token_ids. */
const COMMON_FIELDS = [
  'model',
  'max_tokens',
  'temperature',
  'top_p',
  'n',
  'stream',
  'stream_options',
  'stop',
  'seed',
  'presence_penalty',
  'frequency_penalty',
  'logit_bias',
  'user',
  'top_k',
  'min_p',
  'repetition_penalty',
  'ignore_eos',
  'stop_token_ids',
] as const;
const COMPLETION_FIELDS = new Set<string>([...COMMON_FIELDS, 'prompt', 'logprobs', 'echo', 'suffix', 'best_of']);
const CHAT_FIELDS = new Set<string>([...COMMON_FIELDS, 'messages', 'logprobs', 'top_logprobs', 'max_completion_tokens', 'response_format']);
const MESSAGE_FIELDS = new Set(['role', 'content']);
/** OpenAI's `developer` role is the `system` role of chat templates. */
const ROLE_ALIASES: Readonly<Record<string, string>> = { developer: 'system' };

function invalid(field: string, message: string): TesseraError {
  return new TesseraError('INVALID_ARGUMENT', `\`${field}\` ${message}`);
}

function unsupported(field: string, why: string): TesseraError {
  return invalid(field, `is not supported by this server${why ? ` (${why})` : ''}; leave it unset`);
}

/** Reads an optional field: undefined when absent or null, else a value of the kind asked for. */
function optional(body: Body, field: string, kind: 'number' | 'integer' | 'string' | 'boolean'): number | string | boolean | undefined {
  const v = body[field];
  if (v === undefined || v === null) return undefined;
  const ok = kind === 'integer' ? Number.isInteger(v) : typeof v === kind && (kind !== 'number' || Number.isFinite(v));
  if (!ok) throw outOfRange(field, kind === 'integer' ? 'an integer' : `a ${kind}`, v);
  return v as number | string | boolean;
}

function optionalNumber(body: Body, field: string): number | undefined {
  return optional(body, field, 'number') as number | undefined;
}

function optionalInteger(body: Body, field: string): number | undefined {
  return optional(body, field, 'integer') as number | undefined;
}

function checkKnownFields(body: Body, known: Set<string>, where: string): void {
  for (const key of Object.keys(body)) {
    if (!known.has(key)) throw invalid(key, `is not a field of ${where} that this server knows; remove it`);
  }
}

function stopSequences(body: Body): string[] | undefined {
  const stop = body.stop;
  if (stop === undefined || stop === null) return undefined;
  if (typeof stop === 'string') return [stop];
  if (!Array.isArray(stop)) throw outOfRange('stop', 'a string or an array of strings', stop);
  stop.forEach((s, i) => {
    if (typeof s !== 'string') throw outOfRange(`stop[${i}]`, 'a string', s);
  });
  return stop as string[];
}

function tokenIdList(value: unknown, field: string): number[] {
  if (!Array.isArray(value)) throw outOfRange(field, 'an array of token ids', value);
  value.forEach((id, i) => {
    if (!Number.isInteger(id)) throw outOfRange(`${field}[${i}]`, 'an integer token id', id);
  });
  return value as number[];
}

function sampling(body: Body): SamplingParametersMsg {
  const out: SamplingParametersMsg = {};
  const set = <K extends keyof SamplingParametersMsg>(key: K, value: SamplingParametersMsg[K] | undefined): void => {
    if (value !== undefined) out[key] = value;
  };
  set('temperature', optionalNumber(body, 'temperature'));
  set('top_p', optionalNumber(body, 'top_p'));
  set('top_k', optionalInteger(body, 'top_k'));
  set('min_p', optionalNumber(body, 'min_p'));
  set('repetition_penalty', optionalNumber(body, 'repetition_penalty'));
  set('presence_penalty', optionalNumber(body, 'presence_penalty'));
  set('frequency_penalty', optionalNumber(body, 'frequency_penalty'));
  const seed = optionalInteger(body, 'seed');
  if (seed !== undefined) {
    if (seed < 0) throw outOfRange('seed', `an integer >= 0 and <= ${Number.MAX_SAFE_INTEGER}`, seed);
    out.seed = String(seed); // uint64 arrives as a decimal string on gRPC; the shared validation reads that
  }
  return out;
}

function stopping(body: Body, maxTokens: number | undefined): StoppingCriteriaMsg {
  const out: StoppingCriteriaMsg = {
    stop_sequences: stopSequences(body) ?? [],
    stop_token_ids: body.stop_token_ids !== undefined && body.stop_token_ids !== null ? tokenIdList(body.stop_token_ids, 'stop_token_ids') : [],
    ignore_eos: (optional(body, 'ignore_eos', 'boolean') as boolean | undefined) ?? false,
  };
  if (maxTokens !== undefined) out.max_new_tokens = maxTokens;
  return out;
}

/** The fields every request message carries (as decoded from gRPC: empty = unset). */
const MESSAGE_DEFAULTS = { request_id: '', adapter_id: '', parse_special_tokens: false } as const;

/** The parts both endpoints share: model, n, stream options, logit_bias, user. */
function common(body: Body): { model: string; stream: boolean; includeUsage: boolean } {
  const model = body.model;
  if (typeof model !== 'string' || model === '') throw outOfRange('model', 'a model id (the base model or an adapter, see GET /v1/models)', model ?? null);
  const n = optionalInteger(body, 'n');
  if (n !== undefined && n !== 1) throw outOfRange('n', '1 (one choice per request; send several requests for more)', n);
  const stream = (optional(body, 'stream', 'boolean') as boolean | undefined) ?? false;
  let includeUsage = false;
  const so = body.stream_options;
  if (so !== undefined && so !== null) {
    if (!stream) throw invalid('stream_options', 'is only allowed with `stream: true`');
    if (typeof so !== 'object' || Array.isArray(so)) throw outOfRange('stream_options', 'an object', so);
    for (const key of Object.keys(so)) if (key !== 'include_usage') throw invalid(`stream_options.${key}`, 'is not supported; only `include_usage` is');
    const iu = (so as Body).include_usage;
    if (iu !== undefined && iu !== null && typeof iu !== 'boolean') throw outOfRange('stream_options.include_usage', 'a boolean', iu);
    includeUsage = iu === true;
  }
  const bias = body.logit_bias;
  if (bias !== undefined && bias !== null && (typeof bias !== 'object' || Object.keys(bias).length > 0)) throw unsupported('logit_bias', '');
  if (body.user !== undefined && body.user !== null && typeof body.user !== 'string') throw outOfRange('user', 'a string', body.user);
  return { model, stream, includeUsage };
}

/** POST /v1/completions body. */
export function parseCompletionRequest(body: Body): OpenAiRequest {
  checkKnownFields(body, COMPLETION_FIELDS, 'a completions request');
  const { model, stream, includeUsage } = common(body);
  if (body.echo !== undefined && body.echo !== null && body.echo !== false) throw unsupported('echo', 'the reply holds only the completion');
  if (body.suffix !== undefined && body.suffix !== null) throw unsupported('suffix', 'no fill-in-the-middle');
  const bestOf = optionalInteger(body, 'best_of');
  if (bestOf !== undefined && bestOf !== 1) throw outOfRange('best_of', '1', bestOf);
  const logprobs = optionalInteger(body, 'logprobs');
  const msg: GenerateRequestMsg = {
    ...MESSAGE_DEFAULTS,
    sampling: sampling(body),
    stopping: stopping(body, optionalInteger(body, 'max_tokens')),
    top_n_logprobs: logprobs ?? 0,
    ...completionPrompt(body.prompt),
  };
  return { endpoint: 'completions', model, msg, stream, includeUsage, logprobs: logprobs !== undefined, logprobsField: 'logprobs' };
}

/** `prompt`: a string, or token ids, or a batch of exactly one of either. */
function completionPrompt(prompt: unknown): Pick<GenerateRequestMsg, 'prompt' | 'text' | 'token_ids'> {
  let p = prompt;
  if (Array.isArray(p) && p.length > 0 && (typeof p[0] === 'string' || Array.isArray(p[0]))) {
    if (p.length !== 1) throw outOfRange('prompt', 'one prompt (batches of several prompts are not supported; send one request each)', `${p.length} prompts`);
    p = p[0];
  }
  if (typeof p === 'string') return { prompt: 'text', text: p };
  if (Array.isArray(p)) return { prompt: 'token_ids', token_ids: { ids: tokenIdList(p, 'prompt') } };
  throw outOfRange('prompt', 'a string or an array of token ids', p ?? null);
}

/** POST /v1/chat/completions body. */
export function parseChatRequest(body: Body): OpenAiRequest {
  checkKnownFields(body, CHAT_FIELDS, 'a chat completions request');
  const { model, stream, includeUsage } = common(body);
  const rf = body.response_format;
  if (rf !== undefined && rf !== null && (typeof rf !== 'object' || (rf as Body).type !== 'text')) throw unsupported('response_format', 'only {"type": "text"}');
  const maxTokens = optionalInteger(body, 'max_tokens');
  const maxCompletionTokens = optionalInteger(body, 'max_completion_tokens');
  if (maxTokens !== undefined && maxCompletionTokens !== undefined && maxTokens !== maxCompletionTokens) {
    throw invalid('max_completion_tokens', `and \`max_tokens\` must agree when both are set. Given: ${maxCompletionTokens} and ${maxTokens}`);
  }
  const logprobs = (optional(body, 'logprobs', 'boolean') as boolean | undefined) ?? false;
  const topLogprobs = optionalInteger(body, 'top_logprobs');
  if (topLogprobs !== undefined && !logprobs) throw invalid('top_logprobs', 'needs `logprobs: true`');
  const msg: GenerateRequestMsg = {
    ...MESSAGE_DEFAULTS,
    prompt: 'chat',
    chat: { messages: chatMessages(body.messages) },
    sampling: sampling(body),
    stopping: stopping(body, maxCompletionTokens ?? maxTokens),
    top_n_logprobs: topLogprobs ?? 0,
  };
  return { endpoint: 'chat', model, msg, stream, includeUsage, logprobs, logprobsField: 'top_logprobs' };
}

function chatMessages(messages: unknown): ChatMessageMsg[] {
  if (!Array.isArray(messages)) throw outOfRange('messages', 'an array of messages', messages ?? null);
  return messages.map((m: unknown, i) => {
    const where = `messages[${i}]`;
    if (typeof m !== 'object' || m === null || Array.isArray(m)) throw outOfRange(where, 'an object with `role` and `content`', m);
    const msg = m as Body;
    for (const key of Object.keys(msg)) {
      if (!MESSAGE_FIELDS.has(key) && msg[key] !== null && msg[key] !== undefined) throw unsupported(`${where}.${key}`, 'messages carry `role` and text `content` only');
    }
    if (typeof msg.role !== 'string') throw outOfRange(`${where}.role`, 'a string', msg.role ?? null);
    return { role: ROLE_ALIASES[msg.role] ?? msg.role, content: messageContent(msg.content, `${where}.content`) };
  });
}

/** A message's content: a string, or an array of `{type: "text", text}` parts (joined). */
function messageContent(content: unknown, field: string): string {
  if (content === undefined || content === null) return '';
  if (typeof content === 'string') return content;
  if (!Array.isArray(content)) throw outOfRange(field, 'a string or an array of text parts', content);
  return content
    .map((part: unknown, i) => {
      const p = part as Body | null;
      if (typeof p !== 'object' || p === null || p.type !== 'text') throw unsupported(`${field}[${i}]`, 'only parts of type "text"');
      if (typeof p.text !== 'string') throw outOfRange(`${field}[${i}].text`, 'a string', p.text ?? null);
      return p.text;
    })
    .join('');
}
