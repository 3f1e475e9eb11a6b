/**
 * Telemetry of one generation request: GenAI latency histograms, token and error counters, a request span named and
 * attributed after the OpenTelemetry GenAI semantic conventions (`{gen_ai.operation.name} {gen_ai.request.model}`,
 * kind SERVER, child of the caller's W3C trace context) with `queue_and_prefill` and `decode` children, and one log
 * line at the end. A failed request is counted once in `tessera_errors_total`, here.
 */
import { status as GrpcStatus } from '@grpc/grpc-js';
import { context, SpanKind, SpanStatusCode, trace, type Attributes, type Context, type Span, type Tracer } from '@opentelemetry/api';
import type { FinishReason, ValidGenerateRequest } from '../engine/request.ts';
import type { Logger } from '../telemetry/logger.ts';
import type { TesseraInstruments } from '../telemetry/metrics.ts';
import { grpcStatusName, type StatusReply } from './status.ts';

/** `gen_ai.operation.name` values Tessera serves. */
export type GenAiOperation = 'chat' | 'text_completion';

/** `gen_ai.provider.name` of Tessera's spans (the conventions' well-known values name hosted services). */
export const GEN_AI_PROVIDER = 'tessera';

export interface RequestTelemetryOptions {
  /** e.g. 'tessera.v1.Generation/GenerateStream' or 'POST /v1/completions' (logs). */
  method: string;
  /** Default 'text_completion'. */
  operation?: GenAiOperation;
  modelId: string;
  metrics: TesseraInstruments | null;
  tracer: Tracer | null;
  logger: Logger;
  /** Parent of the request span (the caller's trace context); default the active context. */
  parent?: Context;
  /** Extra attributes of the request span (rpc.* for gRPC, http.* for HTTP). */
  spanAttributes?: Attributes;
  nowMs?: () => number;
}

export interface RequestTelemetry {
  /**
   * Once the request is validated and admitted. `adapterLabel`: the `adapter` label of tessera_adapter_requests_total
   * ('' = base model), or null when the id is not a registered adapter (made-up ids must not create series).
   */
  started(req: ValidGenerateRequest, adapterLabel: string | null): void;
  /** Each batch of generated tokens. */
  tokens(count: number): void;
  finished(reason: FinishReason, usage: { promptTokens: number; generatedTokens: number }): void;
  failed(reply: StatusReply): void;
}

/** GenAI request attributes of a validated request. */
function requestAttributes(req: ValidGenerateRequest): Attributes {
  const s = req.sampling;
  const attrs: Attributes = {
    'gen_ai.request.max_tokens': req.stopping.maxNewTokens,
    'gen_ai.request.temperature': s.temperature,
    'gen_ai.request.top_p': s.topP,
    'gen_ai.request.presence_penalty': s.presencePenalty,
    'gen_ai.request.frequency_penalty': s.frequencyPenalty,
    'gen_ai.response.id': req.requestId,
    'gen_ai.usage.input_tokens': req.promptTokenIds.length,
    'tessera.request_id': req.requestId,
    'tessera.adapter_id': req.adapterId ?? '',
  };
  if (s.topK > 0) attrs['gen_ai.request.top_k'] = s.topK;
  if (s.seed !== null) attrs['gen_ai.request.seed'] = s.seed;
  if (req.stopping.stopSequences.length > 0) attrs['gen_ai.request.stop_sequences'] = req.stopping.stopSequences;
  return attrs;
}

export function createRequestTelemetry(opts: RequestTelemetryOptions): RequestTelemetry {
  const now = opts.nowMs ?? (() => performance.now());
  const startMs = now();
  const operation = opts.operation ?? 'text_completion';
  // Metric attributes stay few and bounded; the span carries the rest.
  const attrs = { 'gen_ai.operation.name': operation, 'gen_ai.request.model': opts.modelId };
  const parent = opts.parent ?? context.active();
  const root: Span | null =
    opts.tracer?.startSpan(
      `${operation} ${opts.modelId}`,
      { kind: SpanKind.SERVER, attributes: { ...attrs, 'gen_ai.provider.name': GEN_AI_PROVIDER, 'gen_ai.response.model': opts.modelId, ...opts.spanAttributes } },
      parent,
    ) ?? null;
  const rootCtx = root ? trace.setSpan(parent, root) : null;
  let phase: Span | null = root && rootCtx ? opts.tracer!.startSpan('queue_and_prefill', {}, rootCtx) : null;
  let firstTokenMs: number | null = null;
  let generated = 0;
  let log: Logger = opts.logger;
  let done = false;

  function endSpans(error: string | null): void {
    phase?.end();
    phase = null;
    if (root) {
      if (error !== null) root.setStatus({ code: SpanStatusCode.ERROR, message: error });
      root.end();
    }
  }

  return {
    started(req, adapterLabel) {
      log = opts.logger.child({ requestId: req.requestId, adapterId: req.adapterId ?? '', tenant: req.tenantId ?? '' });
      root?.setAttributes(requestAttributes(req));
      opts.metrics?.tokens.add(req.promptTokenIds.length, { direction: 'input' });
      if (adapterLabel !== null) opts.metrics?.adapterRequests.add(1, { adapter: adapterLabel });
      log.debug({ promptTokens: req.promptTokenIds.length, method: opts.method }, 'request admitted');
    },
    tokens(count) {
      if (count === 0) return;
      if (firstTokenMs === null) {
        firstTokenMs = now();
        opts.metrics?.timeToFirstToken.record((firstTokenMs - startMs) / 1000, attrs);
        phase?.end();
        phase = root && rootCtx ? opts.tracer!.startSpan('decode', {}, rootCtx) : null;
      }
      generated += count;
      opts.metrics?.tokens.add(count, { direction: 'output' });
    },
    finished(reason, usage) {
      if (done) return;
      done = true;
      const endMs = now();
      opts.metrics?.requestDuration.record((endMs - startMs) / 1000, attrs);
      if (firstTokenMs !== null && generated > 1) {
        opts.metrics?.timePerOutputToken.record((endMs - firstTokenMs) / 1000 / (generated - 1), attrs);
      }
      root?.setAttributes({ 'gen_ai.usage.output_tokens': usage.generatedTokens, 'gen_ai.response.finish_reasons': [reason] });
      endSpans(null);
      log.info({ method: opts.method, finishReason: reason, ...usage, durationMs: Math.round(endMs - startMs) }, 'request finished');
    },
    failed(reply) {
      if (done) return;
      done = true;
      const status = grpcStatusName(reply.code);
      opts.metrics?.requestDuration.record((now() - startMs) / 1000, { ...attrs, 'error.type': status });
      opts.metrics?.errors.add(1, { code: status, error_code: reply.errorCode });
      root?.setAttribute('error.type', status);
      endSpans(`${status}: ${reply.details}`);
      // INTERNAL errors were logged with their stack by toStatusReply; client errors get one info line.
      if (reply.code !== GrpcStatus.INTERNAL) log.info({ method: opts.method, status, errorCode: reply.errorCode, details: reply.details }, 'request failed');
    },
  };
}
