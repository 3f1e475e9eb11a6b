import { get } from 'node:http';
import { afterEach, describe, expect, it } from 'vitest';
import { startMetrics, TIME_PER_OUTPUT_TOKEN_BUCKETS_S, TIME_TO_FIRST_TOKEN_BUCKETS_S, type TesseraMetrics } from './metrics.ts';

function scrape(port: number, path = '/metrics'): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    get({ host: '127.0.0.1', port, path }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    }).on('error', reject);
  });
}

/** `le` values of a histogram's buckets in the exposition text. */
function bucketBounds(body: string, name: string): number[] {
  return [...body.matchAll(new RegExp(`^${name}_bucket\\{[^}]*le="([^"]+)"[^}]*\\} `, 'gm'))].map((m) => (m[1] === '+Inf' ? Infinity : Number(m[1])));
}

/** Value of the first sample of a series name, whatever its labels. */
function sample(body: string, name: string): number | undefined {
  const line = body.split('\n').find((l) => l.startsWith(`${name} `) || l.startsWith(`${name}{`));
  return line === undefined ? undefined : Number(line.slice(line.lastIndexOf(' ') + 1));
}

let metrics: TesseraMetrics | null = null;
afterEach(async () => {
  await metrics?.shutdown();
  metrics = null;
});

describe('metrics endpoint', () => {
  it('listens on port 0, reads the port back and serves 404 elsewhere', async () => {
    metrics = await startMetrics({ port: 0 });
    expect(metrics.port).toBeGreaterThan(0);
    expect((await scrape(metrics.port!, '/nope')).status).toBe(404);
    expect((await scrape(metrics.port!)).status).toBe(200);
  });

  it('exposes the GenAI histograms with the spec buckets and counts after recording', async () => {
    metrics = await startMetrics({ port: 0 });
    const { instruments: m } = metrics;
    const attrs = { 'gen_ai.operation.name': 'text_completion' };
    m.requestDuration.record(0.3, attrs);
    m.requestDuration.record(1.7, attrs);
    m.timeToFirstToken.record(0.03, attrs);
    m.timePerOutputToken.record(0.012, attrs);
    m.timePerOutputToken.record(0.2, attrs);
    m.timePerOutputToken.record(3, attrs);
    m.tokens.add(12, { direction: 'input' });
    m.tokens.add(5, { direction: 'output' });
    m.errors.add(1, { code: 'RESOURCE_EXHAUSTED', error_code: 'QUEUE_FULL' });
    m.queueLength.record(3);
    m.kvUsageRatio.record(0.25);
    m.batchSize.record(6);

    const { status, body } = await scrape(metrics.port!);
    expect(status).toBe(200);
    expect(bucketBounds(body, 'gen_ai_server_time_to_first_token')).toEqual([...TIME_TO_FIRST_TOKEN_BUCKETS_S, Infinity]);
    expect(bucketBounds(body, 'gen_ai_server_time_per_output_token')).toEqual([...TIME_PER_OUTPUT_TOKEN_BUCKETS_S, Infinity]);
    expect(body).toMatch(/^gen_ai_server_request_duration_count\{gen_ai_operation_name="text_completion"\} 2$/m);
    expect(body).toMatch(/^gen_ai_server_request_duration_sum\{gen_ai_operation_name="text_completion"\} 2$/m);
    expect(body).toMatch(/^gen_ai_server_time_to_first_token_count\{[^}]*\} 1$/m);
    // 0.012 falls in (0.01, 0.025]; 3 only in +Inf.
    expect(body).toMatch(/^gen_ai_server_time_per_output_token_bucket\{[^}]*le="0.01"\} 0$/m);
    expect(body).toMatch(/^gen_ai_server_time_per_output_token_bucket\{[^}]*le="0.025"\} 1$/m);
    expect(body).toMatch(/^gen_ai_server_time_per_output_token_bucket\{[^}]*le="2.5"\} 2$/m);
    expect(body).toMatch(/^gen_ai_server_time_per_output_token_bucket\{[^}]*le="\+Inf"\} 3$/m);
    expect(body).toMatch(/^tessera_tokens_total\{direction="input"\} 12$/m);
    expect(body).toMatch(/^tessera_tokens_total\{direction="output"\} 5$/m);
    expect(body).toMatch(/^tessera_errors_total\{code="RESOURCE_EXHAUSTED",error_code="QUEUE_FULL"\} 1$/m);
    expect(body).toMatch(/^tessera_queue_length 3$/m);
    expect(body).toMatch(/^tessera_kv_usage_ratio(_ratio)? 0.25$/m);
    expect(sample(body, 'tessera_batch_size_count')).toBe(1);
    expect(body).toMatch(/^target_info\{service_name="tessera"/m);
  });

  it('serves nothing over HTTP with port null, and shutdown is idempotent', async () => {
    metrics = await startMetrics({ port: null });
    expect(metrics.port).toBeNull();
    await metrics.shutdown();
    await metrics.shutdown();
  });

  it('fails to start on a port already in use', async () => {
    metrics = await startMetrics({ port: 0 });
    await expect(startMetrics({ port: metrics.port })).rejects.toThrow(/EADDRINUSE/);
  });
});
