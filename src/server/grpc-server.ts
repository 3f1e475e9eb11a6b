/**
 * The gRPC server: tessera.v1.Generation, tessera.v1.Adapters, grpc.health.v1.Health (Check and Watch,
 * per service) and server reflection, on one port. Graceful shutdown: health goes NOT_SERVING, new calls
 * get UNAVAILABLE, in-flight requests get `graceMs` to finish and are cancelled after it.
 */
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { ReflectionService } from '@grpc/reflection';
import type { Tracer } from '@opentelemetry/api';
import { HealthImplementation, protoPath as healthProtoPath, type ServingStatus } from 'grpc-health-check';
import type { Logger } from '../telemetry/logger.ts';
import type { TesseraInstruments } from '../telemetry/metrics.ts';
import { createAdaptersHandlers } from './adapters-service.ts';
import type { Authenticator } from './auth.ts';
import type { ServingBackend } from './backend.ts';
import { createGenerationHandlers } from './generation-service.ts';
import { ADAPTERS_SERVICE_NAME, GENERATION_SERVICE_NAME, loadPublicApi } from './proto-loader.ts';
import { createRequestGate, type NotServingReason, type RequestGate } from './request-gate.ts';
import type { RequestLimits } from './request-limits.ts';
import { rejectUndecodableRequests } from './undecodable-request.ts';

/** PEM contents (the composition root reads the files). */
export interface TlsOptions {
  cert: Buffer;
  key: Buffer;
  /** When set, clients must present a certificate signed by this CA (mutual TLS). */
  clientCa?: Buffer | null;
}

export interface GrpcServerOptions {
  backend: ServingBackend;
  /** Default '127.0.0.1'. */
  host?: string;
  /** 0 picks a free port; read it back from the result. */
  port: number;
  limits: RequestLimits;
  /** null: auth off (the caller warns). */
  auth: Authenticator | null;
  tls?: TlsOptions | null;
  logger: Logger;
  metrics?: TesseraInstruments | null;
  tracer?: Tracer | null;
  /** Largest request and reply message; default 4 MiB. */
  maxMessageBytes?: number;
  /** Generation requests in flight at once (beyond: RESOURCE_EXHAUSTED); default 256. */
  maxConcurrentRequests?: number;
  /** Health at start; default true (pass false while the model is still loading). */
  serving?: boolean;
}

export interface RunningGrpcServer {
  /** The bound port. */
  readonly port: number;
  readonly server: grpc.Server;
  /** Admission of generation calls; the HTTP face shares it (one limit, one drain for both faces). */
  readonly gate: RequestGate;
  /** Health of every service and admission of new calls; `reason` picks the error new calls get while not serving. */
  setServing(serving: boolean, reason?: NotServingReason): void;
  readonly numInFlight: number;
  /**
   * Graceful shutdown within `graceMs`; resolves when the server is closed. Idempotent; a later call with a shorter
   * grace cuts the wait short (a second signal: cancel what is still in flight now).
   */
  shutdown(graceMs: number): Promise<void>;
}

/** Health service names: '' is the whole server. */
const HEALTH_SERVICES = ['', GENERATION_SERVICE_NAME, ADAPTERS_SERVICE_NAME] as const;

function credentialsOf(tls: TlsOptions | null | undefined): grpc.ServerCredentials {
  if (!tls) return grpc.ServerCredentials.createInsecure();
  const clientCa = tls.clientCa ?? null;
  return grpc.ServerCredentials.createSsl(clientCa, [{ private_key: tls.key, cert_chain: tls.cert }], clientCa !== null);
}

export async function startGrpcServer(opts: GrpcServerOptions): Promise<RunningGrpcServer> {
  const host = opts.host ?? '127.0.0.1';
  const maxMessageBytes = opts.maxMessageBytes ?? 4 * 1024 * 1024;
  const logger = opts.logger;
  const metrics = opts.metrics ?? null;
  const gate = createRequestGate({ maxConcurrentRequests: opts.maxConcurrentRequests ?? 256, serving: opts.serving ?? true });
  const api = loadPublicApi();

  const server = new grpc.Server({
    'grpc.max_receive_message_length': maxMessageBytes,
    'grpc.max_send_message_length': maxMessageBytes,
  });
  const generation = rejectUndecodableRequests(
    api.generationService,
    createGenerationHandlers({ backend: opts.backend, limits: opts.limits, auth: opts.auth, gate, logger, metrics, tracer: opts.tracer ?? null }),
    { metrics },
  );
  server.addService(generation.service, generation.impl);
  const adapters = rejectUndecodableRequests(
    api.adaptersService,
    createAdaptersHandlers({ adapters: opts.backend.adapters, limits: opts.limits, auth: opts.auth, gate, logger, metrics }),
    { metrics },
  );
  server.addService(adapters.service, adapters.impl);

  const health = new HealthImplementation();
  const setHealth = (status: ServingStatus): void => {
    for (const name of HEALTH_SERVICES) health.setStatus(name, status);
  };
  setHealth(gate.serving ? 'SERVING' : 'NOT_SERVING');
  // The health service's own deserializer throws on garbage bytes (grpc-js: INTERNAL); answer INVALID_ARGUMENT instead.
  health.addToServer({
    addService: (service: grpc.ServiceDefinition, impl: grpc.UntypedServiceImplementation) => {
      const checked = rejectUndecodableRequests(service, impl, { metrics });
      server.addService(checked.service, checked.impl);
    },
  } as grpc.Server);

  // Reflection describes our services and the health service, so generic tools see everything served.
  const healthDefinition = protoLoader.loadSync(healthProtoPath, { keepCase: true, longs: String, enums: String, defaults: true, oneofs: true });
  new ReflectionService({ ...healthDefinition, ...api.packageDefinition }).addToServer(server);

  const address = host.includes(':') && !host.startsWith('[') ? `[${host}]:${opts.port}` : `${host}:${opts.port}`;
  const port = await new Promise<number>((resolve, reject) => {
    server.bindAsync(address, credentialsOf(opts.tls), (err, bound) => (err ? reject(err) : resolve(bound)));
  });

  let shutdownPromise: Promise<void> | null = null;
  let shutdownGraceMs = Infinity;
  return {
    port,
    server,
    gate,
    get numInFlight() {
      return gate.numInFlight;
    },
    setServing(serving, reason) {
      if (shutdownPromise) return;
      gate.setServing(serving, reason);
      setHealth(serving ? 'SERVING' : 'NOT_SERVING');
    },
    shutdown(graceMs) {
      if (shutdownPromise !== null && graceMs < shutdownGraceMs) {
        shutdownGraceMs = graceMs;
        void gate.drain(graceMs);
      }
      shutdownGraceMs = Math.min(shutdownGraceMs, graceMs);
      shutdownPromise ??= (async () => {
        setHealth('NOT_SERVING');
        const inFlight = gate.numInFlight;
        logger.info({ inFlight, graceMs }, 'draining');
        const aborted = await gate.drain(graceMs);
        if (aborted > 0) logger.warn({ aborted, graceMs }, 'drain deadline passed; cancelled the requests still running');
        // Let the last replies (and cancellations) flush, then close; Watch streams would keep tryShutdown waiting.
        await new Promise<void>((resolve) => {
          const timer = setTimeout(() => {
            server.forceShutdown();
            resolve();
          }, 250);
          server.tryShutdown(() => {
            clearTimeout(timer);
            resolve();
          });
        });
        logger.info('gRPC server stopped');
      })();
      return shutdownPromise;
    },
  };
}
