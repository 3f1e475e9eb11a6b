/**
 * OpenTelemetry metrics, exposed in Prometheus text format over HTTP.
 *
 * GenAI server instruments follow the OTel semantic conventions (names, unit 's', bucket boundaries from
 * the spec); Tessera's own are tessera_*. The Prometheus exporter renames on export: dots become
 * underscores and counters end in `_total`; the unit goes in the `# UNIT` line, not the name
 * (`gen_ai_server_request_duration`, `tessera_tokens_total`).
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Attributes, Counter, Gauge, Histogram, Meter } from '@opentelemetry/api';
import { PrometheusExporter, PrometheusSerializer } from '@opentelemetry/exporter-prometheus';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { MeterProvider } from '@opentelemetry/sdk-metrics';
import { ATTR_SERVICE_NAME } from '@opentelemetry/semantic-conventions';
import { loraInfoText, type LoraInfo } from './lora-info.ts';
import { registerProcessMetrics } from './process-metrics.ts';

/** gen_ai.server.time_to_first_token buckets, seconds (OTel GenAI semantic conventions). */
export const TIME_TO_FIRST_TOKEN_BUCKETS_S: readonly number[] = [
  0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10,
];
/** gen_ai.server.time_per_output_token buckets, seconds. */
export const TIME_PER_OUTPUT_TOKEN_BUCKETS_S: readonly number[] = [
  0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1, 2.5,
];
/** gen_ai.server.request.duration buckets, seconds (same as the spec's client operation duration). */
export const REQUEST_DURATION_BUCKETS_S: readonly number[] = [
  0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
];
/** tessera_adapter_load_duration buckets, seconds (source fetch + decode + slot write). */
export const ADAPTER_LOAD_DURATION_BUCKETS_S: readonly number[] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
/** tessera_batch_size buckets, sequences per step. */
export const BATCH_SIZE_BUCKETS: readonly number[] = [1, 2, 4, 8, 16, 32, 64, 128, 256];

export interface TesseraInstruments {
  /** Seconds from request arrival to its last byte; attributes: gen_ai.operation.name, error.type (on failure). */
  requestDuration: Histogram;
  timeToFirstToken: Histogram;
  timePerOutputToken: Histogram;
  queueLength: Gauge;
  runningSequences: Gauge;
  /** Used KV blocks / all KV blocks, 0..1. */
  kvUsageRatio: Gauge;
  /** Sequences per engine step. */
  batchSize: Histogram;
  /** Attribute direction: 'input' | 'output'. */
  tokens: Counter;
  /** Attributes: code (gRPC status name), error_code (Tessera ErrorCode). */
  errors: Counter;
  /** Per-adapter requests; attribute adapter ('' = base model). */
  adapterRequests: Counter;
  /** Adapter cache, attribute tier ('host' | 'device'). */
  adapterCacheHits: Counter;
  adapterCacheMisses: Counter;
  adapterCacheLoads: Counter;
  adapterCacheEvictions: Counter;
  adapterCacheBytes: Gauge;
  /** Seconds to make an adapter resident in a tier; attribute tier ('host' = fetched/validated, 'device' = slot written). */
  adapterLoadDuration: Histogram;
}

export interface MetricsOptions {
  /** Port of the /metrics endpoint; 0 picks a free one (read it back from `port`); null serves no HTTP. */
  port?: number | null;
  /** Default '127.0.0.1'; '0.0.0.0' to be scraped from outside. */
  host?: string;
  /** Default '/metrics'. */
  endpoint?: string;
  /** service.name of the target_info series; default 'tessera'. */
  serviceName?: string;
}

export interface TesseraMetrics {
  readonly instruments: TesseraInstruments;
  readonly meter: Meter;
  readonly meterProvider: MeterProvider;
  /** Bound port of the endpoint, or null when none is served. */
  readonly port: number | null;
  /** Answers a request with the Prometheus text (for other servers that also serve /metrics). */
  handler(req: IncomingMessage, res: ServerResponse): void;
  /**
   * Exports `tessera_lora_requests_info` from `read` at each scrape (the inference gateway's LoRA info gauge). Written
   * beside the OpenTelemetry series because its label values change: an OTel gauge would keep every past label set.
   */
  setLoraInfo(read: (() => LoraInfo) | null): void;
  /** Idempotent. */
  shutdown(): Promise<void>;
}

