/**
 * The shard group as an operator runs it: two `tessera worker` processes with a shared secret and `tessera serve --pp 2
 * --workers A,B` processes. A second controller against running workers is refused cleanly (one line, non-zero exit)
 * while the first keeps serving; a wrong secret is refused; when the first controller dies (SIGKILL), a new one takes
 * the workers once their lease ends and serves the same tokens.
 */
import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it, onTestFinished } from 'vitest';
import { jsonLines, spawnServe, type ServeProcess } from '../helpers/serve-process.ts';
import { connect, GenerationClient, HealthClient, tinyConvertedDir, unary, type DynamicClient } from '../helpers/test-server.ts';
import { tempDir } from '../helpers/tiny-model.ts';

const ROOT = process.cwd();

/** Starts `tessera worker ARGS`; resolves with its address once it printed `listening HOST:PORT`. */
function startWorker(args: string[]): Promise<string> {
  const child = spawn(process.execPath, [join(ROOT, 'bin/tessera.mjs'), 'worker', '--listen', '127.0.0.1:0', ...args], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  onTestFinished(() => {
    if (child.exitCode === null) child.kill('SIGKILL');
  });
  let err = '';
  child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  return new Promise((resolve, reject) => {
    let out = '';
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      const m = /listening (\S+)/.exec(out);
      if (m) resolve(m[1]);
    });
    child.once('exit', (code) => reject(new Error(`tessera worker exited with ${code}: ${err}`)));
  });
}

/** Runs `tessera serve ARGS` expecting it to fail at start: its exit code and the last line it wrote to stderr. */
function serveRefused(args: string[]): Promise<{ code: number | null; lastLine: string; stderr: string }> {
  const child = spawn(process.execPath, [join(ROOT, 'bin/tessera.mjs'), 'serve', ...args], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  onTestFinished(() => {
    if (child.exitCode === null) child.kill('SIGKILL');
  });
  let stderr = '';
  let stdout = '';
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  child.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
  return new Promise((resolve) =>
    child.once('exit', (code) => {
      expect(stdout, 'a refused controller never listens').not.toContain('listening on');
      resolve({ code, lastLine: stderr.trimEnd().split('\n').at(-1)!, stderr });
    }),
  );
}

const REQUEST = { token_ids: { ids: [3, 17, 42, 5] }, sampling: { temperature: 0 }, stopping: { max_new_tokens: 6, ignore_eos: true } };

describe('shard group processes: one controller per worker group', () => {
  it('a second `serve --pp 2 --workers A,B` is refused while the first keeps serving; a dead controller is replaced after its lease', async () => {
    const modelDir = await tinyConvertedDir();
    const dir = tempDir('shard-group');
    const secretFile = join(dir, 'shard-secret');
    writeFileSync(secretFile, 'c0ffee00c0ffee00c0ffee00c0ffee00\n');
    const wrongSecret = join(dir, 'wrong-secret');
    writeFileSync(wrongSecret, '0123456789abcdef0123456789abcdef\n');
    const workers = await Promise.all([0, 1].map(() => startWorker(['--secret-file', secretFile, '--lease-ms', '1500'])));
    const serveArgs = (secret: string) => ['--model', modelDir, '--pp', '2', '--workers', workers.join(','), '--worker-secret-file', secret, '--port', '0', '--threads', '1', '--kv-cache-bytes', String(16 << 20), '--adapter-slots', '0', '--log-level', 'info'];
    const clients: DynamicClient[] = [];
    onTestFinished(() => clients.forEach((c) => c.close()));
    const generate = async (proc: ServeProcess) => {
      const gen = connect(GenerationClient, proc.port, { closeWith: clients });
      return (await unary<{ token_ids: number[] }>(gen, 'Generate', REQUEST)).token_ids;
    };

    const first = await spawnServe(serveArgs(secretFile));
    onTestFinished(() => first.kill());
    const tokens = await generate(first);
    expect(tokens).toHaveLength(6);

    const second = await serveRefused(serveArgs(secretFile));
    expect(second.code).toBe(1);
    expect(second.lastLine).toMatch(new RegExp(`^tessera serve: shard worker ${workers[0]} refused this controller: held by controller "\\S+" \\(connected for [\\d.]+ s\\); a worker serves one controller at a time$`));
    expect(second.stderr).not.toMatch(/^\s+at /m);

    const wrong = await serveRefused(serveArgs(wrongSecret));
    expect(wrong.code).toBe(2);
    expect(wrong.lastLine).toBe(`tessera serve: shard worker ${workers[0]} refused this controller: wrong shared secret (controller: --worker-secret-file must hold the worker's --secret-file)`);

    // The first controller was never disturbed: same tokens, SERVING, no worker ever seen down.
    expect(await generate(first)).toEqual(tokens);
    const health = connect(HealthClient, first.port, { closeWith: clients });
    expect(await unary(health, 'Check', { service: '' })).toEqual({ status: 'SERVING' });
    const firstLogs = jsonLines(first.stderr());
    expect(firstLogs.some((l) => String(l.msg).includes('a shard worker is down'))).toBe(false);
    const leased = firstLogs.find((l) => l.msg === 'leasing remote shard workers');
    expect(leased).toMatchObject({ secret: true, tls: false });
    expect(second.lastLine).toContain(`held by controller "${String(leased!.controllerId)}"`);

    // The first controller dies without a goodbye; its replacement waits out the lease, takes the workers, serves.
    first.child.kill('SIGKILL');
    await first.exited;
    const replacement = await spawnServe(serveArgs(secretFile));
    onTestFinished(() => replacement.kill());
    expect(await generate(replacement)).toEqual(tokens);
  });
});
