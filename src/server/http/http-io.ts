/**
 * Reading request bodies and writing replies on node:http: a JSON body bounded in bytes and typed by Content-Type,
 * JSON replies, and server-sent events with backpressure (a reader that stops reading pauses its request; one that
 * stalls past `stallTimeoutMs` is disconnected, which cancels the request and frees its KV cache).
 */
import { once } from 'node:events';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { TesseraError } from '../../errors.ts';
import { protocolError, type HttpErrorReply } from './http-errors.ts';

/**
 * A request that failed before it reached the shared error table (HTTP-level: 413, 415, ...). `bodyUnread`: the body
 * was not consumed, so the connection must close after the reply (its bytes would read as the next request).
 */
export class HttpProtocolError extends Error {
  constructor(
    readonly reply: HttpErrorReply,
    readonly bodyUnread = false,
  ) {
    super(reply.body.error.message);
    this.name = 'HttpProtocolError';
  }
}

/** Reads a JSON object body of at most `maxBytes`. 415 for another content type, 413 when larger, INVALID_ARGUMENT when not a JSON object. */
export async function readJsonBody(req: IncomingMessage, maxBytes: number): Promise<Record<string, unknown>> {
  const type = (req.headers['content-type'] ?? '').split(';')[0].trim().toLowerCase();
  if (type !== 'application/json') {
    throw new HttpProtocolError(protocolError(415, `Content-Type must be application/json. Given: ${JSON.stringify(req.headers['content-type'] ?? '')}`), true);
  }
  const tooLarge = (): HttpProtocolError => new HttpProtocolError(protocolError(413, `request body must be at most ${maxBytes} bytes (--max-message-bytes)`), true);
  const declared = Number(req.headers['content-length'] ?? NaN);
  if (Number.isFinite(declared) && declared > maxBytes) throw tooLarge();
  const chunks: Buffer[] = [];
  let size = 0;
  try {
    for await (const chunk of req as AsyncIterable<Buffer>) {
      size += chunk.length;
      if (size > maxBytes) throw tooLarge();
      chunks.push(chunk);
    }
  } catch (err) {
    if (err instanceof HttpProtocolError) throw err;
    // The client went away mid-body: its own doing, not a server fault.
    throw new TesseraError('CANCELLED', `client closed the connection while sending the body (${(err as Error).message})`);
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(Buffer.concat(chunks).toString('utf8'));
  } catch (err) {
    throw new TesseraError('INVALID_ARGUMENT', `request body is not valid JSON: ${(err as Error).message}`);
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    throw new TesseraError('INVALID_ARGUMENT', `request body must be a JSON object. Given: ${Array.isArray(parsed) ? 'an array' : JSON.stringify(parsed)}`);
  }
  return parsed as Record<string, unknown>;
}

export function sendJson(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), ...headers });
  res.end(text);
}

export function sendError(res: ServerResponse, reply: HttpErrorReply, headers: Record<string, string> = {}): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  sendJson(res, reply.status, reply.body, { ...(reply.errorCode ? { 'tessera-error-code': reply.errorCode } : {}), ...headers });
}

export const SSE_HEADERS: Readonly<Record<string, string>> = Object.freeze({
  'content-type': 'text/event-stream; charset=utf-8',
  'cache-control': 'no-cache',
  connection: 'keep-alive',
  // Proxies that buffer (nginx) must pass events through as they come.
  'x-accel-buffering': 'no',
});

/**
 * Writes one SSE `data:` event. Waits for 'drain' when the socket buffer is full; when the reader stays stalled for
 * `stallTimeoutMs` the connection is destroyed (the caller sees the client gone and cancels the request).
 */
export async function writeEvent(res: ServerResponse, data: string, signal: AbortSignal, stallTimeoutMs: number): Promise<void> {
  if (res.write(`data: ${data}\n\n`)) return;
  const stall = new AbortController();
  const timer = setTimeout(() => stall.abort(), stallTimeoutMs);
  try {
    await once(res, 'drain', { signal: AbortSignal.any([signal, stall.signal]) });
  } catch (err) {
    if (stall.signal.aborted && !signal.aborted) {
      res.destroy();
      throw new TesseraError('CANCELLED', `client read nothing for ${stallTimeoutMs} ms; disconnected`);
    }
    throw err;
  } finally {
    clearTimeout(timer);
  }
}
