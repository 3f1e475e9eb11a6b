/**
 * The gRPC server against the real engine, the real thread executor and ORT on the tiny generated model.
 * Every call goes over loopback through @grpc/grpc-js clients built from the same protos.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { protoPath as healthProtoPath } from 'grpc-health-check';
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from 'vitest';
import { createEngine, type Engine } from '../../src/engine/index.ts';
import { readManifest } from '../../src/model/converted-model.ts';
import { loadTokenizer, renderChat } from '../../src/model/tokenizer/tokenizer.ts';
import { ThreadExecutor } from '../../src/parallel/thread-executor.ts';
import { generateApiKey, hashApiKey, loadApiKeyFile } from '../../src/server/auth.ts';
import type { ServingBackend } from '../../src/server/backend.ts';
import { startGrpcServer, type GrpcServerOptions, type RunningGrpcServer } from '../../src/server/grpc-server.ts';
import { loadPublicApi } from '../../src/server/proto-loader.ts';
import { resolveRequestLimits } from '../../src/server/request-limits.ts';
import { ERROR_CODE_TRAILER } from '../../src/server/status.ts';
import { createLogger } from '../../src/telemetry/logger.ts';
import { startMetrics, type TesseraMetrics } from '../../src/telemetry/metrics.ts';
import { tempDir, tinyModel } from '../helpers/tiny-model.ts';

/* eslint-disable @typescript-eslint/no-explicit-any -- dynamic grpc-js clients */
type Client = any;

const KEY = generateApiKey();
const OTHER_KEY = generateApiKey();

let engine: Engine;
let executor: ThreadExecutor;
let backend: ServingBackend;
let metrics: TesseraMetrics;
let server: RunningGrpcServer;
let baseOpts: GrpcServerOptions;
const clients: grpc.Client[] = [];

const pkg = grpc.loadPackageDefinition(loadPublicApi().packageDefinition) as any;
const healthPkg = grpc.loadPackageDefinition(protoLoader.loadSync(healthProtoPath, { keepCase: true, enums: String })) as any;
const reflectionPkg = grpc.loadPackageDefinition(
  protoLoader.loadSync('grpc/reflection/v1/reflection.proto', {
    keepCase: true,
    includeDirs: [join(process.cwd(), 'node_modules/@grpc/reflection/build/proto')],
  }),
) as any;

function client(Ctor: new (addr: string, creds: grpc.ChannelCredentials, opts?: object) => grpc.Client, port: number): Client {
  const c = new Ctor(`127.0.0.1:${port}`, grpc.credentials.createInsecure(), { 'grpc.max_send_message_length': 64 << 20 });
  clients.push(c);
  return c;
}

function auth(key = KEY): grpc.Metadata {
  const md = new grpc.Metadata();
  md.set('authorization', `Bearer ${key}`);
  return md;
}

function unary(c: Client, method: string, req: object, md = auth(), options: grpc.CallOptions = {}): Promise<any> {
  return new Promise((resolve, reject) => c[method](req, md, options, (err: grpc.ServiceError | null, res: any) => (err ? reject(err) : resolve(res))));
}

function stream(c: Client, req: object, md = auth()): Promise<any[]> {
  return new Promise((resolve, reject) => {
    const out: any[] = [];
    const call = c.GenerateStream(req, md);
    call.on('data', (m: any) => out.push(m));
    call.on('error', reject);
    call.on('end', () => resolve(out));
  });
}

async function statusOf(p: Promise<unknown>): Promise<{ code: number; details: string; errorCode: unknown }> {
  try {
    await p;
  } catch (err) {
    const e = err as grpc.ServiceError;
    return { code: e.code, details: e.details, errorCode: e.metadata?.get(ERROR_CODE_TRAILER)[0] };
  }
  throw new Error('expected the call to fail');
}

async function waitFor(cond: () => boolean, timeoutMs = 5000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) throw new Error('condition not reached in time');
    await new Promise((r) => setTimeout(r, 10));
  }
}

const greedy = { temperature: 0 };

