/**
 * The whole server as `tessera serve` builds it (startServer with a ServeConfig from loadServeConfig): real engine,
 * model worker thread and ORT on the tiny generated model, on 127.0.0.1:0. Every call goes over loopback through
 * @grpc/grpc-js clients built from the same protos.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from 'vitest';
import type { RunningServer } from '../../src/cli/serve.ts';
import { generateApiKey, hashApiKey } from '../../src/server/auth.ts';
import {
  AdaptersClient,
  bearer,
  connect,
  GenerationClient,
  HealthClient,
  histogramCount,
  ReflectionClient,
  scrapeMetrics,
  startTestServer,
  statusOf,
  stream,
  unary,
  waitFor,
  type DynamicClient,
} from '../helpers/test-server.ts';
import { tempDir } from '../helpers/tiny-model.ts';

const KEY = generateApiKey();
const OTHER_KEY = generateApiKey();
const greedy = { temperature: 0 };
const long = { text: 'go', sampling: greedy, stopping: { max_new_tokens: 400, ignore_eos: true } };

let server: RunningServer;
let keyFile: string;
const clients: grpc.Client[] = [];

function gen(port = server.port): DynamicClient {
  return connect(GenerationClient, port, { closeWith: clients });
}

/** Engine and gRPC server hold nothing: no running or queued sequence, no KV block, no call in flight. */
function idle(s: RunningServer): boolean {
  const st = s.engine.stats();
  return st.running === 0 && st.queued === 0 && st.kvBlocksUsed === 0 && s.grpc.numInFlight === 0;
}

/** Starts a long stream and resolves once its first tokens arrived (the request then holds KV blocks). */
async function longStream(client: DynamicClient): Promise<grpc.ClientReadableStream<unknown>> {
  const call = client.GenerateStream(long, bearer(KEY));
  call.on('error', () => {});
  await new Promise<void>((resolve) => call.once('data', () => resolve()));
  return call;
}

beforeAll(async () => {
  keyFile = join(tempDir('keys'), 'keys.json');
  writeFileSync(keyFile, JSON.stringify({ keys: [{ sha256: hashApiKey(KEY), tenant: 'acme' }, { sha256: hashApiKey(OTHER_KEY), tenant: 'globex' }] }));
  server = await startTestServer({ 'api-keys': keyFile, 'max-prompt-tokens': 256, 'max-message-bytes': 64 * 1024, 'metrics-port': 0 });
});

afterAll(async () => {
  for (const c of clients) c.close();
  await server?.shutdown();
});

