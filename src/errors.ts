/**
 * Domain errors. Every failure that reaches a client is a TesseraError with one of these codes;
 * src/server/status.ts maps each code to exactly one gRPC status.
 */
export type ErrorCode =
  | 'INVALID_ARGUMENT'
  | 'PROMPT_TOO_LONG'
  | 'MODEL_NOT_FOUND'
  | 'ADAPTER_NOT_FOUND'
  | 'ADAPTER_INCOMPATIBLE'
  | 'ADAPTER_INVALID'
  | 'ADAPTER_LOAD_FAILED'
  | 'ADAPTER_SOURCE_UNAVAILABLE'
  | 'PERMISSION_DENIED'
  | 'UNAUTHENTICATED'
  | 'QUEUE_FULL'
  | 'KV_CACHE_EXHAUSTED'
  | 'DRAINING'
  | 'WORKER_UNAVAILABLE'
  | 'DEADLINE_EXCEEDED'
  | 'CANCELLED'
  | 'UNIMPLEMENTED'
  | 'CHECKPOINT_INVALID'
  | 'COMPEFT_INVALID'
  | 'CONFIG_INVALID'
  | 'DEVICE_UNAVAILABLE'
  | 'INTERNAL';

export class TesseraError extends Error {
  readonly code: ErrorCode;

  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'TesseraError';
    this.code = code;
  }
}

export function isTesseraError(err: unknown): err is TesseraError {
  return err instanceof TesseraError;
}

/** Message for a value outside its bounds: names the field, the bound and the value given. */
export function outOfRange(field: string, bound: string, given: unknown): TesseraError {
  return new TesseraError('INVALID_ARGUMENT', `\`${field}\` must be ${bound}. Given: ${JSON.stringify(given)}`);
}
