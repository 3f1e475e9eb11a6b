import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { configMarkdown, loadServeConfig, SERVE_SETTINGS, WORKER_SETTINGS } from './config.ts';
import { parseServeArgs } from './commands/serve.ts';
import { parseWorkerArgs } from './commands/worker.ts';

describe('settings schemas', () => {
  it('docs/config.md is generated from the schemas (regenerate: node bin/run-ts.mjs scripts/gen-config-doc.ts)', () => {
    expect(readFileSync(new URL('../../docs/config.md', import.meta.url), 'utf8')).toBe(configMarkdown());
  });

  it('every setting of every command has its own flag and environment variable', () => {
    for (const schema of [SERVE_SETTINGS, WORKER_SETTINGS]) {
      const settings = Object.values(schema);
      expect(new Set(settings.map((s) => s.flag)).size).toBe(settings.length);
    }
    const envs = [...Object.values(SERVE_SETTINGS), ...Object.values(WORKER_SETTINGS)].map((s) => s.env);
    expect(new Set(envs).size, 'serve and worker never share a variable (a pod may set both)').toBe(envs.length);
  });

  it('tessera worker: flag > environment > default; a boolean flag stands alone', () => {
    expect(parseWorkerArgs([])).toMatchObject({ listen: '127.0.0.1:0', leaseMs: 15_000, insecure: false, secretFile: null });
    const env = { TESSERA_SHARD_LEASE_MS: '2500', TESSERA_SHARD_LISTEN: '0.0.0.0:7000' };
    expect(parseWorkerArgs(['--insecure', '--listen', '0.0.0.0:50052'], env)).toMatchObject({ listen: '0.0.0.0:50052', leaseMs: 2500, insecure: true });
    expect(parseWorkerArgs(['--insecure', 'false'])).toMatchObject({ insecure: false });
    expect(() => parseWorkerArgs(['--lease-ms', '-1'])).toThrow('--lease-ms must be an integer >= 0 and <= 3600000. Given: -1');
    expect(() => parseWorkerArgs(['--model', 'x'])).toThrow('unknown flag --model');
  });

  it('tessera serve: a boolean flag stands alone or takes a value (--thread-spinning, on by default)', () => {
    expect(parseServeArgs([]).intraOpSpinning).toBe(true);
    expect(parseServeArgs(['--thread-spinning', 'false', '--port', '0'])).toMatchObject({ intraOpSpinning: false, port: 0 });
    expect(parseServeArgs(['--thread-spinning=false']).intraOpSpinning).toBe(false);
    expect(parseServeArgs(['--thread-spinning', '--port', '0'], { TESSERA_THREAD_SPINNING: 'false' })).toMatchObject({ intraOpSpinning: true, port: 0 });
    expect(parseServeArgs([], { TESSERA_THREAD_SPINNING: 'false' }).intraOpSpinning).toBe(false);
  });

  it('tessera serve: --cuda-lib-path is a list', () => {
    expect(loadServeConfig(new Map([['cuda-lib-path', ['/a/nvidia/*/lib,/b']]])).cudaLibPath).toEqual(['/a/nvidia/*/lib', '/b']);
  });
});