describe('tessera serve over gRPC (startServer, tiny model, real engine)', () => {
  it('binds 127.0.0.1 on free ports and reads both back', () => {
    expect(server.port).toBeGreaterThan(0);
    expect(server.metricsPort).toBeGreaterThan(0);
    expect(server.host).toBe('127.0.0.1');
  });

  it('streams the same tokens and text as the unary reply; the last message carries finish reason and usage', async () => {
    const req = { request_id: 'same-1', text: 'hello world', sampling: greedy, stopping: { max_new_tokens: 12, ignore_eos: true }, top_n_logprobs: 2 };
    const full = await unary(gen(), 'Generate', req, bearer(KEY));
    const parts = await stream(gen(), req, bearer(KEY));
    expect(full.request_id).toBe('same-1');
    expect(full.token_ids).toHaveLength(12);
    expect(full.finish_reason).toBe('FINISH_REASON_LENGTH');
    expect(full.usage.generated_tokens).toBe(12);
    expect(full.usage.prompt_tokens).toBeGreaterThan(0);
    expect(full.logprobs).toHaveLength(12);
    expect(full.logprobs[0].top).toHaveLength(2);
    expect(full.logprobs[0].token_id).toBe(full.token_ids[0]);
    expect(parts.flatMap((p) => p.token_ids)).toEqual(full.token_ids);
    expect(parts.map((p) => p.text).join('')).toBe(full.text);
    const last = parts.at(-1);
    expect(last.finish_reason).toBe('FINISH_REASON_LENGTH');
    expect(last.usage).toEqual(full.usage);
    expect(parts.slice(0, -1).every((p) => p.finish_reason === 'FINISH_REASON_UNSPECIFIED' && p.usage === null)).toBe(true);
  });

  it('renders chat prompts with the chat template; Tokenize and GetModelInfo agree with it', async () => {
    const chat = { messages: [{ role: 'user', content: 'hi there' }] };
    const reply = await unary(gen(), 'Generate', { chat, sampling: greedy, stopping: { max_new_tokens: 4, ignore_eos: true } }, bearer(KEY));
    const tokens = await unary(gen(), 'Tokenize', { chat }, bearer(KEY));
    expect(reply.usage.prompt_tokens).toBe(tokens.token_ids.length);
    const byIds = await unary(gen(), 'Generate', { token_ids: { ids: tokens.token_ids }, sampling: greedy, stopping: { max_new_tokens: 4, ignore_eos: true } }, bearer(KEY));
    expect(byIds.token_ids).toEqual(reply.token_ids);
    const info = await unary(gen(), 'GetModelInfo', {}, bearer(KEY));
    expect(info).toMatchObject({ model_id: expect.any(String), vocab_size: server.executor.layout.vocabSize, max_prompt_tokens: 256, has_chat_template: true });
  });

  it('maps every API key of the key file to its tenant and rejects missing, malformed or unknown keys', async () => {
    const req = { text: 'x', sampling: greedy, stopping: { max_new_tokens: 2, ignore_eos: true } };
    const a = await unary(gen(), 'Generate', req, bearer(KEY));
    const b = await unary(gen(), 'Generate', req, bearer(OTHER_KEY));
    expect(b.token_ids).toEqual(a.token_ids);
    expect(await statusOf(unary(gen(), 'Generate', req, bearer()))).toMatchObject({ code: grpc.status.UNAUTHENTICATED, errorCode: 'UNAUTHENTICATED' });
    expect(await statusOf(unary(gen(), 'Generate', req, bearer('tsk_wrong')))).toMatchObject({ code: grpc.status.UNAUTHENTICATED, errorCode: 'UNAUTHENTICATED' });
    const basic = new grpc.Metadata();
    basic.set('authorization', `Basic ${KEY}`);
    expect(await statusOf(unary(gen(), 'Generate', req, basic))).toMatchObject({ code: grpc.status.UNAUTHENTICATED });
    expect(await statusOf(stream(gen(), req, bearer('tsk_wrong')))).toMatchObject({ code: grpc.status.UNAUTHENTICATED, errorCode: 'UNAUTHENTICATED' });
    expect(await statusOf(unary(gen(), 'Tokenize', { text: 'x' }, bearer()))).toMatchObject({ code: grpc.status.UNAUTHENTICATED });
    expect(await statusOf(unary(gen(), 'GetModelInfo', {}, bearer(`${KEY}x`)))).toMatchObject({ code: grpc.status.UNAUTHENTICATED });
  });

  it('answers every client error with its status and the tessera-error-code trailer', async () => {
    const g = gen();
    expect(await statusOf(unary(g, 'Generate', { text: 'x', sampling: { top_p: 1.5 } }, bearer(KEY)))).toMatchObject({
      code: grpc.status.INVALID_ARGUMENT,
      errorCode: 'INVALID_ARGUMENT',
      details: expect.stringContaining('`sampling.top_p` must be > 0 and <= 1. Given: 1.5'),
    });
    expect(await statusOf(unary(g, 'Generate', {}, bearer(KEY)))).toMatchObject({ code: grpc.status.INVALID_ARGUMENT, details: expect.stringContaining('`prompt` is required') });
    expect(await statusOf(unary(g, 'Generate', { token_ids: { ids: Array(300).fill(5) } }, bearer(KEY)))).toMatchObject({
      code: grpc.status.INVALID_ARGUMENT,
      errorCode: 'PROMPT_TOO_LONG',
      details: expect.stringMatching(/256.*300|300.*256/),
    });
    expect(await statusOf(unary(g, 'Generate', { token_ids: { ids: [1 << 30] } }, bearer(KEY)))).toMatchObject({ code: grpc.status.INVALID_ARGUMENT, details: expect.stringContaining(String(1 << 30)) });
    expect(await statusOf(unary(g, 'Generate', { text: 'x', adapter_id: 'nope' }, bearer(KEY)))).toMatchObject({ code: grpc.status.NOT_FOUND, errorCode: 'ADAPTER_NOT_FOUND' });
    // Larger than --max-message-bytes: grpc-js refuses it before any handler runs.
    expect(await statusOf(unary(g, 'Generate', { text: 'x'.repeat(100_000) }, bearer(KEY)))).toMatchObject({ code: grpc.status.RESOURCE_EXHAUSTED });
    const adapters = connect(AdaptersClient, server.port, { closeWith: clients });
    // --adapter-slots 0 turns adapters off: the Adapters service says so (test/integration/adapters-api.test.ts covers it on).
    expect(await statusOf(unary(adapters, 'ListAdapters', {}, bearer(KEY)))).toMatchObject({ code: grpc.status.UNIMPLEMENTED, errorCode: 'UNIMPLEMENTED' });
  });

  it('turns the gRPC deadline into DEADLINE_EXCEEDED and frees the request', async () => {
    const st = await statusOf(unary(gen(), 'Generate', long, bearer(KEY), { deadline: Date.now() + 30 }));
    expect(st.code).toBe(grpc.status.DEADLINE_EXCEEDED);
    await waitFor(() => idle(server), 5000, 'engine idle after the deadline');
  });

  it('cancelling a stream frees its KV blocks at once', async () => {
    const call = await longStream(gen());
    const failed = new Promise<grpc.ServiceError>((resolve) => call.on('error', resolve));
    expect(server.engine.stats().kvBlocksUsed).toBeGreaterThan(0);
    expect(server.engine.stats().running).toBe(1);
    call.cancel();
    expect((await failed).code).toBe(grpc.status.CANCELLED);
    await waitFor(() => idle(server), 5000, 'engine idle after the cancel');
  });

  it('reports health per service, with Watch seeing the transitions', async () => {
    const health = connect(HealthClient, server.port, { closeWith: clients });
    expect(await unary(health, 'Check', { service: '' })).toEqual({ status: 'SERVING' });
    expect(await unary(health, 'Check', { service: 'tessera.v1.Generation' })).toEqual({ status: 'SERVING' });
    expect(await unary(health, 'Check', { service: 'tessera.v1.Adapters' })).toEqual({ status: 'SERVING' });
    expect(await statusOf(unary(health, 'Check', { service: 'nope.Service' }))).toMatchObject({ code: grpc.status.NOT_FOUND });
    const seen: string[] = [];
    const watch = health.Watch({ service: 'tessera.v1.Generation' });
    watch.on('data', (m: { status: string }) => seen.push(m.status));
    watch.on('error', () => {});
    await waitFor(() => seen.length === 1);
    server.grpc.setServing(false);
    await waitFor(() => seen.length === 2);
    expect(await statusOf(unary(gen(), 'Generate', { text: 'x' }, bearer(KEY)))).toMatchObject({ code: grpc.status.UNAVAILABLE, errorCode: 'DRAINING' });
    server.grpc.setServing(true);
    await waitFor(() => seen.length === 3);
    watch.cancel();
    expect(seen).toEqual(['SERVING', 'NOT_SERVING', 'SERVING']);
  });

  it('lists every service through reflection', async () => {
    const refl = connect(ReflectionClient, server.port, { closeWith: clients });
    const call = refl.ServerReflectionInfo();
    const reply = new Promise<{ list_services_response: { service: { name: string }[] } }>((resolve, reject) => {
      call.once('data', resolve);
      call.once('error', reject);
    });
    call.write({ list_services: '' });
    const names = (await reply).list_services_response.service.map((s) => s.name);
    call.end();
    expect(names).toEqual(expect.arrayContaining(['tessera.v1.Generation', 'tessera.v1.Adapters', 'grpc.health.v1.Health']));
  });

  it('exports the GenAI histograms, engine gauges, batch sizes, token and error counters on /metrics', async () => {
    await unary(gen(), 'Generate', { text: 'metrics', sampling: greedy, stopping: { max_new_tokens: 6, ignore_eos: true } }, bearer(KEY));
    // The gauges are sampled from engine stats every 500 ms.
    let body = '';
    await waitFor(
      async () => {
        body = await scrapeMetrics(server.metricsPort!);
        return /^tessera_kv_usage_ratio(\{[^}]*\})? /m.test(body);
      },
      3000,
      'engine gauges on /metrics',
    );
    expect(histogramCount(body, 'gen_ai_server_time_to_first_token')).toBeGreaterThan(0);
    expect(histogramCount(body, 'gen_ai_server_time_per_output_token')).toBeGreaterThan(0);
    expect(histogramCount(body, 'gen_ai_server_request_duration')).toBeGreaterThan(0);
    // One observation per engine step: at least one prefill and five decode steps of the request above.
    expect(histogramCount(body, 'tessera_batch_size')).toBeGreaterThanOrEqual(6);
    expect(body).toMatch(/^gen_ai_server_time_to_first_token_bucket\{[^}]*le="0\.001"[^}]*\} \d+$/m);
    for (const gauge of ['tessera_queue_length', 'tessera_running_sequences', 'tessera_kv_usage_ratio']) {
      expect(body).toMatch(new RegExp(`^${gauge}(\\{[^}]*\\})? \\d+(\\.\\d+)?(e-?\\d+)?$`, 'm'));
    }
    expect(body).toMatch(/^tessera_tokens_total\{direction="output"\} [1-9]\d*$/m);
    expect(body).toMatch(/^tessera_errors_total\{code="UNAUTHENTICATED",error_code="UNAUTHENTICATED"\} [1-9]/m);
  });
});

