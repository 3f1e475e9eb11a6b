/**
 * One generation request end to end, for either face (gRPC or OpenAI-compatible HTTP): authenticate, validate into a
 * ValidGenerateRequest, admit through the shared RequestGate, submit to the engine, cancel on client disconnect, and
 * record telemetry. Both faces build a GenerateRequestMsg and call `runGeneration`, so neither can skip a limit.
 */
import { randomUUID } from 'node:crypto';
import type { Tracer } from '@opentelemetry/api';
import { TesseraError } from '../errors.ts';
import type { GenerationEvent, ValidGenerateRequest } from '../engine/request.ts';
import type { Logger } from '../telemetry/logger.ts';
import type { TesseraInstruments } from '../telemetry/metrics.ts';
import { parentContextOf } from '../telemetry/tracing.ts';
import type { Authenticator } from './auth.ts';
import type { ServingBackend } from './backend.ts';
import { engineDeadlineMs } from './call-context.ts';
import { RepliedError } from './handler.ts';
import type { GenerateRequest__Output as GenerateRequestMsg } from '../gen/tessera/v1/GenerateRequest.ts';
import type { RequestGate } from './request-gate.ts';
import type { RequestLimits } from './request-limits.ts';
import { createRequestTelemetry, type GenAiOperation } from './request-telemetry.ts';
import { toStatusReply } from './status.ts';
import { validateGenerateRequest } from './validate.ts';

export interface GenerationDeps {
  backend: ServingBackend;
  limits: RequestLimits;
  auth: Authenticator | null;
  gate: RequestGate;
  logger: Logger;
  metrics: TesseraInstruments | null;
  tracer: Tracer | null;
}

/** What a face knows about the call, in face-neutral terms. */
export interface CallOrigin {
  /** The `authorization` header or metadata value. */
  authorization: string | undefined;
  /** The `x-tessera-adapter` header ('' when absent). */
  adapterHeader: string;
  /** The call's deadline as epoch milliseconds, or null. */
  deadlineEpochMs: number | null;
  /** Aborted when the client goes away (gRPC cancel, HTTP connection closed). */
  clientGone: AbortSignal;
  /** W3C trace context sent by the caller (`traceparent`, `tracestate`). */
  traceparent?: string;
  tracestate?: string;
}

export interface GenerationInfo {
  /** e.g. 'tessera.v1.Generation/GenerateStream' or 'POST /v1/chat/completions' (logs). */
  method: string;
  operation: GenAiOperation;
  /** Face-specific span attributes (rpc.* or http.*). */
  spanAttributes?: Record<string, string>;
}

export type FinishEvent = Extract<GenerationEvent, { type: 'finish' }>;
export type TokensEvent = Extract<GenerationEvent, { type: 'tokens' }>;

/** Error for a request that ended without finishing normally. */
function finishError(ev: FinishEvent, signal: AbortSignal): unknown {
  if (ev.reason === 'cancelled') return signal.aborted ? signal.reason : (ev.error ?? new TesseraError('CANCELLED', 'request cancelled'));
  if (ev.reason === 'deadline') return new TesseraError('DEADLINE_EXCEEDED', 'request deadline passed before generation finished');
  return ev.error ?? new TesseraError('INTERNAL', 'generation failed without an error');
}

/** True when the tenant sees an adapter registered under this id (so its id may become a metric label). */
async function isRegisteredAdapter(backend: ServingBackend, adapterId: string, tenantId: string | null): Promise<boolean> {
  if (backend.adapters === null) return false;
  return backend.adapters.get({ adapterId, tenantId }).then(
    () => true,
    () => false,
  );
}

/**
 * Runs one request. `onTokens` is awaited for each batch of tokens (backpressure). Failures are thrown as RepliedError,
 * already converted to a status, logged and counted once in `tessera_errors_total`.
 */
export async function runGeneration(
  deps: GenerationDeps,
  origin: CallOrigin,
  msg: GenerateRequestMsg,
  info: GenerationInfo,
  onTokens: (ev: TokensEvent, req: ValidGenerateRequest, signal: AbortSignal) => Promise<void> | void,
): Promise<{ req: ValidGenerateRequest; finish: FinishEvent }> {
  const { backend, gate } = deps;
  const fallbackId = randomUUID();
  let requestId: string = fallbackId;
  const tele = createRequestTelemetry({
    method: info.method,
    operation: info.operation,
    modelId: backend.modelInfo.modelId,
    metrics: deps.metrics,
    tracer: deps.tracer,
    logger: deps.logger,
    parent: parentContextOf(origin.traceparent, origin.tracestate),
    spanAttributes: info.spanAttributes,
  });
  const controller = new AbortController();
  const onGone = (): void => controller.abort(new TesseraError('CANCELLED', 'client cancelled the call'));
  origin.clientGone.addEventListener('abort', onGone, { once: true });
  let ticket: { release(): void } | null = null;
  try {
    const tenantId = deps.auth === null ? null : deps.auth.authenticate(origin.authorization);
    const req = await validateGenerateRequest(msg, {
      limits: deps.limits,
      encoder: backend.encoder,
      tenantId,
      deadlineMs: engineDeadlineMs(origin.deadlineEpochMs ?? Infinity, backend.nowMs()),
      newRequestId: () => fallbackId,
      adapterHeader: origin.adapterHeader,
    });
    requestId = req.requestId;
    ticket = gate.admit(controller);
    if (origin.clientGone.aborted) onGone();
    const labelAdapter = req.adapterId === null ? '' : (await isRegisteredAdapter(backend, req.adapterId, tenantId)) ? req.adapterId : null;
    tele.started(req, labelAdapter);
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
    origin.clientGone.removeEventListener('abort', onGone);
  }
}
