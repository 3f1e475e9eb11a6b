/** tessera.v1.Generation handlers: Generate, GenerateStream, Tokenize, GetModelInfo. */
import { once } from 'node:events';
import type * as grpc from '@grpc/grpc-js';
import { TesseraError } from '../errors.ts';
import type { GeneratedToken, ValidGenerateRequest } from '../engine/request.ts';
import type { GenerateRequest__Output as GenerateRequestMsg } from '../gen/tessera/v1/GenerateRequest.ts';
import type { GenerateResponse as GenerateResponseMsg } from '../gen/tessera/v1/GenerateResponse.ts';
import type { GetModelInfoResponse as GetModelInfoResponseMsg } from '../gen/tessera/v1/GetModelInfoResponse.ts';
import type { TokenizeRequest__Output as TokenizeRequestMsg } from '../gen/tessera/v1/TokenizeRequest.ts';
import type { TokenizeResponse as TokenizeResponseMsg } from '../gen/tessera/v1/TokenizeResponse.ts';
import { adapterHeaderOf, tenantOf } from './call-context.ts';
import { runGeneration, type CallOrigin, type FinishEvent, type GenerationDeps, type TokensEvent } from './generation-run.ts';
import { serverStreamHandler, unaryHandler } from './handler.ts';
import { finishReasonToProto, logprobsToProto } from './to-proto.ts';
import { encodeChatMessages, encodeText } from './validate.ts';

export type GenerationServiceDeps = GenerationDeps;

/** The gRPC call as the face-neutral runner sees it. */
function originOf(call: grpc.ServerUnaryCall<unknown, unknown> | grpc.ServerWritableStream<unknown, unknown>): CallOrigin & { detach(): void } {
  const gone = new AbortController();
  const onCancelled = (): void => gone.abort();
  if (call.cancelled) gone.abort();
  else call.on('cancelled', onCancelled);
  const first = (key: string): string | undefined => {
    const v = call.metadata.get(key);
    return v.length > 0 && typeof v[0] === 'string' ? v[0] : undefined;
  };
  const deadline = call.getDeadline();
  const deadlineEpochMs = deadline instanceof Date ? deadline.getTime() : deadline;
  return {
    authorization: first('authorization'),
    adapterHeader: adapterHeaderOf(call.metadata),
    deadlineEpochMs: Number.isFinite(deadlineEpochMs) ? deadlineEpochMs : null,
    clientGone: gone.signal,
    traceparent: first('traceparent'),
    tracestate: first('tracestate'),
    detach: () => call.removeListener('cancelled', onCancelled),
  };
}

/** Runs a gRPC generation call through the shared runner. */
async function runGrpcGeneration(
  deps: GenerationServiceDeps,
  call: grpc.ServerUnaryCall<GenerateRequestMsg, unknown> | grpc.ServerWritableStream<GenerateRequestMsg, unknown>,
  method: string,
  onTokens: (ev: TokensEvent, req: ValidGenerateRequest, signal: AbortSignal) => Promise<void> | void,
): Promise<{ req: ValidGenerateRequest; finish: FinishEvent }> {
  const origin = originOf(call);
  const operation = call.request.prompt === 'chat' ? 'chat' : 'text_completion';
  const [service, rpc] = method.split('/');
  try {
    return await runGeneration(deps, origin, call.request, { method, operation, spanAttributes: { 'rpc.system': 'grpc', 'rpc.service': service, 'rpc.method': rpc } }, onTokens);
  } finally {
    origin.detach();
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
    const { req, finish } = await runGrpcGeneration(deps, call, 'tessera.v1.Generation/Generate', (ev) => {
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
    const { req, finish } = await runGrpcGeneration(deps, call, 'tessera.v1.Generation/GenerateStream', async (ev, r, signal) => {
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