function createInstruments(meter: Meter): TesseraInstruments {
  const histogram = (name: string, description: string, unit: string, buckets: readonly number[]): Histogram =>
    meter.createHistogram(name, { description, unit, advice: { explicitBucketBoundaries: [...buckets] } });
  return {
    requestDuration: histogram('gen_ai.server.request.duration', 'Time from request arrival to the end of its reply', 's', REQUEST_DURATION_BUCKETS_S),
    timeToFirstToken: histogram('gen_ai.server.time_to_first_token', 'Time to generate the first token (queue + prefill)', 's', TIME_TO_FIRST_TOKEN_BUCKETS_S),
    timePerOutputToken: histogram('gen_ai.server.time_per_output_token', 'Decode time per output token after the first', 's', TIME_PER_OUTPUT_TOKEN_BUCKETS_S),
    queueLength: meter.createGauge('tessera_queue_length', { description: 'Requests waiting for admission', unit: '{request}' }),
    runningSequences: meter.createGauge('tessera_running_sequences', { description: 'Sequences in the running batch', unit: '{sequence}' }),
    kvUsageRatio: meter.createGauge('tessera_kv_usage_ratio', { description: 'Fraction of KV cache blocks in use', unit: '1' }),
    batchSize: histogram('tessera_batch_size', 'Sequences per engine step', '{sequence}', BATCH_SIZE_BUCKETS),
    tokens: meter.createCounter('tessera_tokens', { description: 'Tokens processed, by direction (input = prompt, output = generated)', unit: '{token}' }),
    errors: meter.createCounter('tessera_errors', { description: 'Failed requests, by gRPC status and Tessera error code' }),
    adapterRequests: meter.createCounter('tessera_adapter_requests', { description: 'Requests per adapter (empty = base model)', unit: '{request}' }),
    adapterCacheHits: meter.createCounter('tessera_adapter_cache_hits', { description: 'Adapter cache hits, by tier' }),
    adapterCacheMisses: meter.createCounter('tessera_adapter_cache_misses', { description: 'Adapter cache misses, by tier' }),
    adapterCacheLoads: meter.createCounter('tessera_adapter_cache_loads', { description: 'Adapter loads into a tier' }),
    adapterCacheEvictions: meter.createCounter('tessera_adapter_cache_evictions', { description: 'Adapter evictions from a tier' }),
    adapterCacheBytes: meter.createGauge('tessera_adapter_cache_bytes', { description: 'Bytes held by the adapter cache, by tier', unit: 'By' }),
    adapterLoadDuration: histogram('tessera_adapter_load_duration', 'Time to load an adapter into a cache tier', 's', ADAPTER_LOAD_DURATION_BUCKETS_S),
  };
}

/** Starts the meter provider and (unless port is null) the Prometheus endpoint. */
export async function startMetrics(opts: MetricsOptions = {}): Promise<TesseraMetrics> {
  const exporter = new PrometheusExporter({ preventServerStart: true, withoutScopeInfo: true });
  const meterProvider = new MeterProvider({
    readers: [exporter],
    resource: resourceFromAttributes({ [ATTR_SERVICE_NAME]: opts.serviceName ?? 'tessera' }),
  });
  const meter = meterProvider.getMeter('tessera');
  const instruments = createInstruments(meter);
  const stopProcessMetrics = registerProcessMetrics(meter);
  const serializer = new PrometheusSerializer('', false, undefined, false, true);
  let readLoraInfo: (() => LoraInfo) | null = null;
  const handler = (_req: IncomingMessage, res: ServerResponse): void => {
    exporter.collect().then(
      ({ resourceMetrics }) => {
        res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4; charset=utf-8' });
        res.end(serializer.serialize(resourceMetrics) + (readLoraInfo ? loraInfoText(readLoraInfo(), Date.now() / 1000) : ''));
      },
      (err: unknown) => {
        res.writeHead(500, { 'content-type': 'text/plain' });
        res.end(`# failed to export metrics: ${String(err)}\n`);
      },
    );
  };
  const endpoint = opts.endpoint ?? '/metrics';
  let server: Server | null = null;
  let port: number | null = null;
  if (opts.port !== null) {
    server = createServer((req, res) => {
      const path = (req.url ?? '').split('?')[0];
      if (req.method === 'GET' && path === endpoint) handler(req, res);
      else {
        res.statusCode = 404;
        res.end(`not found; metrics are at ${endpoint}\n`);
      }
    });
    const s = server;
    await new Promise<void>((resolve, reject) => {
      s.once('error', reject);
      s.listen(opts.port ?? 9464, opts.host ?? '127.0.0.1', () => {
        s.off('error', reject);
        resolve();
      });
    });
    port = (s.address() as AddressInfo).port;
  }
  let shutdownPromise: Promise<void> | null = null;
  return {
    instruments,
    meter,
    meterProvider,
    port,
    handler,
    setLoraInfo(read) {
      readLoraInfo = read;
    },
    shutdown() {
      shutdownPromise ??= (async () => {
        stopProcessMetrics();
        if (server) {
          const s = server;
          await new Promise<void>((resolve) => s.close(() => resolve()));
        }
        await meterProvider.shutdown();
      })();
      return shutdownPromise;
    },
  };
}

/** Convenience: attributes of an error for tessera_errors. */
export function errorAttributes(grpcStatusName: string, errorCode: string): Attributes {
  return { code: grpcStatusName, error_code: errorCode };
}
