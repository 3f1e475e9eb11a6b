/**
 * The OpenAI-compatible routes: POST /v1/completions, POST /v1/chat/completions (whole replies or server-sent events
 * ending in `data: [DONE]`), GET /v1/models and /v1/models/{id}. Generation goes through the shared runner
 * (../generation-run.ts): the same auth keys, validation, admission gate, engine and error table as gRPC.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { TesseraError } from '../../errors.ts';
import { parseAdapterId } from '../../adapters/adapter-id.ts';
import type { GeneratedToken } from '../../engine/request.ts';
import type { AdapterStatus } from '../backend.ts';
import { runGeneration, type GenerationDeps } from '../generation-run.ts';
import { RepliedError } from '../handler.ts';
import { grpcStatusName, REQUEST_ID_TRAILER, toStatusReply, type StatusReply } from '../status.ts';
import { httpErrorOf } from './http-errors.ts';
import { HttpProtocolError, readJsonBody, sendError, sendJson, SSE_HEADERS, writeEvent } from './http-io.ts';
import { parseChatRequest, parseCompletionRequest, type OpenAiRequest } from './openai-request.ts';
import { completeReply, createChunker, replyId, usageOf, type ReplyContext } from './openai-response.ts';

export interface OpenAiRoutesDeps extends GenerationDeps {
  /** Largest request body, bytes. */
  maxBodyBytes: number;
  /** A streaming reader stalled this long is disconnected. */
  stallTimeoutMs: number;
  /** Unix seconds the server started (`created` of the model cards). */
  startedAtS: number;
}

function header(req: IncomingMessage, name: string): string | undefined {
  const v = req.headers[name];
  return Array.isArray(v) ? v[0] : v;
}

/**
 * `model` -> adapter id: the base model's id ('' = the base), or that id without its `@version` suffix (easier to type;
 * adapter ids cannot hold '@', and the base wins over an adapter of the same name); any other valid id names an adapter.
 */
function adapterIdForModel(model: string, baseModelId: string): string {
  if (model === baseModelId || model === baseModelId.split('@')[0]) return '';
  try {
    return parseAdapterId(model, { field: 'model' });
  } catch {
    throw new TesseraError('MODEL_NOT_FOUND', `model ${JSON.stringify(model.slice(0, 128))} is not served here; GET /v1/models lists the models`);
  }
}

function clientGoneSignal(res: ServerResponse): AbortSignal {
  const gone = new AbortController();
  res.once('close', () => {
    if (!res.writableFinished) gone.abort();
  });
  return gone.signal;
}

/** Runs a generation route; every error goes out as OpenAI error JSON (or an SSE error event once streaming began). */
export async function handleGeneration(deps: OpenAiRoutesDeps, endpoint: 'completions' | 'chat', req: IncomingMessage, res: ServerResponse): Promise<void> {
  const clientGone = clientGoneSignal(res);
  const created = Math.floor(Date.now() / 1000);
  let parsed: OpenAiRequest | null = null;
  let streaming = false;
  try {
    const body = await readJsonBody(req, deps.maxBodyBytes);
    parsed = endpoint === 'chat' ? parseChatRequest(body) : parseCompletionRequest(body);
    parsed.msg.adapter_id = adapterIdForModel(parsed.model, deps.backend.modelInfo.modelId);
    const requestIdHeader = header(req, 'x-request-id');
    if (requestIdHeader !== undefined) parsed.msg.request_id = requestIdHeader;
  } catch (err) {
    replyWithError(deps, res, err, parsed?.logprobsField);
    return;
  }
  const p = parsed;
  const tokenText = deps.backend.tokenText ?? ((id: number) => `token_id:${id}`);
  let ctx: ReplyContext | null = null;
  let chunker: ReturnType<typeof createChunker> | null = null;
  const generated: GeneratedToken[] = [];
  const begin = (requestId: string): ReplyContext => {
    ctx ??= { endpoint, id: replyId(endpoint, requestId), created, model: p.model, logprobs: p.logprobs, tokenText };
    return ctx;
  };
  const startStream = (requestId: string): ReturnType<typeof createChunker> => {
    if (chunker === null) {
      chunker = createChunker(begin(requestId), p.includeUsage);
      res.writeHead(200, { ...SSE_HEADERS, 'x-request-id': requestId });
      streaming = true;
    }
    return chunker;
  };
  try {
    const { req: valid, finish } = await runGeneration(
      deps,
      {
        authorization: header(req, 'authorization'),
        adapterHeader: header(req, 'x-tessera-adapter') ?? '',
        deadlineEpochMs: null,
        clientGone,
        traceparent: header(req, 'traceparent'),
        tracestate: header(req, 'tracestate'),
      },
      p.msg,
      {
        method: `POST /v1/${endpoint === 'chat' ? 'chat/completions' : 'completions'}`,
        operation: endpoint === 'chat' ? 'chat' : 'text_completion',
        spanAttributes: { 'http.request.method': 'POST', 'http.route': endpoint === 'chat' ? '/v1/chat/completions' : '/v1/completions' },
      },
      async (ev, r, signal) => {
        if (!p.stream) {
          generated.push(...ev.tokens);
          return;
        }
        // Headers go out with the first tokens, so a request refused before any token still gets its HTTP status.
        const c = startStream(r.requestId);
        if (ev.text === '' && !p.logprobs) return;
        await writeEvent(res, JSON.stringify(c.tokens(ev.text, ev.tokens)), signal, deps.stallTimeoutMs);
      },
    );
    const usage = usageOf(finish.usage);
    if (!p.stream) {
      sendJson(res, 200, completeReply(begin(valid.requestId), finish.text, generated, finish.reason, usage), { 'x-request-id': valid.requestId });
      return;
    }
    const c = startStream(valid.requestId);
    res.write(`data: ${JSON.stringify(c.finish(finish.reason))}\n\n`);
    if (p.includeUsage) res.write(`data: ${JSON.stringify(c.usage(usage))}\n\n`);
    res.end('data: [DONE]\n\n');
  } catch (err) {
    if (streaming) {
      // The status line is gone: the error travels as an event (the openai clients raise it), then the stream ends.
      const reply = err instanceof RepliedError ? httpErrorOf(err.reply, p.logprobsField) : null;
      if (reply && !res.destroyed) res.end(`data: ${JSON.stringify(reply.body)}\n\n`);
      else res.destroy();
      return;
    }
    replyWithError(deps, res, err, p.logprobsField);
  }
}

