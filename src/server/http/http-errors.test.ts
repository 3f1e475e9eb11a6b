import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { status as GrpcStatus } from '@grpc/grpc-js';
import { describe, expect, it } from 'vitest';
import { TesseraError, type ErrorCode } from '../../errors.ts';
import { STATUS_BY_ERROR_CODE, toStatusReply } from '../status.ts';
import { HTTP_STATUS_BY_GRPC_STATUS, httpErrorOf, httpStatusOf, openAiErrorType, toOpenAiFieldNames } from './http-errors.ts';

/** docs/errors.md rows: error code -> HTTP status column. */
function docsHttpColumn(): Map<string, number> {
  const md = readFileSync(fileURLToPath(new URL('../../../docs/errors.md', import.meta.url)), 'utf8');
  const rows = new Map<string, number>();
  for (const m of md.matchAll(/^\| `([A-Z_]+)` \| [A-Z_]+ \| (\d{3}) \|/gm)) rows.set(m[1], Number(m[2]));
  return rows;
}

describe('HTTP statuses from the one error table', () => {
  it('every gRPC status the table uses has an HTTP status, and docs/errors.md shows it row for row', () => {
    const codes = Object.keys(STATUS_BY_ERROR_CODE) as ErrorCode[];
    for (const code of codes) expect(HTTP_STATUS_BY_GRPC_STATUS[STATUS_BY_ERROR_CODE[code]], code).toBeDefined();
    const docs = docsHttpColumn();
    expect([...docs.keys()].sort()).toEqual([...codes].sort());
    for (const code of codes) expect(docs.get(code), code).toBe(httpStatusOf(code));
  });

  it('maps the statuses clients act on as OpenAI clients expect', () => {
    expect(httpStatusOf('UNAUTHENTICATED')).toBe(401);
    expect(httpStatusOf('PERMISSION_DENIED')).toBe(403);
    expect(httpStatusOf('MODEL_NOT_FOUND')).toBe(404);
    expect(httpStatusOf('ADAPTER_NOT_FOUND')).toBe(404);
    expect(httpStatusOf('QUEUE_FULL')).toBe(429);
    expect(httpStatusOf('DRAINING')).toBe(503);
    expect(httpStatusOf('INVALID_ARGUMENT')).toBe(400);
    expect(openAiErrorType(429)).toBe('rate_limit_error');
    expect(openAiErrorType(503)).toBe('server_error');
    expect(HTTP_STATUS_BY_GRPC_STATUS[GrpcStatus.INTERNAL]).toBe(500);
  });
});

describe('OpenAI field names in messages', () => {
  it('renames proto fields (with indexes and sub-fields) and reports the first as param', () => {
    expect(toOpenAiFieldNames('`sampling.top_p` must be > 0 and <= 1. Given: 0', 'logprobs')).toEqual({ message: '`top_p` must be > 0 and <= 1. Given: 0', param: 'top_p' });
    expect(toOpenAiFieldNames('`stopping.stop_sequences[2]` must be 1 to 128', 'logprobs').param).toBe('stop[2]');
    expect(toOpenAiFieldNames('`chat.messages[1].role` must be a non-empty role', 'logprobs').param).toBe('messages[1].role');
    expect(toOpenAiFieldNames('`top_n_logprobs` must be an integer', 'top_logprobs').param).toBe('top_logprobs');
    expect(toOpenAiFieldNames('no field here', 'logprobs')).toEqual({ message: 'no field here', param: null });
  });

  it('builds the error body from a status reply, INTERNAL details hidden as on gRPC', () => {
    const reply = httpErrorOf(toStatusReply(new TesseraError('PROMPT_TOO_LONG', '`stopping.max_new_tokens` must be <= 10. Given: 99')));
    expect(reply).toEqual({ status: 400, errorCode: 'PROMPT_TOO_LONG', body: { error: { message: '`max_tokens` must be <= 10. Given: 99', type: 'invalid_request_error', param: 'max_tokens', code: 'PROMPT_TOO_LONG' } } });
    const internal = httpErrorOf(toStatusReply(new Error('secret /srv/path'), { requestId: 'r9' }));
    expect(internal.status).toBe(500);
    expect(internal.body.error.message).not.toContain('secret');
    expect(internal.body.error.message).toContain('r9');
  });
});
