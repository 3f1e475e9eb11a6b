/**
 * `tessera serve` as a process: port 0 read back from the `listening on` line, a call, a metrics scrape, and SIGTERM
 * while a stream is in flight (the stream completes, new calls get UNAVAILABLE, the process exits 0).
 */
import * as grpc from '@grpc/grpc-js';
import { describe, expect, it, onTestFinished } from 'vitest';
import { jsonLines, spawnServe } from '../helpers/serve-process.ts';
import { connect, GenerationClient, HealthClient, histogramCount, scrapeMetrics, statusOf, unary, waitFor, tinyConvertedDir, type DynamicClient } from '../helpers/test-server.ts';

describe('tessera serve (child process)', () => {
  it('serves on the printed port, drains on SIGTERM with a stream in flight and exits 0', async () => {
    const modelDir = await tinyConvertedDir();
    const proc = await spawnServe(['--model', modelDir, '--port', '0', '--metrics-port', '0', '--http-port', '0', '--threads', '1', '--kv-cache-bytes', String(16 << 20), '--adapter-slots', '0', '--log-level', 'info']);
    onTestFinished(() => proc.kill());
    const clients: grpc.Client[] = [];
    onTestFinished(() => clients.forEach((c) => c.close()));
    expect(proc.host).toBe('127.0.0.1');
    expect(proc.port).toBeGreaterThan(0);
    // One line per port, each like the first.
    await waitFor(() => proc.stdout().split('\n').length > 3, 5000, 'three listening lines');
    const lines = proc.stdout().trimEnd().split('\n');
    expect(lines[0]).toBe(`listening on 127.0.0.1:${proc.port}`);
    expect(lines.slice(1).map((l) => l.replace(/\d+$/, 'P'))).toEqual(['http listening on 127.0.0.1:P', 'metrics listening on 127.0.0.1:P']);
    const httpPort = Number(/^http listening on \S+:(\d+)$/m.exec(proc.stdout())![1]);

    const gen: DynamicClient = connect(GenerationClient, proc.port, { closeWith: clients });
    const health: DynamicClient = connect(HealthClient, proc.port, { closeWith: clients });
    expect(await unary(health, 'Check', { service: '' })).toEqual({ status: 'SERVING' });
    const warm = await unary(gen, 'Generate', { text: 'hi', sampling: { temperature: 0 }, stopping: { max_new_tokens: 3, ignore_eos: true } });
    expect(warm.token_ids).toHaveLength(3);

    // Auth is off without a key file, and the server says so once at start.
    const logs = jsonLines(proc.stderr());
    expect(logs.some((l) => l.level === 40 && String(l.msg).includes('authentication is OFF'))).toBe(true);
    const serving = logs.find((l) => l.msg === 'serving');
    expect(serving).toMatchObject({ port: proc.port, auth: false, tls: false });
    const body = await scrapeMetrics(serving!.metricsPort as number);
    expect(histogramCount(body, 'gen_ai_server_request_duration')).toBeGreaterThan(0);
    expect((await fetch(`http://127.0.0.1:${httpPort}/health`)).status).toBe(200);

    const maxNewTokens = 160;
    const messages: Array<{ token_ids: number[]; finish_reason: string }> = [];
    const call = gen.GenerateStream({ text: 'go', sampling: { temperature: 0 }, stopping: { max_new_tokens: maxNewTokens, ignore_eos: true } });
    const ended = new Promise<void>((resolve, reject) => {
      call.on('data', (m: { token_ids: number[]; finish_reason: string }) => messages.push(m));
      call.on('error', reject);
      call.on('end', resolve);
    });
    await waitFor(() => messages.length > 0, 10_000, 'first streamed tokens');

    expect(proc.child.kill('SIGTERM')).toBe(true);
    await waitFor(async () => (await unary<{ status: string }>(health, 'Check', { service: '' })).status === 'NOT_SERVING', 5000, 'health NOT_SERVING');
    const refused = await statusOf(unary(gen, 'Generate', { text: 'late' }));
    expect(refused).toMatchObject({ code: grpc.status.UNAVAILABLE, errorCode: 'DRAINING' });
    // The HTTP face drains with it: no new connections (or 503 DRAINING on one still open).
    const lateHttp = await fetch(`http://127.0.0.1:${httpPort}/v1/models`).then((r) => r.status, () => 'refused');
    expect([503, 'refused']).toContain(lateHttp);
    expect(messages.at(-1)!.finish_reason).toBe('FINISH_REASON_UNSPECIFIED'); // still streaming while it refused

    await ended;
    expect(messages.flatMap((m) => m.token_ids)).toHaveLength(maxNewTokens);
    expect(messages.at(-1)!.finish_reason).toBe('FINISH_REASON_LENGTH');
    expect(await proc.exited).toEqual({ code: 0, signal: null });
    // Gone: a fresh connection is refused.
    const after = connect(GenerationClient, proc.port, { closeWith: clients });
    expect((await statusOf(unary(after, 'Generate', { text: 'x' }, new grpc.Metadata(), { deadline: Date.now() + 2000 }))).code).toBe(grpc.status.UNAVAILABLE);
  });

  it('a second signal during the drain cancels the streams still running, stops at once and exits 1', async () => {
    const modelDir = await tinyConvertedDir();
    const proc = await spawnServe(['--model', modelDir, '--port', '0', '--threads', '1', '--kv-cache-bytes', String(16 << 20), '--adapter-slots', '0', '--drain-timeout-ms', '600000', '--max-new-tokens', '500', '--log-level', 'info']);
    onTestFinished(() => proc.kill());
    const clients: grpc.Client[] = [];
    onTestFinished(() => clients.forEach((c) => c.close()));
    const gen: DynamicClient = connect(GenerationClient, proc.port, { closeWith: clients });
    const maxNewTokens = 500;
    const streams = Array.from({ length: 8 }, (_, i) => {
      const tokens: number[] = [];
      const call = gen.GenerateStream({ text: `go ${i}`, sampling: { temperature: 0 }, stopping: { max_new_tokens: maxNewTokens, ignore_eos: true } });
      const ended = new Promise<{ code: grpc.status; tokens: number }>((resolve) => {
        call.on('data', (m: { token_ids: number[] }) => tokens.push(...m.token_ids));
        call.on('error', (err: grpc.ServiceError) => resolve({ code: err.code, tokens: tokens.length }));
        call.on('end', () => resolve({ code: grpc.status.OK, tokens: tokens.length }));
      });
      return { tokens, ended };
    });
    await waitFor(() => streams.every((s) => s.tokens.length > 0), 20_000, 'first tokens of every stream');

    // Two different signals back to back (two SIGTERMs could merge while pending): the first drains (a 10-minute
    // drain timeout), the second must cut it short.
    expect(proc.child.kill('SIGTERM')).toBe(true);
    expect(proc.child.kill('SIGINT')).toBe(true);
    expect(await proc.exited).toEqual({ code: 1, signal: null });
    const outcomes = await Promise.all(streams.map((s) => s.ended));
    // Every stream was cut short, with a status (no stream ran on to its length).
    for (const o of outcomes) {
      expect(o.tokens).toBeLessThan(maxNewTokens);
      expect([grpc.status.UNAVAILABLE, grpc.status.CANCELLED]).toContain(o.code);
    }
    const logs = jsonLines(proc.stderr());
    expect(logs.some((l) => l.msg === 'second signal: stopping now')).toBe(true);
  });
});
