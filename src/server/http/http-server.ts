/**
 * The OpenAI-compatible HTTP face on its own port (node:http): routes, slow-client timeouts, and a graceful shutdown
 * that shares the gRPC server's RequestGate (one admission limit and one drain for both faces).
 *
 *   POST /v1/completions, POST /v1/chat/completions, GET /v1/models[/{id}]   OpenAI API (auth as gRPC)
 *   GET /health     200 while serving, 503 while loading or draining (no auth)
 *   GET /metrics    the Prometheus text of the metrics endpoint, when metrics are on (no auth; the inference
 *                   gateway's endpoint picker scrapes the serving port)
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Tracer } from '@opentelemetry/api';
import type { Logger } from '../../telemetry/logger.ts';
import type { TesseraInstruments } from '../../telemetry/metrics.ts';
import type { Authenticator } from '../auth.ts';
import type { ServingBackend } from '../backend.ts';
import type { RequestGate } from '../request-gate.ts';
import type { RequestLimits } from '../request-limits.ts';
import { protocolError } from './http-errors.ts';
import { sendError, sendJson } from './http-io.ts';
import { handleGeneration, handleModels, type OpenAiRoutesDeps } from './openai-routes.ts';

export interface HttpServerOptions {
  backend: ServingBackend;
  /** Default '127.0.0.1'. */
  host?: string;
  /** 0 picks a free port; read it back from the result. */
  port: number;
  limits: RequestLimits;
  auth: Authenticator | null;
  /** The gRPC server's gate: both faces count against one limit and drain together. */
  gate: RequestGate;
  logger: Logger;
  metrics?: TesseraInstruments | null;
  tracer?: Tracer | null;
  /** Largest request body; default 4 MiB (the gRPC message limit). */
  maxBodyBytes?: number;
  /** Time a client has to send a whole request (headers and body); default 30 s. Beyond: 408. */
  requestTimeoutMs?: number;
  /** A streaming reader that reads nothing this long is disconnected (its request cancelled); default 30 s. */
  stallTimeoutMs?: number;
  /** Serves GET /metrics when set (the Prometheus exporter's handler). */
  metricsHandler?: ((req: IncomingMessage, res: ServerResponse) => void) | null;
}

export interface RunningHttpServer {
  readonly port: number;
  /**
   * Stops accepting, lets requests in flight finish within `graceMs` (the gate drains both faces), then closes.
   * Idempotent; a later call with a shorter grace cancels what is still in flight now.
   */
  shutdown(graceMs: number): Promise<void>;
}

const MODELS_PATH = /^\/v1\/models(?:\/(.+))?$/;

export async function startHttpServer(opts: HttpServerOptions): Promise<RunningHttpServer> {
  const logger = opts.logger;
  const requestTimeoutMs = opts.requestTimeoutMs ?? 30_000;
  const deps: OpenAiRoutesDeps = {
    backend: opts.backend,
    limits: opts.limits,
    auth: opts.auth,
    gate: opts.gate,
    logger,
    metrics: opts.metrics ?? null,
    tracer: opts.tracer ?? null,
    maxBodyBytes: opts.maxBodyBytes ?? 4 * 1024 * 1024,
    stallTimeoutMs: opts.stallTimeoutMs ?? 30_000,
    startedAtS: Math.floor(Date.now() / 1000),
  };

  const route = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const path = (req.url ?? '/').split('?')[0];
    const method = req.method ?? 'GET';
    const allow = (methods: string): boolean => {
      if (methods.split(', ').includes(method)) return true;
      sendError(res, protocolError(405, `${method} is not allowed on ${path}; use ${methods}`), { allow: methods });
      return false;
    };
    if (path === '/v1/completions' || path === '/v1/chat/completions') {
      if (allow('POST')) await handleGeneration(deps, path === '/v1/completions' ? 'completions' : 'chat', req, res);
      return;
    }
    const models = MODELS_PATH.exec(path);
    if (models) {
      if (allow('GET')) await handleModels(deps, req, res, models[1] === undefined ? null : decodeURIComponent(models[1]));
      return;
    }
    if (path === '/health') {
      if (allow('GET')) sendJson(res, opts.gate.serving ? 200 : 503, { status: opts.gate.serving ? 'SERVING' : 'NOT_SERVING' });
      return;
    }
    if (path === '/metrics' && opts.metricsHandler) {
      if (allow('GET')) opts.metricsHandler(req, res);
      return;
    }
    sendError(res, protocolError(404, `no route ${method} ${path}; the API is POST /v1/completions, POST /v1/chat/completions, GET /v1/models`));
  };

  const server: Server = createServer(
    {
      requestTimeout: requestTimeoutMs,
      headersTimeout: Math.min(requestTimeoutMs, 60_000),
      // How often Node checks the two timeouts above (its default, 30 s, would let a short timeout run long).
      connectionsCheckingInterval: Math.max(50, Math.min(1000, Math.floor(requestTimeoutMs / 4))),
      keepAliveTimeout: 5_000,
    },
    (req, res) => {
      route(req, res).catch((err: unknown) => {
        logger.error({ err }, 'HTTP handler failed');
        if (!res.headersSent) sendError(res, protocolError(500, 'internal error; details are in the server log'));
        else res.destroy();
      });
    },
  );
  server.on('clientError', (err, socket) => {
    // Malformed HTTP gets a plain 400; a request not received within requestTimeoutMs a 408. Then the connection closes.
    const code = (err as NodeJS.ErrnoException).code;
    const status = code === 'ERR_HTTP_REQUEST_TIMEOUT' ? '408 Request Timeout' : '400 Bad Request';
    if (socket.writable && code !== 'ECONNRESET') socket.end(`HTTP/1.1 ${status}\r\nconnection: close\r\ncontent-length: 0\r\n\r\n`);
    else socket.destroy();
  });

  const host = opts.host ?? '127.0.0.1';
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const port = (server.address() as AddressInfo).port;

  let shutdownPromise: Promise<void> | null = null;
  let shutdownGraceMs = Infinity;
  return {
    port,
    shutdown(graceMs) {
      // A later call with a shorter grace (a second signal) cuts the wait short, as the gRPC server's does.
      if (shutdownPromise !== null && graceMs < shutdownGraceMs) void opts.gate.drain(graceMs);
      shutdownGraceMs = Math.min(shutdownGraceMs, graceMs);
      shutdownPromise ??= (async () => {
        const closed = new Promise<void>((resolve) => server.close(() => resolve()));
        server.closeIdleConnections();
        await opts.gate.drain(graceMs);
        // Replies of cancelled requests need a moment to leave; then whatever is still open is cut.
        const timer = setTimeout(() => server.closeAllConnections(), 250);
        await closed;
        clearTimeout(timer);
        logger.info('HTTP server stopped');
      })();
      return shutdownPromise;
    },
  };
}
