/**
 * Telemetry of one generation request: GenAI latency histograms, token and error counters, a request
 * span with `queue_and_prefill` and `decode` children, and one log line at the end.
 */
import { status as GrpcStatus } from '@grpc/grpc-js';
import { context, SpanStatusCode, trace, type Span, type Tracer } from '@opentelemetry/api';
import type { FinishReason } from '../engine/request.ts';
import type { Logger } from '../telemetry/logger.ts';
import type { TesseraInstruments } from '../telemetry/metrics.ts';
import { grpcStatusName, type StatusReply } from './status.ts';

export interface RequestTelemetryOptions {
  /** e.g. 'tessera.v1.Generation/GenerateStream'. */
  method: string;
  modelId: string;
  metrics: TesseraInstruments | null;
  tracer: Tracer | null;
  logger: Logger;
  nowMs?: () => number;
}

export interface RequestTelemetry {
  /** Once the request is validated. */
  started(req: { requestId: string; adapterId: string | null; tenantId: string | null; promptTokens: number }): void;
  /** Each batch of generated tokens. */
  tokens(count: number): void;
  finished(reason: FinishReason, usage: { promptTokens: number; generatedTokens: number }): void;
  failed(reply: StatusReply): void;
}

export function createRequestTelemetry(opts: RequestTelemetryOptions): RequestTelemetry {
  const now = opts.nowMs ?? (() => performance.now());
  const startMs = now();
  const attrs = { 'gen_ai.operation.name': 'text_completion', 'gen_ai.request.model': opts.modelId };
  const root: Span | null = opts.tracer?.startSpan(opts.method, { attributes: attrs }) ?? null;
  const rootCtx = root ? trace.setSpan(context.active(), root) : null;
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
    started(req) {
      log = opts.logger.child({ requestId: req.requestId, adapterId: req.adapterId ?? '', tenant: req.tenantId ?? '' });
      root?.setAttributes({ 'tessera.request_id': req.requestId, 'tessera.adapter_id': req.adapterId ?? '', 'gen_ai.usage.input_tokens': req.promptTokens });
      opts.metrics?.tokens.add(req.promptTokens, { direction: 'input' });
      opts.metrics?.adapterRequests.add(1, { adapter: req.adapterId ?? '' });
      log.debug({ promptTokens: req.promptTokens, method: opts.method }, 'request admitted');
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
      endSpans(`${status}: ${reply.details}`);
      // INTERNAL errors were logged with their stack by toStatusReply; client errors get one info line.
      if (reply.code !== GrpcStatus.INTERNAL) log.info({ method: opts.method, status, errorCode: reply.errorCode, details: reply.details }, 'request failed');
    },
  };
}
