/**
 * Errors of the OpenAI-compatible HTTP face. The HTTP status comes from the one error table (ErrorCode -> gRPC status
 * in ../status.ts) through a fixed gRPC -> HTTP map, so both faces answer every ErrorCode alike; the body is
 * OpenAI's error object, with the Tessera ErrorCode as `code` (and in the `tessera-error-code` header).
 */
import { status as GrpcStatus } from '@grpc/grpc-js';
import type { ErrorCode } from '../../errors.ts';
import { STATUS_BY_ERROR_CODE, type StatusReply } from '../status.ts';

/** gRPC status -> HTTP status (the usual mapping; CANCELLED is nginx's 499, the client is gone anyway). */
export const HTTP_STATUS_BY_GRPC_STATUS: Readonly<Partial<Record<GrpcStatus, number>>> = Object.freeze({
  [GrpcStatus.INVALID_ARGUMENT]: 400,
  [GrpcStatus.FAILED_PRECONDITION]: 400,
  [GrpcStatus.UNAUTHENTICATED]: 401,
  [GrpcStatus.PERMISSION_DENIED]: 403,
  [GrpcStatus.NOT_FOUND]: 404,
  [GrpcStatus.RESOURCE_EXHAUSTED]: 429,
  [GrpcStatus.CANCELLED]: 499,
  [GrpcStatus.INTERNAL]: 500,
  [GrpcStatus.UNIMPLEMENTED]: 501,
  [GrpcStatus.UNAVAILABLE]: 503,
  [GrpcStatus.DEADLINE_EXCEEDED]: 504,
});

export function httpStatusOfGrpc(code: GrpcStatus): number {
  return HTTP_STATUS_BY_GRPC_STATUS[code] ?? 500;
}

/** HTTP status of a domain error code, through the one table. */
export function httpStatusOf(errorCode: ErrorCode): number {
  return httpStatusOfGrpc(STATUS_BY_ERROR_CODE[errorCode]);
}

/** OpenAI's `error.type` for an HTTP status. */
export function openAiErrorType(httpStatus: number): string {
  switch (httpStatus) {
    case 400:
    case 413:
    case 415:
    case 405:
    case 408:
      return 'invalid_request_error';
    case 401:
      return 'authentication_error';
    case 403:
      return 'permission_error';
    case 404:
      return 'not_found_error';
    case 429:
      return 'rate_limit_error';
    default:
      return httpStatus >= 500 ? 'server_error' : 'invalid_request_error';
  }
}

export interface OpenAiErrorBody {
  error: { message: string; type: string; param: string | null; code: string | null };
}

/** An HTTP error reply: status, body, and the `tessera-error-code` header when it came from the table. */
export interface HttpErrorReply {
  status: number;
  body: OpenAiErrorBody;
  errorCode: ErrorCode | null;
}

/**
 * Proto field names in shared validation messages -> the OpenAI request's names, so a message names the field the
 * caller sent (`sampling.top_p` -> `top_p`, `stopping.stop_sequences[1]` -> `stop[1]`).
 */
const FIELD_RENAMES: ReadonlyArray<readonly [string, string]> = [
  ['sampling.temperature', 'temperature'],
  ['sampling.top_p', 'top_p'],
  ['sampling.top_k', 'top_k'],
  ['sampling.min_p', 'min_p'],
  ['sampling.seed', 'seed'],
  ['sampling.repetition_penalty', 'repetition_penalty'],
  ['sampling.presence_penalty', 'presence_penalty'],
  ['sampling.frequency_penalty', 'frequency_penalty'],
  ['stopping.max_new_tokens', 'max_tokens'],
  ['stopping.stop_sequences', 'stop'],
  ['stopping.stop_token_ids', 'stop_token_ids'],
  ['token_ids.ids', 'prompt'],
  ['chat.messages', 'messages'],
  ['text', 'prompt'],
  ['adapter_id', 'model'],
  ['request_id', 'x-request-id'],
];

/** Renames proto field names inside backticks; returns the message and the first field it names (OpenAI's `param`). */
export function toOpenAiFieldNames(message: string, logprobsField: string): { message: string; param: string | null } {
  let param: string | null = null;
  const renamed = message.replace(/`([A-Za-z_][\w.]*)((?:\[\d+\])*(?:\.[\w]+)*)`/g, (whole, name: string, rest: string) => {
    let out = name === 'top_n_logprobs' ? logprobsField : name;
    for (const [from, to] of FIELD_RENAMES) {
      if (name === from) {
        out = to;
        break;
      }
    }
    param ??= out + rest;
    return `\`${out}${rest}\``;
  });
  return { message: renamed, param };
}

/** The reply for a status already converted by the shared error path. */
export function httpErrorOf(reply: StatusReply, logprobsField = 'logprobs'): HttpErrorReply {
  const status = httpStatusOfGrpc(reply.code);
  const { message, param } = toOpenAiFieldNames(reply.details, logprobsField);
  return { status, errorCode: reply.errorCode, body: { error: { message, type: openAiErrorType(status), param, code: reply.errorCode } } };
}

/** A reply for a protocol-level failure that has no ErrorCode (404 route, 405, 413, 415). */
export function protocolError(status: number, message: string, code: string | null = null): HttpErrorReply {
  return { status, errorCode: null, body: { error: { message, type: openAiErrorType(status), param: null, code } } };
}
