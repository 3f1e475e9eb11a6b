/** tessera.v1.Generation handlers: Generate, GenerateStream, Tokenize, GetModelInfo. */
import { randomUUID } from 'node:crypto';
import { once } from 'node:events';
import type * as grpc from '@grpc/grpc-js';
import type { Tracer } from '@opentelemetry/api';
import { TesseraError } from '../errors.ts';
import type { GeneratedToken, GenerationEvent, ValidGenerateRequest } from '../engine/request.ts';
import type { Logger } from '../telemetry/logger.ts';
import type { TesseraInstruments } from '../telemetry/metrics.ts';
import type { Authenticator } from './auth.ts';
import type { ServingBackend } from './backend.ts';
import { engineDeadlineMs, adapterHeaderOf, tenantOf } from './call-context.ts';
import { RepliedError, serverStreamHandler, unaryHandler } from './handler.ts';
import type { GenerateRequest__Output as GenerateRequestMsg } from '../gen/tessera/v1/GenerateRequest.ts';
import type { GenerateResponse as GenerateResponseMsg } from '../gen/tessera/v1/GenerateResponse.ts';
import type { GetModelInfoResponse as GetModelInfoResponseMsg } from '../gen/tessera/v1/GetModelInfoResponse.ts';
import type { TokenizeRequest__Output as TokenizeRequestMsg } from '../gen/tessera/v1/TokenizeRequest.ts';
import type { TokenizeResponse as TokenizeResponseMsg } from '../gen/tessera/v1/TokenizeResponse.ts';
import type { RequestGate } from './request-gate.ts';
import type { RequestLimits } from './request-limits.ts';
import { createRequestTelemetry } from './request-telemetry.ts';
import { toStatusReply } from './status.ts';
import { finishReasonToProto, logprobsToProto } from './to-proto.ts';
import { encodeChatMessages, encodeText, validateGenerateRequest } from './validate.ts';

export interface GenerationServiceDeps {
  backend: ServingBackend;
  limits: RequestLimits;
  auth: Authenticator | null;
  gate: RequestGate;
  logger: Logger;
  metrics: TesseraInstruments | null;
  tracer: Tracer | null;
}

type FinishEvent = Extract<GenerationEvent, { type: 'finish' }>;
type TokensEvent = Extract<GenerationEvent, { type: 'tokens' }>;

interface GenerationCall {
  metadata: grpc.Metadata;
  cancelled: boolean;
  getDeadline(): grpc.Deadline;
  on(event: 'cancelled', listener: () => void): unknown;
  removeListener(event: 'cancelled', listener: () => void): unknown;
}

/** Error for a request that ended without finishing normally. */
function finishError(ev: FinishEvent, signal: AbortSignal): unknown {
  if (ev.reason === 'cancelled') return signal.aborted ? signal.reason : (ev.error ?? new TesseraError('CANCELLED', 'request cancelled'));
  if (ev.reason === 'deadline') return new TesseraError('DEADLINE_EXCEEDED', 'request deadline passed before generation finished');
  return ev.error ?? new TesseraError('INTERNAL', 'generation failed without an error');
}

/**
 * Runs one generation request end to end: auth, validation, admission, submit, cancellation, telemetry.
 * `onTokens` is awaited for each batch of tokens (backpressure). Throws RepliedError.
 */
async function runGeneration(
  deps: GenerationServiceDeps,
  call: GenerationCall,
  msg: GenerateRequestMsg,
  method: string,
  onTokens: (ev: TokensEvent, req: ValidGenerateRequest, signal: AbortSignal) => Promise<void> | void,
): Promise<{ req: ValidGenerateRequest; finish: FinishEvent }> {
  const { backend, gate } = deps;
  const fallbackId = randomUUID();
  let requestId: string = fallbackId;
  const tele = createRequestTelemetry({ method, modelId: backend.modelInfo.modelId, metrics: deps.metrics, tracer: deps.tracer, logger: deps.logger });
  const controller = new AbortController();
  const onCancelled = (): void => controller.abort(new TesseraError('CANCELLED', 'client cancelled the call'));
  call.on('cancelled', onCancelled);
  let ticket: { release(): void } | null = null;
  try {
    const tenantId = tenantOf(call.metadata, deps.auth);
    const req = await validateGenerateRequest(msg, {
      limits: deps.limits,
      encoder: backend.encoder,
      tenantId,
      deadlineMs: engineDeadlineMs(call.getDeadline(), backend.nowMs()),
      newRequestId: () => fallbackId,
      adapterHeader: adapterHeaderOf(call.metadata),
    });
    requestId = req.requestId;
    ticket = gate.admit(controller);
    if (call.cancelled) onCancelled();
    tele.started({ requestId, adapterId: req.adapterId, tenantId, promptTokens: req.promptTokenIds.length });
    for await (const ev of backend.submit(req, { signal: controller.signal })) {
      if (ev.type === 'tokens') {
        tele.tokens(ev.tokens.length);
        await onTokens(ev, req, controller.signal);
        continue;
      }
      if (ev.reason === 'cancelled' || ev.reason === 'deadline' || ev.reason === 'error') throw finishError(ev, controller.signal);
      tele.finished(ev.reason, ev.usage);
      return { req, finish: ev };
    }
    throw new TesseraError('INTERNAL', 'generation ended without a finish event');
  } catch (err) {
    const reply = toStatusReply(controller.signal.aborted && !(err instanceof TesseraError) ? controller.signal.reason : err, { requestId, logger: deps.logger });
    tele.failed(reply);
    throw new RepliedError(reply);
  } finally {
    ticket?.release();
    call.removeListener('cancelled', onCancelled);
  }
}

