/**
 * The real server for integration tests: `startServer()` from the composition root with a ServeConfig built by
 * `loadServeConfig`, exactly as `tessera serve` builds it, on 127.0.0.1:0 with the tiny converted model. Also the
 * small gRPC client helpers the integration tests share.
 */
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { protoPath as healthProtoPath } from 'grpc-health-check';
import { loadServeConfig, type ServeConfig } from '../../src/cli/config.ts';
import { startServer, type RunningServer } from '../../src/cli/serve.ts';
import { loadPublicApi } from '../../src/server/proto-loader.ts';
import { ERROR_CODE_TRAILER } from '../../src/server/status.ts';
import { tinyModel } from './tiny-model.ts';

/** Flag values by flag name (without `--`); null removes a default flag. */
export type FlagOverrides = Record<string, string | number | readonly string[] | null>;

let tinyDir: Promise<string> | null = null;

/** The tiny fp32 model without adapters, generated and converted once per test process. */
export function tinyConvertedDir(): Promise<string> {
  tinyDir ??= tinyModel({ quant: 'fp32', numAdapters: 0 }).then((m) => m.convertedDir);
  return tinyDir;
}

/** Flags of a small, quiet test server; `overrides` replace or (with null) remove them. */
export async function testServerFlags(overrides: FlagOverrides = {}): Promise<Map<string, string[]>> {
  const defaults: FlagOverrides = {
    model: await tinyConvertedDir(),
    host: '127.0.0.1',
    port: 0,
    'log-level': 'silent',
    threads: 1,
    'kv-cache-bytes': 16 << 20,
    'adapter-slots': 0,
    'max-adapter-rank': 8,
  };
  const flags = new Map<string, string[]>();
  for (const [name, value] of Object.entries({ ...defaults, ...overrides })) {
    if (value === null) continue;
    flags.set(name, Array.isArray(value) ? [...(value as string[])] : [String(value)]);
  }
  return flags;
}

/** Starts the real server (engine, model worker, telemetry, gRPC). The caller registers its shutdown. */
export async function startTestServer(overrides: FlagOverrides = {}): Promise<RunningServer> {
  const config: ServeConfig = loadServeConfig(await testServerFlags(overrides), {});
  return startServer(config);
}

/* eslint-disable @typescript-eslint/no-explicit-any -- dynamic grpc-js clients built from the protos */
export type DynamicClient = any;
type ClientCtor = new (address: string, creds: grpc.ChannelCredentials, options?: grpc.ChannelOptions) => grpc.Client;

export const publicApi = grpc.loadPackageDefinition(loadPublicApi().packageDefinition) as any;
export const healthApi = grpc.loadPackageDefinition(protoLoader.loadSync(healthProtoPath, { keepCase: true, enums: String })) as any;
export const reflectionApi = grpc.loadPackageDefinition(
  protoLoader.loadSync('grpc/reflection/v1/reflection.proto', {
    keepCase: true,
    includeDirs: [join(process.cwd(), 'node_modules/@grpc/reflection/build/proto')],
  }),
) as any;
export const GenerationClient: ClientCtor = publicApi.tessera.v1.Generation;
export const AdaptersClient: ClientCtor = publicApi.tessera.v1.Adapters;
export const HealthClient: ClientCtor = healthApi.grpc.health.v1.Health;
export const ReflectionClient: ClientCtor = reflectionApi.grpc.reflection.v1.ServerReflection;
/* eslint-enable @typescript-eslint/no-explicit-any */

/** A client of `Ctor` on 127.0.0.1:port; closed by `closeAll`. */
export function connect(Ctor: ClientCtor, port: number, opts: { creds?: grpc.ChannelCredentials; options?: grpc.ChannelOptions; closeWith?: grpc.Client[] } = {}): DynamicClient {
  const client = new Ctor(`127.0.0.1:${port}`, opts.creds ?? grpc.credentials.createInsecure(), { 'grpc.max_send_message_length': 64 << 20, ...opts.options });
  opts.closeWith?.push(client);
  return client;
}

/** `authorization: Bearer KEY` metadata (an empty one without a key). */
export function bearer(key?: string): grpc.Metadata {
  const md = new grpc.Metadata();
  if (key !== undefined) md.set('authorization', `Bearer ${key}`);
  return md;
}

/** A unary call as a promise. */
export function unary<T = DynamicClient>(client: DynamicClient, method: string, request: object, md = new grpc.Metadata(), options: grpc.CallOptions = {}): Promise<T> {
  return new Promise((resolve, reject) => {
    client[method](request, md, options, (err: grpc.ServiceError | null, reply: T) => (err ? reject(err) : resolve(reply)));
  });
}

/** A GenerateStream call collected into its messages. */
export function stream<T = DynamicClient>(client: DynamicClient, request: object, md = new grpc.Metadata(), options: grpc.CallOptions = {}): Promise<T[]> {
  return new Promise((resolve, reject) => {
    const out: T[] = [];
    const call = client.GenerateStream(request, md, options);
    call.on('data', (m: T) => out.push(m));
    call.on('error', reject);
    call.on('end', () => resolve(out));
  });
}

export interface CallStatus {
  code: grpc.status;
  details: string;
  /** The `tessera-error-code` trailer (undefined when the status came from grpc-js itself). */
  errorCode: unknown;
}

/** The status a call failed with; throws when it succeeded. */
export async function statusOf(p: Promise<unknown>): Promise<CallStatus> {
  try {
    await p;
  } catch (err) {
    const e = err as grpc.ServiceError;
    return { code: e.code, details: e.details, errorCode: e.metadata?.get(ERROR_CODE_TRAILER)[0] };
  }
  throw new Error('expected the call to fail');
}

/** Polls `cond` every 10 ms until it holds; throws after `timeoutMs`. */
export async function waitFor(cond: () => boolean | Promise<boolean>, timeoutMs = 5000, what = 'condition'): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`${what} not reached within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** The Prometheus text of a metrics endpoint. */
export async function scrapeMetrics(port: number): Promise<string> {
  const res = await fetch(`http://127.0.0.1:${port}/metrics`);
  if (!res.ok) throw new Error(`GET /metrics answered ${res.status}`);
  return res.text();
}

/** Sum of a histogram's `_count` series (every label set) in a Prometheus text; 0 when absent. */
export function histogramCount(body: string, name: string): number {
  let sum = 0;
  for (const m of body.matchAll(new RegExp(`^${name}_count(?:\\{[^}]*\\})? (\\d+)$`, 'gm'))) sum += Number(m[1]);
  return sum;
}