/**
 * Sends an error. RepliedError: converted and counted by the runner; HttpProtocolError: outside the table (not
 * counted, like grpc-js's own statuses); anything else: converted through the table and counted here, once.
 */
export function replyWithError(deps: Pick<GenerationDeps, 'logger' | 'metrics'>, res: ServerResponse, err: unknown, logprobsField?: string): void {
  if (err instanceof HttpProtocolError) {
    sendError(res, err.reply, err.bodyUnread ? { connection: 'close' } : {});
    return;
  }
  let reply: StatusReply;
  if (err instanceof RepliedError) reply = err.reply;
  else {
    reply = toStatusReply(err, { logger: deps.logger });
    deps.metrics?.errors.add(1, { code: grpcStatusName(reply.code), error_code: reply.errorCode });
  }
  const requestId = reply.metadata.get(REQUEST_ID_TRAILER)[0];
  sendError(res, httpErrorOf(reply, logprobsField), typeof requestId === 'string' ? { 'tessera-request-id': requestId, 'x-request-id': requestId } : {});
}

function modelCard(id: string, created: number, extra: Record<string, unknown>): Record<string, unknown> {
  return { id, object: 'model', created, owned_by: 'tessera', ...extra };
}

/** GET /v1/models (and /v1/models/{id}): the base model and every adapter the caller's tenant may use. */
export async function handleModels(deps: OpenAiRoutesDeps, req: IncomingMessage, res: ServerResponse, id: string | null): Promise<void> {
  try {
    deps.gate.checkOpen();
    const tenantId = deps.auth === null ? null : deps.auth.authenticate(header(req, 'authorization'));
    const m = deps.backend.modelInfo;
    const base = modelCard(m.modelId, deps.startedAtS, {
      root: m.modelId,
      parent: null,
      max_model_len: m.maxContextTokens,
      tessera: {
        quantization: m.quantization,
        vocab_size: m.vocabSize,
        max_prompt_tokens: deps.limits.maxPromptTokens,
        max_new_tokens: deps.limits.maxNewTokens,
        max_top_logprobs: deps.limits.maxTopNLogprobs,
        has_chat_template: deps.backend.encoder?.encodeChat != null,
      },
    });
    const adapters: AdapterStatus[] = deps.backend.adapters ? await deps.backend.adapters.list({ tenantId }) : [];
    const cards = [
      base,
      ...adapters
        .sort((a, b) => (a.adapterId < b.adapterId ? -1 : a.adapterId > b.adapterId ? 1 : 0))
        .map((a) => modelCard(a.adapterId, deps.startedAtS, { owned_by: a.tenantId ?? 'tessera', root: m.modelId, parent: m.modelId, max_model_len: m.maxContextTokens })),
    ];
    if (id === null) {
      sendJson(res, 200, { object: 'list', data: cards });
      return;
    }
    const card = cards.find((c) => c.id === id);
    if (!card) throw new TesseraError('MODEL_NOT_FOUND', `model ${JSON.stringify(id.slice(0, 128))} is not served here; GET /v1/models lists the models`);
    sendJson(res, 200, card);
  } catch (err) {
    replyWithError(deps, res, err);
  }
}
