/**
 * Engine results -> OpenAI Completions and Chat Completions replies: whole objects, stream chunks, usage, logprobs in
 * each endpoint's format. Token strings come from the model's tokenizer (`tokenText`); without one a token reads
 * `token_id:N`.
 */
import type { FinishReason, GeneratedToken } from '../../engine/request.ts';
import type { OpenAiEndpoint } from './openai-request.ts';

export type TokenText = (tokenId: number) => string;

export interface ReplyContext {
  endpoint: OpenAiEndpoint;
  /** `cmpl-<request id>` or `chatcmpl-<request id>`. */
  id: string;
  /** Unix seconds when the request arrived. */
  created: number;
  model: string;
  logprobs: boolean;
  tokenText: TokenText;
}

export interface OpenAiUsage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
}

export function replyId(endpoint: OpenAiEndpoint, requestId: string): string {
  return `${endpoint === 'chat' ? 'chatcmpl' : 'cmpl'}-${requestId}`;
}

/** OpenAI's finish reasons: end-of-sequence and stop strings/tokens are both 'stop'. */
export function openAiFinishReason(reason: FinishReason): 'stop' | 'length' {
  return reason === 'length' ? 'length' : 'stop';
}

export function usageOf(usage: { promptTokens: number; generatedTokens: number }): OpenAiUsage {
  return { prompt_tokens: usage.promptTokens, completion_tokens: usage.generatedTokens, total_tokens: usage.promptTokens + usage.generatedTokens };
}

/** Completions logprobs: parallel arrays, alternatives as token -> logprob maps, offsets into the completion text. */
function completionLogprobs(tokens: readonly GeneratedToken[], tokenText: TokenText, startOffset: number) {
  const strings = tokens.map((t) => tokenText(t.tokenId));
  let offset = startOffset;
  const textOffset = strings.map((s) => {
    const at = offset;
    offset += s.length;
    return at;
  });
  return {
    tokens: strings,
    token_logprobs: tokens.map((t) => t.logprob),
    top_logprobs: tokens.map((t) => {
      const top: Record<string, number> = {};
      // Two ids can decode to the same string; the map keeps the likelier one.
      for (const alt of t.top) {
        const key = tokenText(alt.tokenId);
        if (!(key in top) || top[key] < alt.logprob) top[key] = alt.logprob;
      }
      return top;
    }),
    text_offset: textOffset,
  };
}

function utf8Bytes(s: string): number[] {
  return [...Buffer.from(s, 'utf8')];
}

/** Chat logprobs: one entry per token with its UTF-8 bytes and alternatives. */
function chatLogprobs(tokens: readonly GeneratedToken[], tokenText: TokenText) {
  return {
    content: tokens.map((t) => {
      const token = tokenText(t.tokenId);
      return {
        token,
        logprob: t.logprob,
        bytes: utf8Bytes(token),
        top_logprobs: t.top.map((alt) => {
          const s = tokenText(alt.tokenId);
          return { token: s, logprob: alt.logprob, bytes: utf8Bytes(s) };
        }),
      };
    }),
    refusal: null,
  };
}

function logprobsOf(ctx: ReplyContext, tokens: readonly GeneratedToken[], textOffset: number): object | null {
  if (!ctx.logprobs) return null;
  return ctx.endpoint === 'chat' ? chatLogprobs(tokens, ctx.tokenText) : completionLogprobs(tokens, ctx.tokenText, textOffset);
}

/** The whole (non-streaming) reply. */
export function completeReply(ctx: ReplyContext, text: string, tokens: readonly GeneratedToken[], reason: FinishReason, usage: OpenAiUsage): object {
  const finish = openAiFinishReason(reason);
  const logprobs = logprobsOf(ctx, tokens, 0);
  const choice =
    ctx.endpoint === 'chat'
      ? { index: 0, message: { role: 'assistant', content: text, refusal: null }, logprobs, finish_reason: finish }
      : { index: 0, text, logprobs, finish_reason: finish };
  return { id: ctx.id, object: ctx.endpoint === 'chat' ? 'chat.completion' : 'text_completion', created: ctx.created, model: ctx.model, choices: [choice], usage };
}

/** Builds the chunks of one streamed reply (it remembers the text offset and whether the role was sent). */
export function createChunker(ctx: ReplyContext, includeUsage: boolean) {
  const object = ctx.endpoint === 'chat' ? 'chat.completion.chunk' : 'text_completion';
  let textOffset = 0;
  let roleSent = false;
  const chunk = (choices: object[], usage?: OpenAiUsage | null): object => ({
    id: ctx.id,
    object,
    created: ctx.created,
    model: ctx.model,
    choices,
    ...(includeUsage ? { usage: usage ?? null } : {}),
  });
  const delta = (text: string): object => {
    if (ctx.endpoint !== 'chat') return { text };
    const d = roleSent ? { content: text } : { role: 'assistant', content: text };
    roleSent = true;
    return d;
  };
  return {
    /** A chunk for a batch of tokens and their text delta. */
    tokens(text: string, tokens: readonly GeneratedToken[]): object {
      const logprobs = logprobsOf(ctx, tokens, textOffset);
      textOffset += text.length;
      const body = delta(text);
      return chunk([ctx.endpoint === 'chat' ? { index: 0, delta: body, logprobs, finish_reason: null } : { index: 0, ...body, logprobs, finish_reason: null }]);
    },
    /** The chunk that carries the finish reason (empty text). */
    finish(reason: FinishReason): object {
      const body = ctx.endpoint === 'chat' ? { index: 0, delta: roleSent ? {} : delta(''), logprobs: null, finish_reason: openAiFinishReason(reason) } : { index: 0, text: '', logprobs: null, finish_reason: openAiFinishReason(reason) };
      return chunk([body]);
    },
    /** With include_usage: the last chunk, no choices, the request's usage. */
    usage(usage: OpenAiUsage): object {
      return chunk([], usage);
    },
  };
}
