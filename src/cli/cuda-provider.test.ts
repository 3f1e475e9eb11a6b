import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { CUDA_STAMP_FILE, expandLibPath, findLibrary, locateCudaBinding } from './cuda-provider.ts';

const root = mkdtempSync(join(tmpdir(), 'tessera-cuda-provider-'));
const mk = (...parts: string[]) => {
  mkdirSync(join(root, ...parts), { recursive: true });
  return join(root, ...parts);
};

describe('CUDA provider files and library search path', () => {
  it('--cuda-lib-path: `*` segments, `:`-separated entries, entries that match nothing reported', () => {
    const cublas = mk('venv/site-packages/nvidia/cublas/lib');
    const cu13 = mk('venv/site-packages/nvidia/cu13/lib');
    mk('venv/site-packages/nvidia/notalib');
    const other = mk('other');
    const got = expandLibPath([join(root, 'venv/site-packages/nvidia/*/lib'), `${other}:${join(root, 'absent')}`, join(root, 'venv/*/none')]);
    expect(got.dirs).toEqual([cu13, cublas, other]);
    expect(got.unmatched).toEqual([join(root, 'absent'), join(root, 'venv/*/none')]);
    writeFileSync(join(cublas, 'libcublas.so.13'), '');
    writeFileSync(join(other, 'libcublas.so.13'), '');
    expect(findLibrary('libcublas.so.13', got.dirs)).toBe(join(cublas, 'libcublas.so.13'));
    expect(findLibrary('libcurand.so.10', got.dirs)).toBeNull();
  });

  it.runIf(process.platform === 'linux' && process.arch === 'x64')('an install that is missing, incomplete or of mismatched versions is named, with the fix', () => {
    const empty = mk('empty');
    expect(() => locateCudaBinding(empty)).toThrow(`--device cuda: the CUDA execution provider is not installed (no ${join(empty, 'node_modules/onnxruntime-node-cuda/package.json')}): run \`npm run install:cuda\``);
    const partial = mk('partial');
    const pkg = mk('partial/node_modules/onnxruntime-node-cuda');
    writeFileSync(join(pkg, 'package.json'), JSON.stringify({ name: 'onnxruntime-node', version: '1.29.0', main: 'dist/index.js' }));
    const bin = mk('partial/node_modules/onnxruntime-node-cuda/bin/napi-v6/linux/x64');
    expect(() => locateCudaBinding(partial)).toThrow(`libonnxruntime_providers_cuda.so and libonnxruntime_providers_shared.so missing in ${bin}`);
    for (const f of ['libonnxruntime_providers_cuda.so', 'libonnxruntime_providers_shared.so']) writeFileSync(join(bin, f), '');
    expect(() => locateCudaBinding(partial)).toThrow('was built for ONNX Runtime (unknown: no install stamp) but the core there is 1.29.0');
    writeFileSync(join(partial, 'node_modules', CUDA_STAMP_FILE), JSON.stringify({ ortVersion: '1.28.0' }));
    expect(() => locateCudaBinding(partial)).toThrow('was built for ONNX Runtime 1.28.0 but the core there is 1.29.0; a provider must match its core exactly');
    writeFileSync(join(partial, 'node_modules', CUDA_STAMP_FILE), JSON.stringify({ ortVersion: '1.29.0' }));
    expect(locateCudaBinding(partial)).toEqual({ packageDir: pkg, entryUrl: `file://${join(pkg, 'dist/index.js')}`, ortVersion: '1.29.0', provider: join(bin, 'libonnxruntime_providers_cuda.so') });
  });
});
