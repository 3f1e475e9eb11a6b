/**
 * `tessera serve` as a child process (`node bin/tessera.mjs serve ...`), for tests that need the real process:
 * signals, exit codes, the `listening on HOST:PORT` line.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';

export interface ServeProcess {
  readonly child: ChildProcess;
  readonly host: string;
  readonly port: number;
  /** Everything written to stdout / stderr so far. */
  stdout(): string;
  stderr(): string;
  /** Resolves with the exit code and signal once the process ended. */
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** SIGKILL if still running (for test cleanup). */
  kill(): void;
}

const LISTENING = /^listening on (\S+):(\d+)$/m;

/** Spawns `tessera serve ARGS` and resolves once it printed `listening on HOST:PORT`; rejects if it exits first. */
export function spawnServe(args: readonly string[], opts: { timeoutMs?: number; env?: NodeJS.ProcessEnv } = {}): Promise<ServeProcess> {
  const child = spawn(process.execPath, [join(process.cwd(), 'bin/tessera.mjs'), 'serve', ...args], {
    cwd: process.cwd(),
    env: { ...process.env, ...opts.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  child.stdout!.setEncoding('utf8').on('data', (s: string) => (out += s));
  child.stderr!.setEncoding('utf8').on('data', (s: string) => (err += s));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  const kill = (): void => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  };
  return new Promise<ServeProcess>((resolve, reject) => {
    const timer = setTimeout(() => {
      kill();
      reject(new Error(`tessera serve printed no 'listening on' line within ${opts.timeoutMs ?? 60_000} ms; stderr:\n${err.slice(-4000)}`));
    }, opts.timeoutMs ?? 60_000);
    const onData = (): void => {
      const m = LISTENING.exec(out);
      if (!m) return;
      clearTimeout(timer);
      child.stdout!.off('data', onData);
      resolve({ child, host: m[1], port: Number(m[2]), stdout: () => out, stderr: () => err, exited, kill });
    };
    child.stdout!.on('data', onData);
    void exited.then(({ code, signal }) => {
      clearTimeout(timer);
      reject(new Error(`tessera serve exited (code ${code}, signal ${signal}) before listening; stderr:\n${err.slice(-4000)}`));
    });
  });
}

/** The JSON log lines of a pino stream (non-JSON lines are skipped). */
export function jsonLines(text: string): Array<Record<string, unknown>> {
  const out: Array<Record<string, unknown>> = [];
  for (const line of text.split('\n')) {
    if (!line.startsWith('{')) continue;
    try {
      out.push(JSON.parse(line) as Record<string, unknown>);
    } catch {
      // a line cut mid-write
    }
  }
  return out;
}