function tokenIds(tokens: readonly GeneratedToken[]): number[] {
  return tokens.map((t) => t.tokenId);
}

export function createGenerationHandlers(deps: GenerationServiceDeps): grpc.UntypedServiceImplementation {
  const { backend, limits } = deps;
  const h = { logger: deps.logger, metrics: deps.metrics };

  const Generate = unaryHandler<GenerateRequestMsg, GenerateResponseMsg>(h, async (call) => {
    const generated: GeneratedToken[] = [];
    const { req, finish } = await runGeneration(deps, call, call.request, 'tessera.v1.Generation/Generate', (ev) => {
      generated.push(...ev.tokens);
    });
    return {
      request_id: req.requestId,
      token_ids: tokenIds(generated),
      text: finish.text,
      finish_reason: finishReasonToProto(finish.reason),
      usage: { prompt_tokens: finish.usage.promptTokens, generated_tokens: finish.usage.generatedTokens },
      logprobs: logprobsToProto(generated),
    };
  });

  const GenerateStream = serverStreamHandler<GenerateRequestMsg, GenerateResponseMsg>(h, async (call) => {
    const { req, finish } = await runGeneration(deps, call, call.request, 'tessera.v1.Generation/GenerateStream', async (ev, r, signal) => {
      const message: GenerateResponseMsg = {
        request_id: r.requestId,
        token_ids: tokenIds(ev.tokens),
        text: ev.text,
        finish_reason: 'FINISH_REASON_UNSPECIFIED',
        usage: null,
        logprobs: logprobsToProto(ev.tokens),
      };
      // Backpressure: a slow reader pauses this request instead of growing a buffer without bound.
      if (!call.write(message)) await once(call, 'drain', { signal });
    });
    call.write({
      request_id: req.requestId,
      token_ids: [],
      text: '',
      finish_reason: finishReasonToProto(finish.reason),
      usage: { prompt_tokens: finish.usage.promptTokens, generated_tokens: finish.usage.generatedTokens },
      logprobs: [],
    } satisfies GenerateResponseMsg);
  });

  const Tokenize = unaryHandler<TokenizeRequestMsg, TokenizeResponseMsg>(h, async (call) => {
    deps.gate.checkOpen();
    tenantOf(call.metadata, deps.auth);
    if (backend.encoder === null) throw new TesseraError('UNIMPLEMENTED', '`Tokenize` needs a tokenizer and this server has none');
    const msg = call.request;
    const parseSpecialTokens = msg.parse_special_tokens ?? false;
    if (msg.input === 'text') return { token_ids: await encodeText(msg.text ?? '', backend.encoder, 'text', limits, parseSpecialTokens) };
    if (msg.input === 'chat') return { token_ids: await encodeChatMessages(msg.chat ?? null, 'chat', limits, backend.encoder, parseSpecialTokens) };
    throw new TesseraError('INVALID_ARGUMENT', '`input` is required: set `text` or `chat`');
  });

  const GetModelInfo = unaryHandler<object, GetModelInfoResponseMsg>(h, async (call) => {
    tenantOf(call.metadata, deps.auth);
    const m = backend.modelInfo;
    return {
      model_id: m.modelId,
      model_type: m.modelType,
      quantization: m.quantization,
      vocab_size: m.vocabSize,
      max_context_tokens: m.maxContextTokens,
      max_prompt_tokens: limits.maxPromptTokens,
      max_new_tokens: limits.maxNewTokens,
      default_max_new_tokens: limits.defaultMaxNewTokens,
      max_top_n_logprobs: limits.maxTopNLogprobs,
      max_stop_sequences: limits.maxStopSequences,
      max_stop_sequence_length: limits.maxStopSequenceLength,
      max_request_id_length: limits.maxRequestIdLength,
      eos_token_ids: [...m.eosTokenIds],
      has_chat_template: backend.encoder?.encodeChat != null,
      max_adapter_rank: m.maxAdapterRank,
    };
  });

  return { Generate, GenerateStream, Tokenize, GetModelInfo } as grpc.UntypedServiceImplementation;
}
