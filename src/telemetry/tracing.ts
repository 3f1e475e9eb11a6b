/**
 * Tracing: a NodeTracerProvider with one span per request (children for queue + prefill and decode,
 * made by the server) exported over OTLP/gRPC when an endpoint is configured.
 *
 * gRPC auto-instrumentation (@opentelemetry/instrumentation-grpc) patches @grpc/grpc-js when it is
 * loaded; call `registerGrpcInstrumentation` before anything imports @grpc/grpc-js. Under ESM the patch
 * additionally needs the loader hook (`node --import @opentelemetry/instrumentation/hook.mjs`), which
 * the composition root decides on.
 */
import { context as otelContext, ROOT_CONTEXT, trace, type Context, type TextMapGetter, type Tracer } from '@opentelemetry/api';
import { W3CTraceContextPropagator } from '@opentelemetry/core';
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-grpc';
import { registerInstrumentations } from '@opentelemetry/instrumentation';
import { GrpcInstrumentation } from '@opentelemetry/instrumentation-grpc';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { BatchSpanProcessor, NodeTracerProvider, type SpanProcessor } from '@opentelemetry/sdk-trace-node';
import { ATTR_SERVICE_NAME, ATTR_SERVICE_VERSION } from '@opentelemetry/semantic-conventions';

export interface TracingOptions {
  /** Default 'tessera'. */
  serviceName?: string;
  serviceVersion?: string;
  /** OTLP/gRPC collector URL (e.g. http://otel-collector:4317); null/undefined exports nothing over OTLP. */
  otlpEndpoint?: string | null;
  /** Extra processors (tests pass a SimpleSpanProcessor over an InMemorySpanExporter). */
  spanProcessors?: SpanProcessor[];
  /** Register as the global tracer provider (default true). */
  registerGlobal?: boolean;
}

export interface Tracing {
  readonly tracer: Tracer;
  readonly provider: NodeTracerProvider;
  /** Whether spans leave the process over OTLP. */
  readonly exporting: boolean;
  /** Flushes and stops. Idempotent. */
  shutdown(): Promise<void>;
}

export function startTracing(opts: TracingOptions = {}): Tracing {
  const serviceName = opts.serviceName ?? 'tessera';
  const processors: SpanProcessor[] = [...(opts.spanProcessors ?? [])];
  const exporting = typeof opts.otlpEndpoint === 'string' && opts.otlpEndpoint !== '';
  if (exporting) processors.push(new BatchSpanProcessor(new OTLPTraceExporter({ url: opts.otlpEndpoint! })));
  const provider = new NodeTracerProvider({
    resource: resourceFromAttributes({ [ATTR_SERVICE_NAME]: serviceName, ...(opts.serviceVersion ? { [ATTR_SERVICE_VERSION]: opts.serviceVersion } : {}) }),
    spanProcessors: processors,
  });
  if (opts.registerGlobal ?? true) provider.register();
  let shutdownPromise: Promise<void> | null = null;
  return {
    tracer: provider.getTracer(serviceName),
    provider,
    exporting,
    shutdown() {
      shutdownPromise ??= provider.shutdown().then(() => {
        if (opts.registerGlobal ?? true) trace.disable();
      });
      return shutdownPromise;
    },
  };
}

/** Enables gRPC client/server spans; returns a function that disables them again. */
export function registerGrpcInstrumentation(): () => void {
  return registerInstrumentations({ instrumentations: [new GrpcInstrumentation()] });
}

const w3c = new W3CTraceContextPropagator();
const headerGetter: TextMapGetter<Record<string, string>> = {
  keys: (carrier) => Object.keys(carrier),
  get: (carrier, key) => carrier[key],
};

/**
 * The caller's W3C trace context (`traceparent`, `tracestate`, from gRPC metadata or HTTP headers) as the parent
 * context of Tessera's request span; the active context when there is none or it is malformed (the spec says to
 * ignore an invalid traceparent and start a new trace).
 */
export function parentContextOf(traceparent: string | undefined, tracestate: string | undefined): Context {
  if (traceparent === undefined || traceparent === '') return otelContext.active();
  const carrier: Record<string, string> = { traceparent };
  if (tracestate !== undefined && tracestate !== '') carrier.tracestate = tracestate;
  return w3c.extract(ROOT_CONTEXT, carrier, headerGetter);
}
