/**
 * `tessera bench` against a real server started in-process (tiny model, real engine, ORT worker) on 127.0.0.1:0,
 * through the CLI entry point, as an operator would run it.
 */
import { execFileSync } from 'node:child_process';
import { cpSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { main } from '../../src/cli/main.ts';
import { loadServeConfig } from '../../src/cli/config.ts';
import { startServer, type RunningServer } from '../../src/cli/serve.ts';
import type { BenchReport } from '../../src/loadgen/bench-report.ts';
import type { SoakCheck } from '../../src/loadgen/soak.ts';
import { generateApiKey, hashApiKey } from '../../src/server/auth.ts';
import { tempDir, tinyModel } from '../helpers/tiny-model.ts';

let server: RunningServer;
let target: string;
let modelDir: string;
let adapterRoot: string;

beforeAll(async () => {
  const { convertedDir, hf } = await tinyModel({ quant: 'fp32', numAdapters: 1 });
  modelDir = convertedDir;
  // Adapters the hostile soak loads and unloads: a good one and one with a corrupt weights file.
  adapterRoot = tempDir('bench-adapters');
  cpSync(hf.adapterDirs[0], join(adapterRoot, 'good'), { recursive: true });
  cpSync(hf.adapterDirs[0], join(adapterRoot, 'corrupt'), { recursive: true });
  writeFileSync(join(adapterRoot, 'corrupt', 'adapter_model.safetensors'), Buffer.from('\xff\xff\xff\xff\xff\xff\xff\x7fnot safetensors'));
  const flags = new Map<string, string[]>([
    ['model', [convertedDir]],
    ['port', ['0']],
    ['metrics-port', ['0']],
    ['http-port', ['0']],
    ['log-level', ['silent']],
    ['threads', ['1']],
    ['kv-cache-bytes', [String(16 << 20)]],
    ['adapter-root', [adapterRoot]],
  ]);
  server = await startServer(loadServeConfig(flags));
  target = `127.0.0.1:${server.port}`;
});

afterAll(async () => {
  await server?.shutdown();
});

async function bench(argv: string[]): Promise<{ rc: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const rc = await main(['bench', '--target', target, ...argv], { out: (s) => (out += s), err: (s) => (err += s) });
  return { rc, out, err };
}

async function benchJson(argv: string[]): Promise<{ rc: number; report: BenchReport & { soak?: { ok: boolean; checks: SoakCheck[]; peak: Record<string, number | null> } } }> {
  const { rc, out } = await bench([...argv, '--json']);
  const lines = out.trim().split('\n');
  expect(lines).toHaveLength(1); // one JSON object, nothing else on stdout
  return { rc, report: JSON.parse(lines[0]) };
}

async function atRest(): Promise<void> {
  const end = Date.now() + 5000;
  for (;;) {
    const s = server.engine.stats();
    if (s.running === 0 && s.queued === 0 && s.kvBlocksUsed === 0) return;
    if (Date.now() > end) throw new Error(`server not at rest: ${JSON.stringify(s)}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

function expectSane(s: BenchReport['e2eMs']): void {
  expect(s).not.toBeNull();
  expect(s!.min).toBeGreaterThan(0);
  expect(s!.min).toBeLessThanOrEqual(s!.p50);
  expect(s!.p50).toBeLessThanOrEqual(s!.p90);
  expect(s!.p90).toBeLessThanOrEqual(s!.p99);
  expect(s!.p99).toBeLessThanOrEqual(s!.max);
  expect(s!.mean).toBeGreaterThanOrEqual(s!.min);
  expect(s!.mean).toBeLessThanOrEqual(s!.max);
}

describe('tessera bench (tiny model, in-process server)', () => {
  it.each([
    ['--stream', true],
    ['--unary', false],
  ])('%s: 12 requests at concurrency 4 give exact token counts and sane latency stats', async (mode, streaming) => {
    const { rc, report } = await benchJson(['--requests', '12', '--concurrency', '4', '--prompt-tokens', '7', '--output-tokens', '5', mode]);
    expect(rc).toBe(0);
    expect(report.counts).toEqual({ issued: 12, succeeded: 12, failed: 0, cancelledAtEnd: 0, clampedLengths: 0 });
    expect(report.stoppedBy).toBe('count');
    expect(report.totalOutputTokens).toBe(12 * 5);
    expect(report.totalInputTokens).toBe(12 * 7);
    expect(report.errors).toEqual({});
    expect(report.durationS).toBeGreaterThan(0);
    // Rates are rounded to 0.001 and the duration to 1 ms: compare within 2%.
    expect(Math.abs(report.requestThroughputPerS * report.durationS - 12)).toBeLessThan(0.24);
    expect(Math.abs(report.outputTokensPerS * report.durationS - 60)).toBeLessThan(1.2);
    expect(report.outputTokensPerS).toBeGreaterThan(0);
    expect(report.model).toMatchObject({ modelId: expect.any(String), quantization: 'fp32' });
    expect(report.model.vocabSize).toBeGreaterThan(0);
    expect(report.config).toMatchObject({ target, stream: streaming, numRequests: 12, concurrency: 4, promptTokens: '7', outputTokens: '5', seed: 1 });
    expect(report.requestsByAdapter).toEqual({ '': 12 });
    expectSane(report.e2eMs);
    expect(report.e2eMs!.count).toBe(12);
    if (streaming) {
      expectSane(report.ttftMs);
      expectSane(report.tpotMs);
      expectSane(report.itlMs);
      expect(report.ttftMs!.count).toBe(12);
      expect(report.itlMs!.count).toBeLessThanOrEqual(12 * 4); // at most one gap per token after the first
      expect(report.ttftMs!.p50).toBeLessThanOrEqual(report.e2eMs!.max);
    } else {
      expect(report.ttftMs).toBeNull();
      expect(report.tpotMs).toBeNull();
      expect(report.itlMs).toBeNull();
    }
    await atRest();
  });

  it('prints a table without --json; length distributions and Poisson arrivals are reproducible per seed', async () => {
    const table = await bench(['--requests', '4', '--concurrency', '2', '--output-tokens', '3']);
    expect(table.rc).toBe(0);
    expect(table.out).toMatch(/requests: 4 issued, 4 ok, 0 failed/);
    expect(table.out).toMatch(/^TTFT\s+[\d.]+\s+[\d.]+/m);
    expect(table.out).toMatch(/^end-to-end\s+[\d.]+/m);

    const args = ['--requests', '10', '--rate', '40', '--prompt-tokens-dist', 'uniform:2:30', '--output-tokens-dist', 'normal:6:3'];
    const a = (await benchJson([...args, '--seed', '5'])).report;
    const b = (await benchJson([...args, '--seed', '5'])).report;
    const c = (await benchJson([...args, '--seed', '6'])).report;
    expect(a.counts.succeeded).toBe(10);
    expect(a.config).toMatchObject({ ratePerS: 40, concurrency: null, promptTokens: 'uniform:2:30', outputTokens: 'normal:6:3' });
    expect([a.totalInputTokens, a.totalOutputTokens]).toEqual([b.totalInputTokens, b.totalOutputTokens]);
    expect([a.totalInputTokens, a.totalOutputTokens]).not.toEqual([c.totalInputTokens, c.totalOutputTokens]);
    expect(a.totalInputTokens).toBeGreaterThanOrEqual(10 * 2);
    expect(a.totalInputTokens).toBeLessThanOrEqual(10 * 30);
    // 10 arrivals at 40/s take ~0.25 s on average: far from both 0 and the closed-loop-at-1 time.
    expect(a.durationS).toBeGreaterThan(0.02);
    await atRest();
  });

  it.each([
    ['--stream', true],
    ['--unary', false],
  ])('--protocol http %s: the same workload over the OpenAI-compatible face gives the same counts', async (mode, streaming) => {
    let out = '';
    const rc = await main(['bench', '--target', `127.0.0.1:${server.httpPort}`, '--protocol', 'http', '--requests', '12', '--concurrency', '4', '--prompt-tokens', '7', '--output-tokens', '5', mode, '--json'], { out: (s) => (out += s), err: () => {} });
    const report = JSON.parse(out) as BenchReport;
    expect(rc).toBe(0);
    expect(report.counts).toEqual({ issued: 12, succeeded: 12, failed: 0, cancelledAtEnd: 0, clampedLengths: 0 });
    expect(report.totalOutputTokens).toBe(12 * 5);
    expect(report.totalInputTokens).toBe(12 * 7);
    expect(report.config).toMatchObject({ protocol: 'http', stream: streaming });
    expectSane(report.e2eMs);
    if (streaming) {
      expectSane(report.ttftMs);
      expect(report.ttftMs!.count).toBe(12);
    } else expect(report.ttftMs).toBeNull();
    const missing = JSON.parse(
      await (async () => {
        let o = '';
        await main(['bench', '--target', `127.0.0.1:${server.httpPort}`, '--protocol', 'http', '--requests', '3', '--adapters', 'nope', '--output-tokens', '2', '--json'], { out: (s) => (o += s), err: () => {} });
        return o;
      })(),
    ) as BenchReport;
    expect(missing.errors).toEqual({ NOT_FOUND: 3 });
    await atRest();
  });

  it('counts errors by gRPC status (unknown adapters are NOT_FOUND) and exits 1 when nothing succeeds', async () => {
    const { rc, report } = await benchJson(['--requests', '30', '--concurrency', '3', '--adapters', 'hot,warm,cold', '--adapter-dist', 'zipf:2', '--output-tokens', '2']);
    expect(rc).toBe(1);
    expect(report.counts).toMatchObject({ issued: 30, succeeded: 0, failed: 30 });
    expect(report.errors).toEqual({ NOT_FOUND: 30 });
    expect(report.errorExamples.NOT_FOUND).toMatch(/adapter/i);
    expect(report.e2eMs).toBeNull();
    expect(report.outputTokensPerS).toBe(0);
    const by = report.requestsByAdapter;
    expect(by.hot + by.warm + (by.cold ?? 0)).toBe(30);
    expect(by.hot).toBeGreaterThan(by.warm);
  });

  it('stops by itself at the wall-clock cap, cancelling calls in flight, and the server frees them', async () => {
    const t0 = Date.now();
    const { report } = await benchJson(['--requests', '1000', '--concurrency', '3', '--output-tokens', '200', '--max-wall-s', '0.4']);
    expect(Date.now() - t0).toBeLessThan(5000);
    expect(report.stoppedBy).toBe('wall-cap');
    expect(report.counts.cancelledAtEnd).toBeGreaterThan(0);
    expect(report.counts.issued).toBe(report.counts.succeeded + report.counts.failed + report.counts.cancelledAtEnd);
    expect(report.counts.issued).toBeLessThan(1000);
    expect(report.errors).toEqual({}); // our own cancellations are not server errors
    await atRest();
  });

  it('rejects bad settings naming the flag', async () => {
    expect((await bench(['--requests', '3', '--duration', '2'])).err).toMatch(/only one of --requests, --duration and --soak-minutes/);
    expect((await bench(['--prompt-tokens', '100000'])).err).toMatch(/--prompt-tokens must be <= \d+ .*Given: 100000/);
    expect((await bench(['--stream', '--unary'])).err).toMatch(/at most one of --stream and --unary/);
    expect((await bench(['--concurrency', '0'])).err).toMatch(/--concurrency must be an integer >= 1/);
    const noTarget = await main(['bench', '--requests', '1'], { out: () => {}, err: () => {} });
    expect(noTarget).toBe(2);
  });
});

describe('tessera bench --soak-minutes', () => {
  it('runs load, idles, and passes when KV, running sequences, queue, errors and RSS return to baseline', async () => {
    const metricsUrl = `http://127.0.0.1:${server.metricsPort}/metrics`;
    const { rc, report } = await benchJson([
      '--soak-minutes', '0.05', '--concurrency', '4', '--prompt-tokens', '12', '--output-tokens', '8',
      '--metrics-url', metricsUrl, '--server-pid', String(process.pid), '--soak-idle-s', '10',
    ]);
    const soak = report.soak!;
    expect(soak.checks.map((c) => [c.name, c.result])).toEqual([
      ['no errors seen by the load generator', 'pass'],
      ['KV cache usage back to 0', 'pass'],
      ['running sequences back to 0', 'pass'],
      ['queue empty', 'pass'],
      ['no errors counted by the server', 'pass'],
      ['RSS back near baseline', 'pass'],
    ]);
    expect(soak.ok).toBe(true);
    expect(rc).toBe(0);
    expect(report.stoppedBy).toBe('duration');
    expect(report.counts.succeeded).toBeGreaterThan(4);
    expect(report.totalOutputTokens).toBe(report.counts.succeeded * 8);
    // The load really used the server: the gauges moved during the soak.
    expect(soak.peak.runningSequences).toBeGreaterThan(0);
    expect(soak.peak.kvUsageRatio).toBeGreaterThan(0);
    expect(soak.peak.rssBytes).toBeGreaterThan(0);
  });

  it('--hostile: a quiet run, then the same load beside bad bytes, huge prompts, cancels and adapter loads: same outputs, p99 ITL within 2x', async () => {
    const metricsUrl = `http://127.0.0.1:${server.metricsPort}/metrics`;
    const { rc, report } = await benchJson([
      '--soak-minutes', '0.05', '--concurrency', '4', '--prompt-tokens', '12', '--output-tokens', '16', '--metrics-url', metricsUrl, '--soak-idle-s', '10',
      '--hostile', '--hostile-interval-ms', '150', '--hostile-prompt-bytes', '2000000', '--hostile-adapters', `${join(adapterRoot, 'good')},${join(adapterRoot, 'corrupt')}`,
    ]);
    const soak = report.soak! as typeof report.soak & { hostileCalls: Array<{ action: string; status: string; expected: boolean }> };
    const byName = Object.fromEntries(soak.checks.map((c) => [c.name, c]));
    console.info('hostile soak:', soak.checks.map((c) => `${c.result} ${c.name}: ${c.detail}`).join(' | '));
    for (const name of ['no errors seen by the load generator', 'normal outputs identical to the quiet run', 'hostile calls answered as expected', 'no errors counted by the server', 'KV cache usage back to 0']) {
      expect({ name, result: byName[name]?.result }).toEqual({ name, result: 'pass' });
    }
    // Every kind of hostile call went out; the corrupt adapter was refused, the good one loaded.
    const outcomes = new Set(soak.hostileCalls.map((h) => `${h.action}:${h.status}`));
    for (const o of ['undecodable:INVALID_ARGUMENT', 'invalid:INVALID_ARGUMENT', 'huge-prompt:INVALID_ARGUMENT', 'adapter:OK', 'adapter:FAILED_PRECONDITION']) expect(outcomes).toContain(o);
    expect(soak.hostileCalls.some((h) => h.action === 'cancel')).toBe(true);
    // The ITL ratio is reported; it is a timing and not asserted in a test (docs/load-testing.md has measured runs).
    expect(byName['p99 inter-token gap within 2x of the quiet run'].detail).toMatch(/quiet [\d.]+ ms, with hostile calls [\d.]+ ms/);
    expect(report.counts.succeeded).toBeGreaterThan(4);
    expect(rc === 0).toBe(soak.ok);
  }, 120_000);

  it('exits non-zero when a check fails (every request errors)', async () => {
    const { rc, report } = await benchJson(['--soak-minutes', '0.01', '--adapters', 'missing', '--soak-idle-s', '1', '--metrics-url', `http://127.0.0.1:${server.metricsPort}/metrics`]);
    expect(rc).toBe(1);
    expect(report.soak!.ok).toBe(false);
    const failed = report.soak!.checks.filter((c) => c.result === 'fail').map((c) => c.name);
    expect(failed).toEqual(['no errors seen by the load generator', 'no errors counted by the server']);
  });
});