beforeAll(async () => {
  const { convertedDir } = await tinyModel({ quant: 'fp32', numAdapters: 0 });
  const manifest = readManifest(convertedDir);
  const tokenizer = loadTokenizer(convertedDir)!;
  executor = await ThreadExecutor.start({ modelDir: convertedDir, kvCacheBytes: 16 << 20, blockSizeTokens: 16, numAdapterSlots: 1, maxAdapterRank: 8, intraOpThreads: 1 });
  engine = createEngine({ executor, detokenizer: tokenizer, eosTokenIds: manifest.config.eosTokenIds });
  backend = {
    submit: (req, opts) => engine.submit(req, opts),
    nowMs: () => Date.now(),
    encoder: {
      encode: (text) => tokenizer.encode(text),
      encodeChat: (messages) => tokenizer.encode(renderChat(tokenizer, messages), { addSpecialTokens: false }),
    },
    modelInfo: {
      modelId: 'tiny',
      modelType: 'llama',
      quantization: 'fp32',
      vocabSize: executor.layout.vocabSize,
      maxContextTokens: executor.layout.maxContextTokens,
      eosTokenIds: manifest.config.eosTokenIds,
      maxAdapterRank: 0,
    },
    adapters: null,
  };
  const keyFile = join(tempDir('keys'), 'keys.json');
  writeFileSync(keyFile, JSON.stringify({ keys: [{ sha256: hashApiKey(KEY), tenant: 'acme' }, { sha256: hashApiKey(OTHER_KEY), tenant: 'globex' }] }));
  metrics = await startMetrics({ port: 0 });
  baseOpts = {
    backend,
    port: 0,
    limits: resolveRequestLimits({ vocabSize: executor.layout.vocabSize, maxContextTokens: executor.layout.maxContextTokens, maxPromptTokens: 256 }),
    auth: await loadApiKeyFile(keyFile),
    logger: createLogger({ level: 'silent' }),
    metrics: metrics.instruments,
    maxMessageBytes: 64 * 1024,
  };
  server = await startGrpcServer(baseOpts);
});

afterAll(async () => {
  for (const c of clients) c.close();
  await server?.shutdown(0);
  await engine?.shutdown();
  await executor?.shutdown();
  await metrics?.shutdown();
});

