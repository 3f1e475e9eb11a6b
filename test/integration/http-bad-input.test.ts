/**
 * The HTTP face against bad input over raw HTTP (fetch and plain sockets) on the real server: malformed JSON, bodies
 * that are not objects, oversized bodies, wrong content types, wrong methods and paths, broken HTTP, clients that send
 * slowly or vanish mid-stream. Each gets its status and OpenAI error JSON, and the server keeps serving; a client that
 * goes away frees its KV cache at once; both faces share one admission limit.
 */
import { connect as netConnect, type Socket } from 'node:net';
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from 'vitest';
import type { RunningServer } from '../../src/cli/serve.ts';
import { connect, GenerationClient, startTestServer, statusOf, unary, waitFor, type DynamicClient } from '../helpers/test-server.ts';

let server: RunningServer;
let base: string;
let model: string;
const grpcClients: grpc.Client[] = [];

beforeAll(async () => {
  server = await startTestServer({ 'http-port': 0, 'max-message-bytes': 64 * 1024, 'http-request-timeout-ms': 400 });
  base = `http://127.0.0.1:${server.httpPort}`;
  model = server.executor.modelId;
});

afterAll(async () => {
  for (const c of grpcClients) c.close();
  await server?.shutdown();
});

function post(path: string, body: string | Uint8Array, contentType = 'application/json'): Promise<Response> {
  return fetch(`${base}${path}`, { method: 'POST', headers: { 'content-type': contentType }, body });
}

async function errorOf(res: Response): Promise<{ status: number; code: string | null; message: string; type: string }> {
  const body = (await res.json()) as { error: { code: string | null; message: string; type: string } };
  return { status: res.status, code: body.error.code, message: body.error.message, type: body.error.type };
}

function idle(s: RunningServer): boolean {
  const st = s.engine.stats();
  return s.grpc.numInFlight === 0 && st.running === 0 && st.queued === 0 && st.kvBlocksUsed === 0;
}

/** Sends raw bytes and resolves with everything the server wrote before it closed (or after `waitMs`). */
function raw(bytes: string, waitMs = 3000): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket: Socket = netConnect(server.httpPort!, '127.0.0.1', () => socket.write(bytes));
    let out = '';
    socket.setEncoding('utf8').on('data', (d: string) => (out += d));
    const timer = setTimeout(() => {
      socket.destroy();
      resolve(out);
    }, waitMs);
    socket.on('close', () => {
      clearTimeout(timer);
      resolve(out);
    });
    socket.on('error', reject);
  });
}

const good = (extra: object = {}) => JSON.stringify({ model, prompt: 'hello', max_tokens: 4, temperature: 0, ...extra });

