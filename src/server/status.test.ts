import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { status as GrpcStatus } from '@grpc/grpc-js';
import { describe, expect, it } from 'vitest';
import { TesseraError, type ErrorCode } from '../errors.ts';
import { ERROR_CODE_TRAILER, grpcStatusName, REQUEST_ID_TRAILER, STATUS_BY_ERROR_CODE, toStatusReply } from './status.ts';

/** The ErrorCode union members, read from the source so a new code cannot slip past this test. */
function errorCodesInSource(): string[] {
  const src = readFileSync(fileURLToPath(new URL('../errors.ts', import.meta.url)), 'utf8');
  const union = /export type ErrorCode =([^;]+);/.exec(src);
  expect(union).not.toBeNull();
  return [...union![1].matchAll(/'([A-Z_]+)'/g)].map((m) => m[1]);
}

/** Rows of the table in docs/errors.md: error code -> gRPC status name. */
function docsRows(): Map<string, string> {
  const md = readFileSync(fileURLToPath(new URL('../../docs/errors.md', import.meta.url)), 'utf8');
  const rows = new Map<string, string>();
  for (const m of md.matchAll(/^\| `([A-Z_]+)` \| ([A-Z_]+) \|/gm)) rows.set(m[1], m[2]);
  return rows;
}

describe('error -> status table', () => {
  const codes = errorCodesInSource();

  it('has exactly one row per ErrorCode', () => {
    expect(codes.length).toBeGreaterThan(10);
    expect(Object.keys(STATUS_BY_ERROR_CODE).sort()).toEqual([...codes].sort());
  });

  it('matches docs/errors.md row for row', () => {
    const rows = docsRows();
    expect([...rows.keys()].sort()).toEqual([...codes].sort());
    for (const code of codes) expect(rows.get(code), code).toBe(grpcStatusName(STATUS_BY_ERROR_CODE[code as ErrorCode]));
  });

  it('uses the statuses named by the style guide', () => {
    expect(STATUS_BY_ERROR_CODE.PROMPT_TOO_LONG).toBe(GrpcStatus.INVALID_ARGUMENT);
    expect(STATUS_BY_ERROR_CODE.ADAPTER_NOT_FOUND).toBe(GrpcStatus.NOT_FOUND);
    expect(STATUS_BY_ERROR_CODE.QUEUE_FULL).toBe(GrpcStatus.RESOURCE_EXHAUSTED);
    expect(STATUS_BY_ERROR_CODE.ADAPTER_INCOMPATIBLE).toBe(GrpcStatus.FAILED_PRECONDITION);
    expect(STATUS_BY_ERROR_CODE.DRAINING).toBe(GrpcStatus.UNAVAILABLE);
  });
});

describe('toStatusReply', () => {
  it('keeps client-error messages and sets the trailers', () => {
    const reply = toStatusReply(new TesseraError('QUEUE_FULL', '`queue` must hold at most 4 requests. Given: 5'), { requestId: 'r1' });
    expect(reply.code).toBe(GrpcStatus.RESOURCE_EXHAUSTED);
    expect(reply.details).toBe('`queue` must hold at most 4 requests. Given: 5');
    expect(reply.metadata.get(ERROR_CODE_TRAILER)).toEqual(['QUEUE_FULL']);
    expect(reply.metadata.get(REQUEST_ID_TRAILER)).toEqual(['r1']);
  });

  it('hides INTERNAL details from the client and logs them once with the stack', () => {
    const logged: { obj: object; msg: string }[] = [];
    const logger = { error: (obj: object, msg: string) => void logged.push({ obj, msg }) };
    const secret = new Error('ENOENT /srv/models/secret-path');
    const reply = toStatusReply(secret, { requestId: 'r2', logger });
    expect(reply.code).toBe(GrpcStatus.INTERNAL);
    expect(reply.errorCode).toBe('INTERNAL');
    expect(reply.details).toContain('r2');
    expect(reply.details).not.toContain('secret');
    expect(logged).toHaveLength(1);
    expect((logged[0].obj as { err: Error }).err.stack).toContain('ENOENT');
    // Server-side TesseraErrors mapped to INTERNAL are hidden too.
    expect(toStatusReply(new TesseraError('CHECKPOINT_INVALID', 'tensor x truncated'), { logger }).details).not.toContain('tensor');
    expect(logged).toHaveLength(2);
  });

  it('maps AbortError to CANCELLED and never logs client errors', () => {
    const logged: object[] = [];
    const logger = { error: (obj: object) => void logged.push(obj) };
    const abort = new DOMException('aborted', 'AbortError');
    expect(toStatusReply(abort, { logger }).code).toBe(GrpcStatus.CANCELLED);
    expect(toStatusReply(new TesseraError('INVALID_ARGUMENT', 'bad'), { logger }).code).toBe(GrpcStatus.INVALID_ARGUMENT);
    expect(logged).toHaveLength(0);
  });
});
