/**
 * What /metrics says, read while sending real requests to the real server over both faces: each failed call is
 * counted once in tessera_errors_total; adapter labels come only from registered adapters; the inference gateway's
 * gauges (queue, running, KV utilisation, LoRA info) and the process_* / nodejs_* runtime metrics are exported, on the
 * metrics port and on the HTTP face's port.
 */
import { cpSync, mkdirSync } from 'node:fs';
import { connect as netConnect } from 'node:net';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RunningServer } from '../../src/cli/serve.ts';
import { connect, GenerationClient, scrapeMetrics, startTestServer, statusOf, unary, waitFor, type DynamicClient } from '../helpers/test-server.ts';
import { tempDir, tinyModel } from '../helpers/tiny-model.ts';

let server: RunningServer;
let gen: DynamicClient;
let httpBase: string;
const grpcClients: grpc.Client[] = [];

/** Sum of every series of a metric (all label sets). */
function total(body: string, name: string): number {
  let sum = 0;
  for (const m of body.matchAll(new RegExp(`^${name}(?:\\{[^}]*\\})? ([0-9.e+-]+)$`, 'gm'))) sum += Number(m[1]);
  return sum;
}

function post(path: string, body: string): Promise<Response> {
  return fetch(`${httpBase}${path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body });
}

beforeAll(async () => {
  const { hf, convertedDir } = await tinyModel({ quant: 'fp32', numAdapters: 1 });
  const adaptersDir = join(tempDir('metrics-truth'), 'adapters');
  mkdirSync(adaptersDir);
  cpSync(hf.adapterDirs[0], join(adaptersDir, 'alpha'), { recursive: true });
  server = await startTestServer({ model: convertedDir, 'http-port': 0, 'metrics-port': 0, 'adapters-dir': [adaptersDir], 'adapter-slots': 2 });
  gen = connect(GenerationClient, server.port, { closeWith: grpcClients });
  httpBase = `http://127.0.0.1:${server.httpPort}`;
});

afterAll(async () => {
  for (const c of grpcClients) c.close();
  await server?.shutdown();
});

describe('metrics that tell the truth', () => {
  it('counts every failed call once, on either face', async () => {
    const before = total(await scrapeMetrics(server.metricsPort!), 'tessera_errors_total');
    expect((await statusOf(unary(gen, 'Generate', { text: 'x', sampling: { top_p: 5 } }))).code).toBe(grpc.status.INVALID_ARGUMENT);
    expect((await statusOf(unary(gen, 'Generate', { text: 'x', adapter_id: 'made-up', stopping: { max_new_tokens: 2 } }))).code).toBe(grpc.status.NOT_FOUND);
    expect((await statusOf(unary(gen, 'Generate', {}))).code).toBe(grpc.status.INVALID_ARGUMENT);
    const model = server.executor.modelId;
    expect((await post('/v1/completions', JSON.stringify({ model, prompt: 'x', n: 2 }))).status).toBe(400);
    expect((await post('/v1/completions', '{broken')).status).toBe(400);
    expect((await post('/v1/chat/completions', JSON.stringify({ model: 'made-up-too', messages: [{ role: 'user', content: 'x' }], max_tokens: 2 }))).status).toBe(404);
    const after = total(await scrapeMetrics(server.metricsPort!), 'tessera_errors_total');
    expect(after - before).toBe(6);
  });

  it('counts a client that hangs up mid-body as CANCELLED, not as a server fault', async () => {
    const before = await scrapeMetrics(server.metricsPort!);
    await new Promise<void>((resolve) => {
      const socket = netConnect(server.httpPort!, '127.0.0.1', () => {
        socket.write('POST /v1/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 400\r\n\r\n{"model":');
        setTimeout(() => socket.destroy(), 50);
      });
      socket.on('close', () => resolve());
    });
    const cancelled = (body: string) => total(body, 'tessera_errors_total\\{code="CANCELLED"[^}]*\\}');
    await waitFor(async () => cancelled(await scrapeMetrics(server.metricsPort!)) === cancelled(before) + 1, 5000, 'one CANCELLED');
    const after = await scrapeMetrics(server.metricsPort!);
    expect(total(after, 'tessera_errors_total\\{code="INTERNAL"[^}]*\\}')).toBe(total(before, 'tessera_errors_total\\{code="INTERNAL"[^}]*\\}'));
  });

  it('labels adapter requests only with registered adapters', async () => {
    await unary(gen, 'Generate', { text: 'x', adapter_id: 'alpha', stopping: { max_new_tokens: 2 } });
    await post('/v1/completions', JSON.stringify({ model: 'alpha', prompt: 'x', max_tokens: 2 }));
    await statusOf(unary(gen, 'Generate', { text: 'x', adapter_id: 'invented-id', stopping: { max_new_tokens: 2 } }));
    const body = await scrapeMetrics(server.metricsPort!);
    expect(total(body, 'tessera_adapter_requests_total\\{adapter="alpha"\\}')).toBeGreaterThanOrEqual(2);
    expect(body).not.toMatch(/adapter="(made-up|made-up-too|invented-id)"/);
  });

  it('exports the inference gateway gauges, with the running adapter in the LoRA info', async () => {
    const call = gen.GenerateStream({ text: 'hold', adapter_id: 'alpha', stopping: { max_new_tokens: 480, ignore_eos: true } });
    call.on('error', () => {});
    await new Promise<void>((resolve) => call.once('data', () => resolve()));
    const body = await scrapeMetrics(server.metricsPort!);
    for (const name of ['tessera_queue_length', 'tessera_running_sequences', 'tessera_kv_usage_ratio']) expect(body).toMatch(new RegExp(`^# TYPE ${name} gauge$`, 'm'));
    const info = /^tessera_lora_requests_info\{max_lora="2",running_lora_adapters="([^"]*)",waiting_lora_adapters="([^"]*)"\} (\d+\.\d+)$/m.exec(body);
    expect(info, body.split('\n').filter((l) => l.includes('lora')).join('\n')).not.toBeNull();
    expect(info![1]).toBe('alpha');
    expect(Math.abs(Number(info![3]) - Date.now() / 1000)).toBeLessThan(60);
    call.cancel();
    await waitFor(() => server.engine.stats().running === 0, 5000, 'stream cancelled');
    const idle = await scrapeMetrics(server.metricsPort!);
    expect(idle).toMatch(/^tessera_lora_requests_info\{max_lora="2",running_lora_adapters="",waiting_lora_adapters=""\}/m);
    expect(idle.match(/^tessera_lora_requests_info\{/gm)).toHaveLength(1);
  });

  it('exports process_* and nodejs_* runtime metrics, also on the HTTP port', async () => {
    const body = await scrapeMetrics(server.metricsPort!);
    expect(total(body, 'process_resident_memory_bytes')).toBeGreaterThan(1 << 20);
    expect(total(body, 'process_cpu_seconds_total')).toBeGreaterThan(0);
    expect(total(body, 'process_start_time_seconds')).toBeLessThanOrEqual(Date.now() / 1000);
    expect(total(body, 'nodejs_heap_size_used_bytes')).toBeGreaterThan(0);
    expect(body).toMatch(/^nodejs_version_info\{version="v\d+/m);
    const viaHttp = await (await fetch(`${httpBase}/metrics`)).text();
    for (const name of ['process_resident_memory_bytes', 'tessera_queue_length', 'tessera_lora_requests_info', 'gen_ai_server_request_duration_count']) expect(viaHttp).toContain(name);
  });
});
