/**
 * The one table from domain error codes (src/errors.ts) to gRPC status codes, and the conversion of any
 * thrown value into the status a client receives. Every error reply carries the domain code in the
 * trailer `tessera-error-code`. INTERNAL replies carry a generic message with the request id; the
 * original error (with its stack) is logged once, here.
 */
import { Metadata, status as GrpcStatus } from '@grpc/grpc-js';
import type { ErrorCode } from '../errors.ts';
import { isTesseraError } from '../errors.ts';

export const ERROR_CODE_TRAILER = 'tessera-error-code';
export const REQUEST_ID_TRAILER = 'tessera-request-id';

/** ErrorCode -> gRPC status. Keep docs/errors.md in step (status.test.ts checks both). */
export const STATUS_BY_ERROR_CODE: Readonly<Record<ErrorCode, GrpcStatus>> = Object.freeze({
  INVALID_ARGUMENT: GrpcStatus.INVALID_ARGUMENT,
  PROMPT_TOO_LONG: GrpcStatus.INVALID_ARGUMENT,
  MODEL_NOT_FOUND: GrpcStatus.NOT_FOUND,
  ADAPTER_NOT_FOUND: GrpcStatus.NOT_FOUND,
  ADAPTER_INCOMPATIBLE: GrpcStatus.FAILED_PRECONDITION,
  ADAPTER_INVALID: GrpcStatus.FAILED_PRECONDITION,
  ADAPTER_LOAD_FAILED: GrpcStatus.FAILED_PRECONDITION,
  ADAPTER_SOURCE_UNAVAILABLE: GrpcStatus.UNAVAILABLE,
  PERMISSION_DENIED: GrpcStatus.PERMISSION_DENIED,
  UNAUTHENTICATED: GrpcStatus.UNAUTHENTICATED,
  QUEUE_FULL: GrpcStatus.RESOURCE_EXHAUSTED,
  KV_CACHE_EXHAUSTED: GrpcStatus.RESOURCE_EXHAUSTED,
  DRAINING: GrpcStatus.UNAVAILABLE,
  WORKER_UNAVAILABLE: GrpcStatus.UNAVAILABLE,
  DEADLINE_EXCEEDED: GrpcStatus.DEADLINE_EXCEEDED,
  CANCELLED: GrpcStatus.CANCELLED,
  UNIMPLEMENTED: GrpcStatus.UNIMPLEMENTED,
  COMPEFT_INVALID: GrpcStatus.FAILED_PRECONDITION,
  DEVICE_UNAVAILABLE: GrpcStatus.UNAVAILABLE,
  // Server-side faults: the client gets a generic message, the log gets the details.
  CHECKPOINT_INVALID: GrpcStatus.INTERNAL,
  CONFIG_INVALID: GrpcStatus.INTERNAL,
  INTERNAL: GrpcStatus.INTERNAL,
});

/** Name of a gRPC status code, e.g. 'RESOURCE_EXHAUSTED' (for logs, metrics and docs). */
export function grpcStatusName(code: GrpcStatus): string {
  return GrpcStatus[code] ?? `UNKNOWN_${code}`;
}

/** What a handler sends back: accepted by grpc-js both as a unary callback error and a stream 'error'. */
export interface StatusReply {
  code: GrpcStatus;
  details: string;
  metadata: Metadata;
  /** Domain code that produced the reply. */
  errorCode: ErrorCode;
}

/** Minimal logger shape (pino's satisfies it). */
export interface ErrorLogger {
  error(obj: object, msg: string): void;
}

export interface ToStatusOptions {
  requestId?: string;
  /** Receives INTERNAL errors with their stack; nothing else is logged here. */
  logger?: ErrorLogger;
}

/** Domain code of any thrown value: TesseraError keeps its code, an AbortError is CANCELLED, the rest INTERNAL. */
export function errorCodeOf(err: unknown): ErrorCode {
  if (isTesseraError(err)) return err.code;
  if (err instanceof Error && err.name === 'AbortError') return 'CANCELLED';
  return 'INTERNAL';
}

/** Converts a thrown value into the status reply sent to the client. */
export function toStatusReply(err: unknown, opts: ToStatusOptions = {}): StatusReply {
  const errorCode = errorCodeOf(err);
  const code = STATUS_BY_ERROR_CODE[errorCode];
  const metadata = new Metadata();
  metadata.set(ERROR_CODE_TRAILER, errorCode);
  if (opts.requestId !== undefined && opts.requestId !== '') metadata.set(REQUEST_ID_TRAILER, opts.requestId);
  let details: string;
  if (code === GrpcStatus.INTERNAL) {
    const ref = opts.requestId ? ` (request id ${opts.requestId})` : '';
    details = `internal error${ref}; details are in the server log`;
    opts.logger?.error({ err, requestId: opts.requestId, errorCode }, 'internal error');
  } else {
    details = err instanceof Error ? err.message : String(err);
  }
  return { code, details, metadata, errorCode };
}
