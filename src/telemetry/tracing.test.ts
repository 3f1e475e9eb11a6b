import { context, trace } from '@opentelemetry/api';
import { InMemorySpanExporter, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-node';
import { describe, expect, it } from 'vitest';
import { startTracing } from './tracing.ts';

describe('tracing', () => {
  it('records a request span with child spans', async () => {
    const exporter = new InMemorySpanExporter();
    const tracing = startTracing({ spanProcessors: [new SimpleSpanProcessor(exporter)], registerGlobal: false });
    expect(tracing.exporting).toBe(false);
    const root = tracing.tracer.startSpan('tessera.v1.Generation/Generate', { attributes: { 'tessera.request_id': 'r1' } });
    const ctx = trace.setSpan(context.active(), root);
    tracing.tracer.startSpan('queue_and_prefill', {}, ctx).end();
    tracing.tracer.startSpan('decode', {}, ctx).end();
    root.end();
    const spans = exporter.getFinishedSpans();
    expect(spans.map((s) => s.name)).toEqual(['queue_and_prefill', 'decode', 'tessera.v1.Generation/Generate']);
    const rootId = spans[2].spanContext().spanId;
    expect(spans[0].parentSpanContext?.spanId).toBe(rootId);
    expect(spans[1].parentSpanContext?.spanId).toBe(rootId);
    expect(spans[2].resource.attributes['service.name']).toBe('tessera');
    await tracing.shutdown();
    await tracing.shutdown();
  });

  it('sets up an OTLP exporter when an endpoint is given', async () => {
    const tracing = startTracing({ otlpEndpoint: 'http://127.0.0.1:1', registerGlobal: false });
    expect(tracing.exporting).toBe(true);
    await tracing.shutdown();
  });
});