describe('admission limits (their own servers)', () => {
  it('answers RESOURCE_EXHAUSTED beyond --max-concurrent-requests', async () => {
    const small = await startTestServer({ 'max-concurrent-requests': 1 });
    onTestFinished(() => small.shutdown());
    const g = gen(small.port);
    const call = await longStream(g);
    expect(await statusOf(unary(g, 'Generate', { text: 'x' }))).toMatchObject({
      code: grpc.status.RESOURCE_EXHAUSTED,
      errorCode: 'QUEUE_FULL',
      details: expect.stringContaining('concurrent requests must be at most 1. Given: 2'),
    });
    call.cancel();
    await waitFor(() => idle(small), 5000, 'idle after the cancel');
  });

  it('answers RESOURCE_EXHAUSTED beyond --max-queued-requests and admits again once the queue drains', async () => {
    const small = await startTestServer({ 'max-queued-requests': 1, 'max-running-sequences': 1, 'max-batch-tokens': 64, 'prefill-chunk-tokens': 64 });
    onTestFinished(() => small.shutdown());
    const g = gen(small.port);
    const running = await longStream(g);
    const queued = g.GenerateStream({ text: 'queued', sampling: greedy, stopping: { max_new_tokens: 3, ignore_eos: true } });
    const queuedDone = new Promise<unknown[]>((resolve, reject) => {
      const out: unknown[] = [];
      queued.on('data', (m: unknown) => out.push(m));
      queued.on('error', reject);
      queued.on('end', () => resolve(out));
    });
    await waitFor(() => small.engine.stats().queued === 1, 5000, 'second request queued');
    expect(await statusOf(unary(g, 'Generate', { text: 'x' }))).toMatchObject({
      code: grpc.status.RESOURCE_EXHAUSTED,
      errorCode: 'QUEUE_FULL',
      details: expect.stringContaining('maxQueuedRequests'),
    });
    running.cancel();
    expect((await queuedDone).length).toBeGreaterThan(0);
    const after = await unary(g, 'Generate', { text: 'x', sampling: greedy, stopping: { max_new_tokens: 2, ignore_eos: true } });
    expect(after.token_ids).toHaveLength(2);
    await waitFor(() => idle(small), 5000, 'idle at the end');
  });

  it('drains gracefully: in-flight requests finish, new ones get UNAVAILABLE, health goes NOT_SERVING', async () => {
    const draining = await startTestServer({});
    onTestFinished(() => draining.shutdown());
    const g = gen(draining.port);
    const health = connect(HealthClient, draining.port, { closeWith: clients });
    const inFlight = unary(g, 'Generate', { text: 'go', sampling: greedy, stopping: { max_new_tokens: 48, ignore_eos: true } });
    await waitFor(() => draining.grpc.numInFlight === 1);
    const done = draining.drain(Date.now() + 10_000);
    expect(await unary(health, 'Check', { service: '' })).toEqual({ status: 'NOT_SERVING' });
    expect(await statusOf(unary(g, 'Generate', { text: 'x' }))).toMatchObject({
      code: grpc.status.UNAVAILABLE,
      errorCode: 'DRAINING',
      details: expect.stringContaining('shutting down'),
    });
    const reply = await inFlight;
    expect(reply.token_ids).toHaveLength(48);
    await done;
    expect(draining.engine.stats().stopped).toBe(true);
  });

  it('cancels what is still running at the drain deadline', async () => {
    const draining = await startTestServer({});
    onTestFinished(() => draining.shutdown());
    const g = gen(draining.port);
    const st = statusOf(unary(g, 'Generate', long));
    await waitFor(() => draining.engine.stats().running === 1);
    const started = Date.now();
    // A deadline that has passed: 400 tokens cannot finish first, however fast the machine (200 ms could, and did).
    await draining.drain(Date.now());
    expect(Date.now() - started).toBeLessThan(3000);
    const cancelled = await st;
    expect(cancelled).toMatchObject({ code: grpc.status.UNAVAILABLE, errorCode: 'DRAINING', details: expect.stringContaining('drain timeout passed') });
    // No internal clock value (an engine-clock deadline, a computed grace) in what the client reads.
    expect(cancelled.details).not.toMatch(/\d{3,}/);
  });

  it('while a model worker is down and restarting, new calls get WORKER_UNAVAILABLE, not "not ready yet"', async () => {
    const piped = await startTestServer({ pp: 2 });
    onTestFinished(() => piped.shutdown());
    const g = gen(piped.port);
    const health = connect(HealthClient, piped.port, { closeWith: clients });
    // The link goes down synchronously inside kill(); the restarted thread needs far longer than one loopback call.
    // Should a restart ever win the race, the call succeeds: kill again (a few tries at most).
    let refused: Awaited<ReturnType<typeof statusOf>> | null = null;
    for (let attempt = 0; attempt < 5 && refused === null; attempt++) {
      const link = piped.executor.links()[1] as unknown as { kill(reason?: string): Promise<void> };
      const killed = link.kill('test kill');
      const reply = unary(g, 'Generate', { text: 'x', sampling: greedy, stopping: { max_new_tokens: 1 } });
      refused = await statusOf(reply).catch(() => null);
      await killed;
      await piped.executor.whenServing();
    }
    expect(refused).toMatchObject({ code: grpc.status.UNAVAILABLE, errorCode: 'WORKER_UNAVAILABLE', details: expect.stringContaining('model worker is down') });
    // Recovered: serving again.
    await waitFor(async () => (await unary<{ status: string }>(health, 'Check', { service: '' })).status === 'SERVING', 10_000, 'health SERVING again');
    expect((await unary(g, 'Generate', { text: 'x', sampling: greedy, stopping: { max_new_tokens: 2, ignore_eos: true } })).token_ids).toHaveLength(2);
  });
});
