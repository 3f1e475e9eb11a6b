/**
 * `--device cuda` on a machine without the CUDA libraries (this one, CI): one DEVICE_UNAVAILABLE line at start-up
 * naming what is missing and where it was looked for; the CPU path keeps its own ONNX Runtime; and, where `npm run
 * install:cuda` was run, the switch to the CUDA build reaches the worker threads and its CPU provider computes what the
 * CPU package computes. Real processes, real files; the line's claims are checked against the file system.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it, onTestFinished } from 'vitest';
import { CUDA_PROVIDER_DIR, expandLibPath } from '../../src/cli/cuda-provider.ts';
import { spawnServe } from '../helpers/serve-process.ts';
import { tinyConvertedDir } from '../helpers/test-server.ts';
import { tempDir } from '../helpers/tiny-model.ts';

const ROOT = process.cwd();
const installed = existsSync(join(CUDA_PROVIDER_DIR, 'node_modules', 'onnxruntime-node-cuda', 'package.json'));
const hasNvidiaDriver = existsSync('/proc/driver/nvidia/version');

/** `tessera serve ARGS` that must fail at start: exit code and stderr without the JSON log lines. */
function serveFails(args: string[], env: NodeJS.ProcessEnv) {
  const r = spawnSync(process.execPath, [join(ROOT, 'bin/tessera.mjs'), 'serve', ...args], { cwd: ROOT, env, encoding: 'utf8', timeout: 60_000 });
  return { code: r.status, lines: r.stderr.split('\n').filter((l) => l !== '' && !l.startsWith('{')), stdout: r.stdout };
}

describe.runIf(process.platform === 'linux' && process.arch === 'x64' && !hasNvidiaDriver)('--device cuda without a GPU', () => {
  it('fails at start-up with one DEVICE_UNAVAILABLE line naming what is missing and where it looked', async () => {
    const model = await tinyConvertedDir();
    // A Python-style layout with one empty nvidia/*/lib folder, and a path that does not exist.
    const venv = tempDir('cuda-libs');
    mkdirSync(join(venv, 'site-packages/nvidia/cublas/lib'), { recursive: true });
    const pattern = join(venv, 'site-packages/nvidia/*/lib');
    const env = { ...process.env, LD_LIBRARY_PATH: '' };
    const { code, lines, stdout } = serveFails(['--model', model, '--device', 'cuda', '--port', '0', '--cuda-lib-path', `${pattern},/nonexistent/cuda`], env);
    expect(code).toBe(1);
    expect(stdout).toBe('');
    expect(lines, 'exactly one line, no stack trace').toHaveLength(1);
    const line = lines[0];
    if (!installed) {
      expect(line).toBe(`tessera serve: --device cuda: the CUDA execution provider is not installed (no ${join(CUDA_PROVIDER_DIR, 'node_modules/onnxruntime-node-cuda/package.json')}): run \`npm run install:cuda\` (docs/gpu.md)`);
      return;
    }
    const m = /^tessera serve: --device cuda: the CUDA provider of ONNX Runtime (\S+) cannot load: (.+?) not found \(looked in --cuda-lib-path (.+?); LD_LIBRARY_PATH \(unset\); the system library path/.exec(line);
    expect(m, line).not.toBeNull();
    const missing = m![2].split(', ');
    expect(missing).toContain('libcuda.so.1'); // no NVIDIA driver here
    expect(m![3]).toBe(`${pattern},/nonexistent/cuda = ${join(venv, 'site-packages/nvidia/cublas/lib')} (no such directory: /nonexistent/cuda)`);
    // What it calls missing is in none of the places it names, and the system loader does not know it either.
    const ldconfig = spawnSync('ldconfig', ['-p'], { encoding: 'utf8' }).stdout ?? '';
    for (const lib of missing) {
      for (const dir of expandLibPath([pattern]).dirs) expect(existsSync(join(dir, lib))).toBe(false);
      expect(ldconfig.includes(`${lib} `), `${lib} is in ld.so.cache`).toBe(false);
    }
  });

  it('the CPU path keeps its own ONNX Runtime: a cpu server maps the CPU package\'s core, never the CUDA build', async () => {
    const proc = await spawnServe(['--model', await tinyConvertedDir(), '--port', '0', '--threads', '1', '--kv-cache-bytes', String(16 << 20), '--adapter-slots', '0']);
    onTestFinished(() => proc.kill());
    const maps = readFileSync(`/proc/${proc.child.pid}/maps`, 'utf8');
    expect(maps).toContain(join(ROOT, 'node_modules/onnxruntime-node/bin/napi-v6/linux/x64/libonnxruntime.so.1'));
    expect(maps).not.toContain('onnxruntime-node-cuda');
  });
});

describe.runIf(installed)('the CUDA build, where `npm run install:cuda` was run', () => {
  it('selecting it reaches the worker threads (one core per process) and its CPU provider matches the CPU package', async () => {
    const model = await tinyConvertedDir();
    const run = (binding: 'cuda' | 'cpu') =>
      JSON.parse(execFileSync(process.execPath, ['bin/run-ts.mjs', 'test/integration/cuda-binding-main.ts', model, binding], { cwd: ROOT, encoding: 'utf8', timeout: 120_000 })) as { cores: string[]; tokens: unknown; logits: Array<Array<[number, number[]]>> };
    const cuda = run('cuda');
    const cpu = run('cpu');
    expect(cuda.cores).toEqual([join(CUDA_PROVIDER_DIR, 'node_modules/onnxruntime-node-cuda/bin/napi-v6/linux/x64/libonnxruntime.so.1')]);
    expect(cpu.cores).toEqual([join(ROOT, 'node_modules/onnxruntime-node/bin/napi-v6/linux/x64/libonnxruntime.so.1')]);
    expect(cuda.tokens).toEqual(cpu.tokens);
    let worst = 0;
    cuda.logits.forEach((rows, step) => rows.forEach(([, row], i) => row.forEach((v, j) => (worst = Math.max(worst, Math.abs(v - cpu.logits[step][i][1][j]))))));
    expect(worst).toBeLessThanOrEqual(1e-4);
  });
});
