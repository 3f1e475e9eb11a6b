/**
 * Proto GenerateRequest -> ValidGenerateRequest: defaults for unset fields, every bound checked, the
 * prompt tokenized. Errors name the field as spelled in the .proto, the bound and the value given.
 */
import { randomUUID } from 'node:crypto';
import { parseAdapterId } from '../adapters/adapter-id.ts';
import { outOfRange, TesseraError } from '../errors.ts';
import type { SamplingParams, StoppingParams, ValidGenerateRequest } from '../engine/request.ts';
import type { ChatTurn, PromptEncoder } from './backend.ts';
import type { ChatMessages__Output as ChatMessagesMsg } from '../gen/tessera/v1/ChatMessages.ts';
import type { GenerateRequest__Output as GenerateRequestMsg } from '../gen/tessera/v1/GenerateRequest.ts';
import type { SamplingParameters__Output as SamplingParametersMsg } from '../gen/tessera/v1/SamplingParameters.ts';
import type { StoppingCriteria__Output as StoppingCriteriaMsg } from '../gen/tessera/v1/StoppingCriteria.ts';
import type { RequestLimits } from './request-limits.ts';

/** Request ids: printable ASCII without spaces. */
const REQUEST_ID_PATTERN = /^[\x21-\x7e]+$/;

export const DEFAULT_SAMPLING: Readonly<SamplingParams> = Object.freeze({
  temperature: 1,
  topK: 0,
  topP: 1,
  minP: 0,
  seed: null,
  repetitionPenalty: 1,
  presencePenalty: 0,
  frequencyPenalty: 0,
});

export interface ValidateOptions {
  limits: RequestLimits;
  /** null: text and chat prompts are rejected. */
  encoder: PromptEncoder | null;
  /** From auth; null when auth is off. */
  tenantId: string | null;
  /** Absolute deadline on the engine clock, or null. */
  deadlineMs: number | null;
  /** Id used when the client sends none; default a random UUID. */
  newRequestId?: () => string;
  /** The `x-tessera-adapter` header ('' when absent): used when `adapter_id` is empty, must agree when both are set. */
  adapterHeader?: string;
}

/** Checks every field; the prompt is tokenized last (off the event loop), after the checks that cost nothing. */
export async function validateGenerateRequest(msg: GenerateRequestMsg, opts: ValidateOptions): Promise<ValidGenerateRequest> {
  const { limits } = opts;
  const requestId = validateRequestId(msg.request_id ?? '', limits, opts.newRequestId ?? randomUUID);
  const adapterId = validateAdapterId(adapterIdOf(msg.adapter_id ?? '', opts.adapterHeader ?? ''), 'adapter_id', limits, true);
  const sampling = validateSampling(msg.sampling ?? null, limits);
  const topNLogprobs = msg.top_n_logprobs ?? 0;
  checkInteger('top_n_logprobs', topNLogprobs, 0, limits.maxTopNLogprobs);
  const promptTokenIds = await validatePrompt(msg, limits, opts.encoder);
  const stopping = validateStopping(msg.stopping ?? null, limits, promptTokenIds.length);
  return { requestId, promptTokenIds, adapterId, tenantId: opts.tenantId, sampling, stopping, topNLogprobs, deadlineMs: opts.deadlineMs };
}

function validateRequestId(given: string, limits: RequestLimits, newRequestId: () => string): string {
  if (given === '') return newRequestId();
  if (given.length > limits.maxRequestIdLength) {
    throw outOfRange('request_id', `at most ${limits.maxRequestIdLength} characters`, `${given.slice(0, 16)}... (${given.length} characters)`);
  }
  if (!REQUEST_ID_PATTERN.test(given)) throw outOfRange('request_id', 'printable ASCII without spaces', given);
  return given;
}

/** The body's adapter id, or the routing header's when the body has none; the two must not disagree. */
function adapterIdOf(body: string, header: string): string {
  if (body !== '' && header !== '' && body !== header) {
    throw new TesseraError('INVALID_ARGUMENT', `\`adapter_id\` ("${body.slice(0, 64)}") and the x-tessera-adapter header ("${header.slice(0, 64)}") must name the same adapter`);
  }
  return body !== '' ? body : header;
}

/** Empty -> null when `emptyMeansNone`, else an error; the rule itself is the registry's (src/adapters/adapter-id.ts). */
export function validateAdapterId(given: string, field: string, limits: RequestLimits, emptyMeansNone: boolean): string | null {
  if (given === '' && emptyMeansNone) return null;
  return parseAdapterId(given, { field, maxLength: limits.maxAdapterIdLength });
}

