import { cpuKernelFeatures } from '../model/cpu-features.ts';
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import pino from 'pino';
import { TesseraError } from '../errors.ts';
import { createEngine, type Engine } from '../engine/engine.ts';
import type { Executor, StepPlan } from '../engine/executor.ts';
import { readManifest } from '../model/converted-model.ts';
import { resolveRunnerKind } from '../model/runner/runner-kind.ts';
import type { Device } from '../model/runner/step-runner.ts';
import { createAdapterManager, type AdapterManager } from '../adapters/adapter-manager.ts';
import { createVtcPolicy, meterOutput } from '../engine/scheduler/scheduler-policy-vtc.ts';
import { systemClock } from '../engine/clock.ts';
import { loadTokenizer, type Tokenizer } from '../model/tokenizer/tokenizer.ts';
import { TokenizerThread } from '../model/tokenizer/tokenizer-thread.ts';
import { ShardController } from '../parallel/controller.ts';
import { grpcLinks } from '../parallel/shard-link.ts';
import { loadApiKeyFile } from '../server/auth.ts';
import type { ServingBackend } from '../server/backend.ts';
import { startGrpcServer, type RunningGrpcServer } from '../server/grpc-server.ts';
import { startHttpServer, type RunningHttpServer } from '../server/http/http-server.ts';
import { resolveRequestLimits } from '../server/request-limits.ts';
import { componentLogger, createLogger, type Logger } from '../telemetry/logger.ts';
import { startMetrics, type TesseraMetrics } from '../telemetry/metrics.ts';
import { startTracing, type Tracing } from '../telemetry/tracing.ts';
import type { ServeConfig } from './config.ts';
import { shardClientSecurity } from './shard-security.ts';
import { resolveModelDir } from './model-resolver.ts';
import { preflightServeConfig } from './preflight.ts';

export interface RunningServer {
  readonly host: string;
  readonly port: number;
  readonly metricsPort: number | null;
  /** Port of the OpenAI-compatible HTTP face, or null when it is off. */
  readonly httpPort: number | null;
  readonly modelDir: string;
  readonly engine: Engine;
  readonly executor: ShardController;
  /** The gRPC server (health, admission, calls in flight). */
  readonly grpc: RunningGrpcServer;
  readonly logger: Logger;
  /** Health NOT_SERVING, refuse new calls, let in-flight ones finish until the drain deadline, then stop. Idempotent. */
  drain(deadlineMs?: number): Promise<void>;
  /** Stops at once (in-flight calls are cancelled), also during a drain, which it cuts short. Idempotent. */
  shutdown(): Promise<void>;
}

export interface StartServerOptions {
  /** Where JSON logs go (default: stderr, so stdout carries only the `listening on` line). */
  logDestination?: pino.DestinationStream;
  /** Lines for a person (default: nothing). */
  announce?: (line: string) => void;
  /** Facts settled before the server started (e.g. which ONNX Runtime build and CUDA libraries), logged once. */
  startupLog?: Record<string, unknown>;
}

const STATS_INTERVAL_MS = 500;
const DRAIN_REPLY_GRACE_MS = 500;

/**
 * The composition root of `tessera serve`: resolves the model, starts the model worker, the engine, telemetry and the
 * gRPC server, and wires them together. Tests start it on 127.0.0.1:0 and read `port` back.
 */
