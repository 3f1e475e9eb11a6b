import { SpanKind, SpanStatusCode } from '@opentelemetry/api';
import { InMemorySpanExporter, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-node';
import { describe, expect, it } from 'vitest';
import { TesseraError } from '../errors.ts';
import type { ValidGenerateRequest } from '../engine/request.ts';
import { createLogger } from '../telemetry/logger.ts';
import { parentContextOf, startTracing } from '../telemetry/tracing.ts';
import { createRequestTelemetry } from './request-telemetry.ts';
import { toStatusReply } from './status.ts';

const TRACE_ID = '4bf92f3577b34da6a3ce929d0e0e4736';
const PARENT_ID = '00f067aa0ba902b7';
const logger = createLogger({ level: 'silent' });

const req: ValidGenerateRequest = {
  requestId: 'r1',
  promptTokenIds: [1, 2, 3],
  adapterId: 'alpha',
  tenantId: null,
  sampling: { temperature: 0.7, topK: 5, topP: 0.9, minP: 0, seed: 42, repetitionPenalty: 1, presencePenalty: 0, frequencyPenalty: 0 },
  stopping: { maxNewTokens: 8, stopSequences: ['\n'], stopTokenIds: [], ignoreEos: false },
  topNLogprobs: 0,
  deadlineMs: null,
};

function tracing() {
  const exporter = new InMemorySpanExporter();
  return { exporter, tracing: startTracing({ spanProcessors: [new SimpleSpanProcessor(exporter)], registerGlobal: false }) };
}

describe('request telemetry: spans after the GenAI conventions, under the caller trace', () => {
  it("makes the caller's traceparent the parent of the request span, named `{operation} {model}`, kind SERVER", async () => {
    const { exporter, tracing: t } = tracing();
    const tele = createRequestTelemetry({ method: 'POST /v1/chat/completions', operation: 'chat', modelId: 'tiny', metrics: null, tracer: t.tracer, logger, parent: parentContextOf(`00-${TRACE_ID}-${PARENT_ID}-01`, 'vendor=x') });
    tele.started(req, 'alpha');
    tele.tokens(1);
    tele.tokens(2);
    tele.finished('length', { promptTokens: 3, generatedTokens: 3 });
    const spans = exporter.getFinishedSpans();
    const root = spans.find((s) => s.name === 'chat tiny')!;
    expect(root.kind).toBe(SpanKind.SERVER);
    expect(root.spanContext().traceId).toBe(TRACE_ID);
    expect(root.parentSpanContext?.spanId).toBe(PARENT_ID);
    expect(root.attributes).toMatchObject({
      'gen_ai.operation.name': 'chat',
      'gen_ai.request.model': 'tiny',
      'gen_ai.request.max_tokens': 8,
      'gen_ai.request.temperature': 0.7,
      'gen_ai.request.top_k': 5,
      'gen_ai.request.seed': 42,
      'gen_ai.request.stop_sequences': ['\n'],
      'gen_ai.response.id': 'r1',
      'gen_ai.response.finish_reasons': ['length'],
      'gen_ai.usage.input_tokens': 3,
      'gen_ai.usage.output_tokens': 3,
    });
    expect(spans.filter((s) => s.parentSpanContext?.spanId === root.spanContext().spanId).map((s) => s.name)).toEqual(['queue_and_prefill', 'decode']);
    await t.shutdown();
  });

  it('starts a new trace for a missing or malformed traceparent, and marks failures with error.type', async () => {
    const { exporter, tracing: t } = tracing();
    for (const header of [undefined, 'garbage', `00-${'0'.repeat(32)}-${PARENT_ID}-01`]) {
      const tele = createRequestTelemetry({ method: 'm', modelId: 'tiny', metrics: null, tracer: t.tracer, logger, parent: parentContextOf(header, undefined) });
      tele.failed(toStatusReply(new TesseraError('ADAPTER_NOT_FOUND', 'no such adapter')));
    }
    const spans = exporter.getFinishedSpans().filter((s) => s.name !== 'queue_and_prefill');
    expect(spans).toHaveLength(3);
    for (const s of spans) {
      expect(s.name).toBe('text_completion tiny');
      expect(s.parentSpanContext).toBeUndefined();
      expect(s.attributes['error.type']).toBe('NOT_FOUND');
      expect(s.status.code).toBe(SpanStatusCode.ERROR);
    }
    await t.shutdown();
  });
});