async function validatePrompt(msg: GenerateRequestMsg, limits: RequestLimits, encoder: PromptEncoder | null): Promise<number[]> {
  let ids: number[];
  const parseSpecialTokens = msg.parse_special_tokens ?? false;
  switch (msg.prompt) {
    case 'text': {
      const text = msg.text ?? '';
      if (text === '') throw outOfRange('text', 'a non-empty string', text);
      ids = await encodeText(text, encoder, 'text', limits, parseSpecialTokens);
      break;
    }
    case 'token_ids': {
      ids = msg.token_ids?.ids ?? [];
      checkTokenIds('token_ids.ids', ids, limits.vocabSize);
      break;
    }
    case 'chat':
      ids = await encodeChatMessages(msg.chat ?? null, 'chat', limits, encoder, parseSpecialTokens);
      break;
    default:
      throw new TesseraError('INVALID_ARGUMENT', '`prompt` is required: set one of `text`, `token_ids` or `chat`');
  }
  if (ids.length === 0) throw outOfRange(promptField(msg.prompt), 'a prompt of at least 1 token', 0);
  if (ids.length > limits.maxPromptTokens) {
    throw new TesseraError(
      'PROMPT_TOO_LONG',
      `\`${promptField(msg.prompt)}\` must be at most ${limits.maxPromptTokens} tokens. Given: ${ids.length} tokens`,
    );
  }
  return ids;
}

function promptField(kind: GenerateRequestMsg['prompt']): string {
  return kind === 'token_ids' ? 'token_ids.ids' : kind === 'chat' ? 'chat.messages' : 'text';
}

/**
 * Refuses text that must be longer than `maxPromptTokens` from its byte length alone, before it is tokenized: each
 * token stands for at most `maxBytesPerToken` bytes (PromptEncoder), so more bytes than maxPromptTokens times that
 * cannot fit. A 4 MB prompt is refused here in microseconds instead of costing seconds of tokenizing.
 */
function checkPromptBytes(field: string, texts: readonly string[], limits: RequestLimits, encoder: PromptEncoder): void {
  const perToken = encoder.maxBytesPerToken;
  if (perToken === null) return;
  const maxBytes = limits.maxPromptTokens * perToken;
  let bytes = 0;
  for (const t of texts) bytes += Buffer.byteLength(t, 'utf8');
  if (bytes > maxBytes) {
    throw new TesseraError(
      'PROMPT_TOO_LONG',
      `\`${field}\` must be at most ${limits.maxPromptTokens} tokens. Given: ${bytes} bytes of text, more than ${limits.maxPromptTokens} tokens of at most ${perToken} bytes each can hold`,
    );
  }
}

/** Tokenizes text with the model's encoder (after the byte bound); INVALID_ARGUMENT when the server has none. */
export async function encodeText(text: string, encoder: PromptEncoder | null, field: string, limits: RequestLimits, parseSpecialTokens: boolean): Promise<number[]> {
  if (!encoder) throw new TesseraError('INVALID_ARGUMENT', `\`${field}\` needs a tokenizer and this server has none; send \`token_ids\``);
  checkPromptBytes(field, [text], limits, encoder);
  return encoder.encode(text, { parseSpecialTokens });
}

/** Checks chat messages and renders + tokenizes them with the model's chat template (after the byte bound). */
export async function encodeChatMessages(
  chat: ChatMessagesMsg | null,
  field: string,
  limits: RequestLimits,
  encoder: PromptEncoder | null,
  parseSpecialTokens: boolean,
): Promise<number[]> {
  const messages = chat?.messages ?? [];
  if (messages.length === 0) throw outOfRange(`${field}.messages`, 'at least 1 message', 0);
  if (messages.length > limits.maxChatMessages) throw outOfRange(`${field}.messages`, `at most ${limits.maxChatMessages} messages`, messages.length);
  const turns: ChatTurn[] = messages.map((m, i) => {
    if (!m.role) throw outOfRange(`${field}.messages[${i}].role`, 'a non-empty role', m.role ?? '');
    return { role: m.role, content: m.content ?? '' };
  });
  if (!encoder?.encodeChat) {
    throw new TesseraError('INVALID_ARGUMENT', `\`${field}\` needs a model with a chat template and this model has none; send \`text\` or \`token_ids\``);
  }
  checkPromptBytes(`${field}.messages`, turns.flatMap((t) => [t.role, t.content]), limits, encoder);
  return encoder.encodeChat(turns, { parseSpecialTokens });
}