describe('tessera.v1.Generation over gRPC (tiny model, real engine)', () => {
  it('streams the same tokens and text as the unary reply; the last message carries finish reason and usage', async () => {
    const gen = client(pkg.tessera.v1.Generation, server.port);
    const req = { request_id: 'same-1', text: 'hello world', sampling: greedy, stopping: { max_new_tokens: 12, ignore_eos: true }, top_n_logprobs: 2 };
    const full = await unary(gen, 'Generate', req);
    const parts = await stream(gen, req);
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
    const gen = client(pkg.tessera.v1.Generation, server.port);
    const chat = { messages: [{ role: 'user', content: 'hi there' }] };
    const reply = await unary(gen, 'Generate', { chat, sampling: greedy, stopping: { max_new_tokens: 4, ignore_eos: true } });
    const tokens = await unary(gen, 'Tokenize', { chat });
    expect(reply.usage.prompt_tokens).toBe(tokens.token_ids.length);
    const byIds = await unary(gen, 'Generate', { token_ids: { ids: tokens.token_ids }, sampling: greedy, stopping: { max_new_tokens: 4, ignore_eos: true } });
    expect(byIds.token_ids).toEqual(reply.token_ids);
    const info = await unary(gen, 'GetModelInfo', {});
    expect(info).toMatchObject({ model_id: 'tiny', vocab_size: executor.layout.vocabSize, max_prompt_tokens: 256, has_chat_template: true });
  });

  it('answers every client error with its status and the tessera-error-code trailer', async () => {
    const gen = client(pkg.tessera.v1.Generation, server.port);
    expect(await statusOf(unary(gen, 'Generate', { text: 'x', sampling: { top_p: 1.5 } }))).toMatchObject({
      code: grpc.status.INVALID_ARGUMENT,
      errorCode: 'INVALID_ARGUMENT',
      details: expect.stringContaining('`sampling.top_p` must be > 0 and <= 1. Given: 1.5'),
    });
    expect(await statusOf(unary(gen, 'Generate', {}))).toMatchObject({ code: grpc.status.INVALID_ARGUMENT, details: expect.stringContaining('`prompt` is required') });
    expect(await statusOf(unary(gen, 'Generate', { token_ids: { ids: Array(300).fill(5) } }))).toMatchObject({ code: grpc.status.INVALID_ARGUMENT, errorCode: 'PROMPT_TOO_LONG' });
    expect(await statusOf(unary(gen, 'Generate', { text: 'x', adapter_id: 'nope' }))).toMatchObject({ code: grpc.status.NOT_FOUND, errorCode: 'ADAPTER_NOT_FOUND' });
    expect(await statusOf(unary(gen, 'Generate', { text: 'x' }, new grpc.Metadata()))).toMatchObject({ code: grpc.status.UNAUTHENTICATED, errorCode: 'UNAUTHENTICATED' });
    expect(await statusOf(unary(gen, 'Generate', { text: 'x' }, auth('tsk_wrong')))).toMatchObject({ code: grpc.status.UNAUTHENTICATED });
    expect(await statusOf(stream(gen, { text: 'x' }, auth('tsk_wrong')))).toMatchObject({ code: grpc.status.UNAUTHENTICATED, errorCode: 'UNAUTHENTICATED' });
    expect(await statusOf(unary(gen, 'Generate', { text: 'x'.repeat(100_000) }))).toMatchObject({ code: grpc.status.RESOURCE_EXHAUSTED });
    const adapters = client(pkg.tessera.v1.Adapters, server.port);
    expect(await statusOf(unary(adapters, 'ListAdapters', {}))).toMatchObject({ code: grpc.status.UNIMPLEMENTED, errorCode: 'UNIMPLEMENTED' });
  });

  it('turns the gRPC deadline into DEADLINE_EXCEEDED and frees the request', async () => {
    const gen = client(pkg.tessera.v1.Generation, server.port);
    const long = { text: 'go', sampling: greedy, stopping: { max_new_tokens: 400, ignore_eos: true } };
    const st = await statusOf(unary(gen, 'Generate', long, auth(), { deadline: Date.now() + 30 }));
    expect(st.code).toBe(grpc.status.DEADLINE_EXCEEDED);
    await waitFor(() => engine.stats().running === 0 && engine.stats().kvBlocksUsed === 0 && server.numInFlight === 0);
  });

  it('cancelling a stream frees its KV blocks at once', async () => {
    const gen = client(pkg.tessera.v1.Generation, server.port);
    const call = gen.GenerateStream({ text: 'go', sampling: greedy, stopping: { max_new_tokens: 400, ignore_eos: true } }, auth());
    const failed = new Promise<grpc.ServiceError>((resolve) => call.on('error', resolve));
    await new Promise<void>((resolve) => call.once('data', () => resolve()));
    expect(engine.stats().kvBlocksUsed).toBeGreaterThan(0);
    call.cancel();
    expect((await failed).code).toBe(grpc.status.CANCELLED);
    await waitFor(() => engine.stats().running === 0 && engine.stats().kvBlocksUsed === 0 && server.numInFlight === 0);
  });

  it('answers RESOURCE_EXHAUSTED beyond max concurrent requests', async () => {
    const small = await startGrpcServer({ ...baseOpts, maxConcurrentRequests: 1 });
    onTestFinished(() => small.shutdown(0));
    const gen = client(pkg.tessera.v1.Generation, small.port);
    const call = gen.GenerateStream({ text: 'go', sampling: greedy, stopping: { max_new_tokens: 400, ignore_eos: true } }, auth());
    call.on('error', () => {});
    await new Promise<void>((resolve) => call.once('data', () => resolve()));
    expect(await statusOf(unary(gen, 'Generate', { text: 'x' }))).toMatchObject({ code: grpc.status.RESOURCE_EXHAUSTED, errorCode: 'QUEUE_FULL' });
    call.cancel();
    await waitFor(() => small.numInFlight === 0);
  });

  it('reports health per service, with Watch seeing the transitions', async () => {
    const health = client(healthPkg.grpc.health.v1.Health, server.port);
    expect(await unary(health, 'Check', { service: '' }, new grpc.Metadata())).toEqual({ status: 'SERVING' });
    expect(await unary(health, 'Check', { service: 'tessera.v1.Generation' }, new grpc.Metadata())).toEqual({ status: 'SERVING' });
    expect(await statusOf(unary(health, 'Check', { service: 'nope.Service' }, new grpc.Metadata()))).toMatchObject({ code: grpc.status.NOT_FOUND });
    const seen: string[] = [];
    const watch = health.Watch({ service: 'tessera.v1.Generation' });
    watch.on('data', (m: { status: string }) => seen.push(m.status));
    watch.on('error', () => {});
    await waitFor(() => seen.length === 1);
    server.setServing(false);
    await waitFor(() => seen.length === 2);
    const gen = client(pkg.tessera.v1.Generation, server.port);
    expect(await statusOf(unary(gen, 'Generate', { text: 'x' }))).toMatchObject({ code: grpc.status.UNAVAILABLE, errorCode: 'DRAINING' });
    server.setServing(true);
    await waitFor(() => seen.length === 3);
    watch.cancel();
    expect(seen).toEqual(['SERVING', 'NOT_SERVING', 'SERVING']);
  });

  it('lists every service through reflection', async () => {
    const refl = client(reflectionPkg.grpc.reflection.v1.ServerReflection, server.port);
    const call = refl.ServerReflectionInfo();
    const reply = new Promise<any>((resolve, reject) => {
      call.once('data', resolve);
      call.once('error', reject);
    });
    call.write({ list_services: '' });
    const names = ((await reply).list_services_response.service as { name: string }[]).map((s) => s.name);
    call.end();
    expect(names).toEqual(expect.arrayContaining(['tessera.v1.Generation', 'tessera.v1.Adapters', 'grpc.health.v1.Health']));
  });

  it('records the GenAI histograms, token counters and errors on the metrics endpoint', async () => {
    const body = await (await fetch(`http://127.0.0.1:${metrics.port}/metrics`)).text();
    const count = (name: string): number => Number(new RegExp(`^${name}_count\\{[^}]*\\} (\\d+)$`, 'm').exec(body)?.[1] ?? 0);
    expect(count('gen_ai_server_time_to_first_token')).toBeGreaterThan(0);
    expect(count('gen_ai_server_time_per_output_token')).toBeGreaterThan(0);
    expect(count('gen_ai_server_request_duration')).toBeGreaterThan(0);
    expect(body).toMatch(/^tessera_tokens_total\{direction="output"\} [1-9]\d*$/m);
    expect(body).toMatch(/^tessera_errors_total\{code="UNAUTHENTICATED",error_code="UNAUTHENTICATED"\} [1-9]/m);
  });

  it('drains gracefully: in-flight requests finish, new ones get UNAVAILABLE, health goes NOT_SERVING', async () => {
    const draining = await startGrpcServer(baseOpts);
    const gen = client(pkg.tessera.v1.Generation, draining.port);
    const health = client(healthPkg.grpc.health.v1.Health, draining.port);
    const inFlight = unary(gen, 'Generate', { text: 'go', sampling: greedy, stopping: { max_new_tokens: 48, ignore_eos: true } });
    await waitFor(() => draining.numInFlight === 1);
    const done = draining.shutdown(10_000);
    expect(await unary(health, 'Check', { service: '' }, new grpc.Metadata())).toEqual({ status: 'NOT_SERVING' });
    expect(await statusOf(unary(gen, 'Generate', { text: 'x' }))).toMatchObject({ code: grpc.status.UNAVAILABLE, errorCode: 'DRAINING' });
    const reply = await inFlight;
    expect(reply.token_ids).toHaveLength(48);
    await done;
  });
});