function hasOpenssl(): boolean {
  try {
    execFileSync('openssl', ['version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

describe.runIf(hasOpenssl())('tessera bench --tls --ca --api-key', () => {
  const key = generateApiKey();
  let secure: RunningServer;
  let dir: string;

  beforeAll(async () => {
    dir = tempDir('bench-tls');
    // A self-signed certificate for 127.0.0.1, used by the client as its CA.
    execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '1', '-subj', '/CN=127.0.0.1',
      '-addext', 'subjectAltName=IP:127.0.0.1', '-keyout', join(dir, 'key.pem'), '-out', join(dir, 'cert.pem')], { stdio: 'ignore' });
    writeFileSync(join(dir, 'keys.json'), JSON.stringify({ keys: [{ sha256: hashApiKey(key), tenant: 'acme' }] }));
    const flags = new Map<string, string[]>([
      ['model', [modelDir]],
      ['port', ['0']],
      ['log-level', ['silent']],
      ['threads', ['1']],
      ['kv-cache-bytes', [String(16 << 20)]],
      ['tls-cert', [join(dir, 'cert.pem')]],
      ['tls-key', [join(dir, 'key.pem')]],
      ['api-keys', [join(dir, 'keys.json')]],
    ]);
    secure = await startServer(loadServeConfig(flags));
  });

  afterAll(async () => {
    await secure?.shutdown();
  });

  it('connects over TLS with the CA and authenticates with the key; without it the first call is UNAUTHENTICATED and the run stops', async () => {
    const run = async (extra: string[]) => {
      let out = '';
      let err = '';
      const rc = await main(['bench', '--target', `127.0.0.1:${secure.port}`, '--tls', '--ca', join(dir, 'cert.pem'), '--requests', '4', '--concurrency', '2', '--output-tokens', '3', '--json', ...extra], {
        out: (s) => (out += s),
        err: (s) => (err += s),
      });
      return { rc, out, err };
    };
    const ok = await run(['--api-key', key]);
    expect(ok.rc).toBe(0);
    expect(JSON.parse(ok.out)).toMatchObject({ counts: { succeeded: 4, failed: 0 }, totalOutputTokens: 12, config: { tls: true } });
    // GetModelInfo is the first call: without a key the run stops there, naming the status.
    const noKey = await run([]);
    expect(noKey.rc).toBe(1);
    expect(noKey.err).toMatch(/GetModelInfo on 127\.0\.0\.1:\d+ failed: UNAUTHENTICATED/);
    // Plaintext against a TLS port fails to connect rather than hang.
    let err = '';
    const plain = await main(['bench', '--target', `127.0.0.1:${secure.port}`, '--requests', '1', '--timeout-s', '2'], { out: () => {}, err: (s) => (err += s) });
    expect(plain).toBe(1);
    expect(err).toMatch(/GetModelInfo .* failed: (UNAVAILABLE|DEADLINE_EXCEEDED)/);
  });
});