export async function startServer(config: ServeConfig, options: StartServerOptions = {}): Promise<RunningServer> {
  const logger = createLogger({ level: config.logLevel as pino.LevelWithSilent, traceComponents: config.traceComponents, destination: options.logDestination ?? pino.destination(2) });
  const log = componentLogger(logger, 'serve');
  preflightServeConfig(config);
  if (options.startupLog) {
    log.info(options.startupLog, 'execution provider');
    for (const warning of (options.startupLog.warnings as string[] | undefined) ?? []) log.warn(warning);
  }
  const modelDir = await resolveModelDir({ model: config.model ?? undefined, quant: config.quant as 'int4', outlierFraction: config.outliers, int4AccuracyLevel: config.int4Accuracy === 0 ? 0 : 4, log: (line) => log.info(line) });
  const manifest = readManifest(modelDir);
  const tokenizer = loadTokenizer(modelDir, { vocabSize: manifest.config.vocabSize });
  if (!tokenizer) log.warn({ modelDir }, 'model has no tokenizer.json: only token-id prompts are accepted');

  const cleanups: Array<() => Promise<void> | void> = [];
  const cleanup = async () => {
    for (const fn of cleanups.reverse()) await fn();
    cleanups.length = 0;
  };
  try {
    let grpcServer: RunningGrpcServer | null = null;
    let workersHealthy = true;
    let draining = false;
    if (config.workers.length > 0 && config.workers.length !== config.tp * config.pp) {
      throw new TesseraError('CONFIG_INVALID', `--workers lists ${config.workers.length} addresses; --tp ${config.tp} x --pp ${config.pp} needs ${config.tp * config.pp}`);
    }
    const workerSecurity = shardClientSecurity(config);
    if (config.workers.length > 0) {
      log.info({ controllerId: workerSecurity.controllerId, tls: workerSecurity.tls !== null, mutualTls: workerSecurity.tls?.cert != null, secret: workerSecurity.secret !== null }, 'leasing remote shard workers');
      if (!workerSecurity.tls && !workerSecurity.secret) log.warn('remote shard workers without TLS or a shared secret (--worker-tls-ca, --worker-secret-file): the shard link is plaintext and unauthenticated');
    }
    const executor = await ShardController.start({
      modelDir,
      tp: config.tp,
      pp: config.pp,
      ...(config.workers.length > 0 ? { openLink: grpcLinks(config.workers, { security: workerSecurity }) } : {}),
      ...(config.workerModelDir ? { workerModelDir: config.workerModelDir } : {}),
      // A worker down (restarting or reconnecting) makes health NOT_SERVING until the shard group is whole again.
      onHealth: (serving) => {
        workersHealthy = serving;
        log.warn({ serving }, serving ? 'shard group whole again' : 'a shard worker is down');
        grpcServer?.setServing(serving && !draining, draining ? 'stopping' : 'worker-down');
      },
      device: config.device as Device,
      intraOpThreads: config.intraOpThreads ?? undefined,
      intraOpSpinning: config.intraOpSpinning,
      kvCacheBytes: config.kvCacheBytes,
      blockSizeTokens: config.kvBlockTokens,
      numAdapterSlots: config.adapterSlots + 1,
      maxAdapterRank: config.maxAdapterRank,
      // Resolved once here from the config and carried to the worker in its ShardSpec.
      runnerKind: resolveRunnerKind({ device: config.device as Device, decodeStepsPerRun: config.decodeStepsPerRun, tp: config.tp, pp: config.pp, remoteWorkers: config.workers.length > 0 }),
    });
    cleanups.push(() => executor.shutdown());
    // The CPU features name the kernel path every number of this server comes from (src/model/cpu-features.ts).
    log.info({ modelId: executor.modelId, ...executor.memory, layout: executor.layout, cpu: cpuKernelFeatures() }, 'model worker ready');

    let metrics: TesseraMetrics | null = null;
    if (config.metricsPort !== null) {
      metrics = await startMetrics({ port: config.metricsPort, host: config.metricsHost });
      cleanups.push(() => metrics!.shutdown());
    }
    const tracing: Tracing = startTracing({ otlpEndpoint: config.otlpEndpoint, registerGlobal: false });
    cleanups.push(() => tracing.shutdown());

    const limits = resolveRequestLimits({
      vocabSize: manifest.config.vocabSize,
      maxContextTokens: manifest.config.maxPositionEmbeddings,
      ...(config.maxPromptTokens !== null ? { maxPromptTokens: config.maxPromptTokens } : {}),
      ...(config.maxNewTokens !== null ? { maxNewTokens: config.maxNewTokens } : {}),
    });
    let adapters: AdapterManager | null = null;
    if (config.adapterSlots > 0) {
      const roots = [...config.adaptersDir, ...config.adapterRoots].map((d) => resolve(d));
      adapters = createAdapterManager({
        slots: executor,
        config: manifest.config,
        modelId: manifest.modelId,
        numSlots: config.adapterSlots + 1,
        maxRank: config.maxAdapterRank,
        hostCacheBytes: config.adapterHostCacheBytes,
        allowedRoots: roots,
        ...(config.maxPinnedAdaptersPerTenant !== null ? { maxPinnedPerTenant: config.maxPinnedAdaptersPerTenant } : {}),
        ...(metrics ? { metrics: metrics.instruments } : {}),
        logger: componentLogger(logger, 'adapters'),
      });
      const manager = adapters;
      cleanups.push(() => manager.shutdown());
      for (const dir of config.adaptersDir) {
        const ids = manager.registerDirectory(resolve(dir), { tenantId: null });
        log.info({ dir, adapters: ids }, 'registered adapters (shared by all tenants)');
      }
    }
    // Per-tenant fair share: S-LoRA's virtual token counter decides admission order.
    const fairShare = createVtcPolicy();
    const engine = createEngine({
      admissionPolicy: fairShare,
      // Every engine step passes through execute(): its plan's sequence count is the batch size.
      executor: metrics ? observeSteps(executor, (plan) => metrics!.instruments.batchSize.record(plan.sequences.length)) : executor,
      detokenizer: tokenizer,
      eosTokenIds: manifest.config.eosTokenIds,
      maxBatchTokens: config.maxBatchTokens,
      prefillChunkTokens: config.prefillChunkTokens,
      maxRunningSequences: config.maxRunningSequences,
      maxQueuedRequests: config.maxQueuedRequests,
      decodeStepsPerRun: config.decodeStepsPerRun,
      adapterSlots: adapters,
      limits: { maxNewTokens: limits.maxNewTokens, maxStopSequences: limits.maxStopSequences, maxTopNLogprobs: limits.maxTopNLogprobs },
    });
    cleanups.push(() => engine.shutdown());
    const tokenizerThread = tokenizer ? await TokenizerThread.start({ modelDir, vocabSize: manifest.config.vocabSize }) : null;
    if (tokenizerThread) cleanups.push(() => tokenizerThread.close());

    const backend: ServingBackend = {
      submit: (req, opts) => meterOutput(fairShare, req.tenantId, engine.submit(req, opts), systemClock),
      nowMs: () => Date.now(),
      encoder: tokenizer && tokenizerThread ? promptEncoder(tokenizer, tokenizerThread) : null,
      ...(tokenizer ? { tokenText: (id: number) => tokenizer.decode([id]) } : {}),
      modelInfo: {
        modelId: manifest.modelId,
        modelType: manifest.config.modelType,
        quantization: manifest.quant.kind,
        vocabSize: manifest.config.vocabSize,
        maxContextTokens: manifest.config.maxPositionEmbeddings,
        eosTokenIds: manifest.config.eosTokenIds,
        maxAdapterRank: config.adapterSlots > 0 ? config.maxAdapterRank : 0,
      },
      adapters,
    };

    const auth = config.apiKeysFile ? await loadApiKeyFile(config.apiKeysFile) : null;
    if (!auth) log.warn('no API key file configured (--api-keys): authentication is OFF, every caller is trusted');
    const tls = config.tlsCert && config.tlsKey
      ? { cert: readFileSync(config.tlsCert), key: readFileSync(config.tlsKey), clientCa: config.tlsClientCa ? readFileSync(config.tlsClientCa) : null }
      : null;

    const grpc: RunningGrpcServer = await startGrpcServer({
      serving: workersHealthy,
      backend,
      host: config.host,
      port: config.port,
      limits,
      auth,
      tls,
      logger: componentLogger(logger, 'grpc'),
      metrics: metrics?.instruments ?? null,
      tracer: tracing.tracer,
      maxMessageBytes: config.maxMessageBytes,
      maxConcurrentRequests: config.maxConcurrentRequests,
    });
    cleanups.push(() => grpc.shutdown(0));
    grpcServer = grpc;

    // The OpenAI-compatible face: same backend, auth, limits, and the gRPC server's admission gate.
    let http: RunningHttpServer | null = null;
    if (config.httpPort !== null) {
      const running = await startHttpServer({
        backend,
        host: config.host,
        port: config.httpPort,
        limits,
        auth,
        gate: grpc.gate,
        logger: componentLogger(logger, 'http'),
        metrics: metrics?.instruments ?? null,
        tracer: tracing.tracer,
        maxBodyBytes: config.maxMessageBytes,
        requestTimeoutMs: config.httpRequestTimeoutMs,
        metricsHandler: metrics ? (req, res) => metrics!.handler(req, res) : null,
      });
      http = running;
      cleanups.push(() => running.shutdown(0));
    }

    if (metrics && adapters) {
      // The inference gateway's LoRA affinity reads which adapters each replica runs and queues.
      metrics.setLoraInfo(() => ({ maxLora: config.adapterSlots, ...engine.adapterActivity() }));
    }
    if (metrics) {
      const instruments = metrics.instruments;
      const sample = (): void => {
        const stats = engine.stats();
        instruments.queueLength.record(stats.queued);
        instruments.runningSequences.record(stats.running);
        instruments.kvUsageRatio.record(stats.kvBlocksTotal > 0 ? stats.kvBlocksUsed / stats.kvBlocksTotal : 0);
      };
      sample(); // the gauges exist from the first scrape on
      const timer = setInterval(sample, STATS_INTERVAL_MS);
      timer.unref();
      cleanups.push(() => clearInterval(timer));
    }

    let stopping: Promise<void> | null = null;
    const stop = (deadlineMs: number | null) => {
      if (stopping !== null && deadlineMs === null) {
        // shutdown() during a drain: cut the drain short; what is still running is cancelled now.
        log.warn('stopping now: cancelling the requests still draining');
        void engine.drain(Date.now());
        void grpc.shutdown(0);
        void http?.shutdown(0);
      }
      stopping ??= (async () => {
        draining = true;
        if (deadlineMs !== null) {
          log.info({ deadlineMs }, 'draining: health NOT_SERVING, new requests UNAVAILABLE');
          // The gRPC server stops admitting (health NOT_SERVING, DRAINING) and waits for its calls; the engine
          // finishes what it holds. Both stop at the deadline; whatever is left then is cancelled.
          // The gRPC grace outlasts the engine deadline a little, so requests the engine cancels at the deadline still
          // reach their clients as UNAVAILABLE (DRAINING) rather than being cut off as CANCELLED.
          const graceMs = Math.max(0, deadlineMs - Date.now()) + DRAIN_REPLY_GRACE_MS;
          await Promise.all([grpc.shutdown(graceMs), http?.shutdown(graceMs), engine.drain(deadlineMs)]);
        } else {
          grpc.setServing(false, 'stopping');
        }
        await cleanup();
        log.info('stopped');
      })();
      return stopping;
    };
    log.info({ host: config.host, port: grpc.port, httpPort: http?.port ?? null, metricsPort: metrics?.port ?? null, auth: auth !== null, tls: tls !== null }, 'serving');
    options.announce?.(`listening on ${config.host}:${grpc.port}`);
    if (http) options.announce?.(`http listening on ${config.host}:${http.port}`);
    if (metrics?.port != null) options.announce?.(`metrics listening on ${config.metricsHost}:${metrics.port}`);
    return {
      host: config.host,
      port: grpc.port,
      metricsPort: metrics?.port ?? null,
      httpPort: http?.port ?? null,
      modelDir,
      engine,
      executor,
      grpc,
      logger,
      drain: (deadlineMs) => stop(deadlineMs ?? Date.now() + config.drainTimeoutMs),
      shutdown: () => stop(null),
    };
  } catch (err) {
    await cleanup();
    throw err;
  }
}

/** The executor with `onStep` called for every plan before it runs (the engine sees no difference). */
function observeSteps(executor: Executor, onStep: (plan: StepPlan) => void): Executor {
  return {
    get layout() {
      return executor.layout;
    },
    execute(plan) {
      onStep(plan);
      return executor.execute(plan);
    },
    shutdown: () => executor.shutdown(),
  };
}

/** Prompts are tokenized in the tokenizer thread; the main thread's tokenizer only detokenizes. */
function promptEncoder(tokenizer: Tokenizer, thread: TokenizerThread): ServingBackend['encoder'] {
  return {
    encode: (text, opts) => thread.encodeText(text, opts),
    encodeChat: tokenizer.chatTemplate ? (messages, opts) => thread.encodeChat(messages, opts) : null,
    maxBytesPerToken: tokenizer.maxBytesPerToken,
  };
}