function checkTokenIds(field: string, ids: number[], vocabSize: number): void {
  for (let i = 0; i < ids.length; i++) {
    const id = ids[i];
    if (!Number.isInteger(id) || id < 0 || id >= vocabSize) throw outOfRange(`${field}[${i}]`, `>= 0 and < ${vocabSize} (the vocabulary size)`, id);
  }
}

function checkNumber(field: string, value: number, min: number, max: number, minExclusive = false): number {
  const aboveMin = minExclusive ? value > min : value >= min;
  if (!Number.isFinite(value) || !aboveMin || value > max) throw outOfRange(field, `${minExclusive ? '>' : '>='} ${min} and <= ${max}`, value);
  return value;
}

function checkInteger(field: string, value: number, min: number, max: number): number {
  if (!Number.isInteger(value) || value < min || value > max) throw outOfRange(field, `an integer >= ${min} and <= ${max}`, value);
  return value;
}

function validateSeed(given: string | number | undefined): number | null {
  if (given === undefined) return null;
  const text = String(given);
  if (!/^\d+$/.test(text) || BigInt(text) > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw outOfRange('sampling.seed', `an integer >= 0 and <= ${Number.MAX_SAFE_INTEGER} (2^53 - 1)`, text);
  }
  return Number(text);
}

function validateSampling(msg: SamplingParametersMsg | null, limits: RequestLimits): SamplingParams {
  const s: Partial<SamplingParametersMsg> = msg ?? {};
  const d = DEFAULT_SAMPLING;
  return {
    temperature: checkNumber('sampling.temperature', s.temperature ?? d.temperature, 0, 100),
    topK: checkInteger('sampling.top_k', s.top_k ?? d.topK, 0, limits.vocabSize),
    topP: checkNumber('sampling.top_p', s.top_p ?? d.topP, 0, 1, true),
    minP: checkNumber('sampling.min_p', s.min_p ?? d.minP, 0, 1),
    seed: validateSeed(s.seed),
    repetitionPenalty: checkNumber('sampling.repetition_penalty', s.repetition_penalty ?? d.repetitionPenalty, 0, 10, true),
    presencePenalty: checkNumber('sampling.presence_penalty', s.presence_penalty ?? d.presencePenalty, -2, 2),
    frequencyPenalty: checkNumber('sampling.frequency_penalty', s.frequency_penalty ?? d.frequencyPenalty, -2, 2),
  };
}

function validateStopping(msg: StoppingCriteriaMsg | null, limits: RequestLimits, promptTokens: number): StoppingParams {
  const s: Partial<StoppingCriteriaMsg> = msg ?? {};
  const room = limits.maxContextTokens - promptTokens;
  if (room < 1) {
    throw new TesseraError(
      'PROMPT_TOO_LONG',
      `prompt must leave room for 1 new token in the model's context of ${limits.maxContextTokens} tokens. Given: ${promptTokens} prompt tokens`,
    );
  }
  let maxNewTokens: number;
  if (s.max_new_tokens === undefined) {
    maxNewTokens = Math.min(limits.defaultMaxNewTokens, limits.maxNewTokens, room);
  } else {
    maxNewTokens = checkInteger('stopping.max_new_tokens', s.max_new_tokens, 1, limits.maxNewTokens);
    if (maxNewTokens > room) {
      throw new TesseraError(
        'PROMPT_TOO_LONG',
        `\`stopping.max_new_tokens\` must be <= ${room} (context ${limits.maxContextTokens} - prompt ${promptTokens} tokens). Given: ${maxNewTokens}`,
      );
    }
  }
  const stopSequences = s.stop_sequences ?? [];
  if (stopSequences.length > limits.maxStopSequences) {
    throw outOfRange('stopping.stop_sequences', `at most ${limits.maxStopSequences} entries`, stopSequences.length);
  }
  stopSequences.forEach((seq, i) => {
    // Length in UTF-16 code units, as the engine measures it.
    const units = seq.length;
    if (units === 0 || units > limits.maxStopSequenceLength) {
      throw outOfRange(`stopping.stop_sequences[${i}]`, `1 to ${limits.maxStopSequenceLength} UTF-16 code units long`, units > 32 ? `${seq.slice(0, 32)}... (${units} code units)` : seq);
    }
  });
  const stopTokenIds = s.stop_token_ids ?? [];
  if (stopTokenIds.length > limits.maxStopTokenIds) {
    throw outOfRange('stopping.stop_token_ids', `at most ${limits.maxStopTokenIds} entries`, stopTokenIds.length);
  }
  checkTokenIds('stopping.stop_token_ids', stopTokenIds, limits.vocabSize);
  return { maxNewTokens, stopSequences: [...stopSequences], stopTokenIds: [...stopTokenIds], ignoreEos: s.ignore_eos ?? false };
}