describe('HTTP face: bad input over raw HTTP', () => {
  it('answers malformed JSON and non-object bodies with 400 INVALID_ARGUMENT and the tessera-error-code header', async () => {
    for (const body of ['{"model": ', 'not json', '[1,2]', '"a string"', 'null', '']) {
      const res = await post('/v1/completions', body);
      expect(res.headers.get('tessera-error-code'), body).toBe('INVALID_ARGUMENT');
      expect(await errorOf(res), body).toMatchObject({ status: 400, code: 'INVALID_ARGUMENT', type: 'invalid_request_error' });
    }
    const wrongTypes = await errorOf(await post('/v1/chat/completions', JSON.stringify({ model, messages: 'hi' })));
    expect(wrongTypes).toMatchObject({ status: 400, message: expect.stringContaining('`messages`') });
  });

  it('answers an oversized body with 413 and a wrong content type with 415, then serves the next request', async () => {
    const big = JSON.stringify({ model, prompt: 'x'.repeat(100 * 1024) });
    expect(await errorOf(await post('/v1/completions', big))).toMatchObject({ status: 413, message: expect.stringContaining('at most 65536 bytes') });
    // Chunked upload without a Content-Length: counted as it arrives.
    const stream = new ReadableStream<Uint8Array>({
      start(c) {
        for (let i = 0; i < 20; i++) c.enqueue(new Uint8Array(8 * 1024).fill(0x20));
        c.close();
      },
    });
    const chunked = await fetch(`${base}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: stream, duplex: 'half' } as RequestInit);
    expect(chunked.status).toBe(413);
    expect(await errorOf(await post('/v1/completions', good(), 'text/plain'))).toMatchObject({ status: 415, message: expect.stringContaining('application/json') });
    expect((await post('/v1/completions', good(), 'application/json; charset=utf-8')).status).toBe(200);
    expect((await post('/v1/completions', good())).status).toBe(200);
  });

  it('answers unknown paths with 404 and wrong methods with 405 and Allow; /health says SERVING', async () => {
    expect(await errorOf(await fetch(`${base}/v2/whatever`))).toMatchObject({ status: 404, type: 'not_found_error' });
    const get = await fetch(`${base}/v1/completions`);
    expect(get.status).toBe(405);
    expect(get.headers.get('allow')).toBe('POST');
    expect((await fetch(`${base}/v1/models`, { method: 'DELETE' })).status).toBe(405);
    const health = await fetch(`${base}/health`);
    expect(health.status).toBe(200);
    expect(await health.json()).toEqual({ status: 'SERVING' });
  });

  it('answers broken HTTP with 400 and a client that sends too slowly with 408, while others are served', async () => {
    expect(await raw('THIS IS NOT HTTP\r\n\r\n')).toMatch(/^HTTP\/1\.1 400/);
    // Headers and half a body, then nothing: cut after --http-request-timeout-ms.
    const slow = raw(`POST /v1/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 500\r\n\r\n{"model":`, 5000);
    expect((await post('/v1/completions', good())).status).toBe(200);
    expect(await slow).toMatch(/^HTTP\/1\.1 408/);
    await waitFor(() => idle(server), 5000, 'idle after the slow client');
  });

  it('cancels a streamed request when its client disconnects, freeing its KV blocks at once', async () => {
    const res = await post('/v1/completions', good({ max_tokens: 400, ignore_eos: true, stream: true }));
    expect(res.headers.get('content-type')).toContain('text/event-stream');
    const reader = res.body!.getReader();
    await reader.read();
    expect(server.engine.stats().running + server.engine.stats().queued).toBeGreaterThan(0);
    await reader.cancel();
    await waitFor(() => idle(server), 5000, 'KV freed after the disconnect');
  });
});

describe('one admission limit for both faces', () => {
  it('a request in flight on one face counts against --max-concurrent-requests on the other', async () => {
    const small = await startTestServer({ 'http-port': 0, 'max-concurrent-requests': 1 });
    onTestFinished(() => small.shutdown());
    const g: DynamicClient = connect(GenerationClient, small.port, { closeWith: grpcClients });
    const url = `http://127.0.0.1:${small.httpPort}/v1/completions`;
    const body = JSON.stringify({ model: small.executor.modelId, prompt: 'hold on', max_tokens: 400, ignore_eos: true, stream: true });
    const held = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body });
    const reader = held.body!.getReader();
    await reader.read();
    expect(await statusOf(unary(g, 'Generate', { text: 'x' }))).toMatchObject({ code: grpc.status.RESOURCE_EXHAUSTED, errorCode: 'QUEUE_FULL' });
    await reader.cancel();
    await waitFor(() => idle(small), 5000, 'idle after the cancel');

    const call = g.GenerateStream({ text: 'hold on', stopping: { max_new_tokens: 400, ignore_eos: true } });
    call.on('error', () => {});
    await new Promise<void>((resolve) => call.once('data', () => resolve()));
    const refused = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ model: small.executor.modelId, prompt: 'x', max_tokens: 2 }) });
    expect(await errorOf(refused)).toMatchObject({ status: 429, code: 'QUEUE_FULL', type: 'rate_limit_error' });
    call.cancel();
    await waitFor(() => idle(small), 5000, 'idle after the gRPC cancel');
  });
});
