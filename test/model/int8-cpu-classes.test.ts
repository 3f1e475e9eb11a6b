/**
 * The int8 linear is right on every x86 CPU class, checked against bounds derived from its format
 * (src/model/quantization/kernel-check.ts): natively (whatever CPU runs the suite), and under valgrind, which
 * presents ONNX Runtime with an AVX2-only CPU (no AVX-512, no VNNI), the class whose u8 x s8 kernels saturate. The
 * u8s8 probe is the control: under valgrind it must show the saturation, or the run proves nothing about that class.
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { describe, expect, test } from 'vitest';
import { cpuKernelFeatures } from '../../src/model/cpu-features.ts';
import { checkInt8Kernels, type Int8KernelCheck } from '../../src/model/quantization/kernel-check.ts';

const run = promisify(execFile);
const hasValgrind = await run('valgrind', ['--version']).then(
  () => true,
  () => false,
);

function expectCorrectInt8(check: Int8KernelCheck): void {
  expect(check.errorToBound).toBeLessThanOrEqual(1);
  expect(check.rmsRatio).toBeLessThan(2);
  expect(check.batchDiff).toBeLessThanOrEqual(1e-6);
}

describe('int8 linear (MatMulNBits, 8 bits) on every CPU class', () => {
  test(`natively (${cpuKernelFeatures().int8Class}: ${cpuKernelFeatures().flags.join(' ') || 'no x86 SIMD flags'})`, async () => {
    const check = await checkInt8Kernels();
    expectCorrectInt8(check);
    // The u8s8 probe agrees with the CPU's features: pair sums saturate exactly on the classes without a dot-product unit.
    const cls = cpuKernelFeatures().int8Class;
    if (cls === 'avx2' || cls === 'avx512') expect(check.u8s8Saturates).toBe(true);
    if (cls === 'avx512-vnni' || cls === 'avx-vnni' || cls === 'amx') expect(check.u8s8Saturates).toBe(false);
  });

  test.runIf(hasValgrind)('on an AVX2-only CPU (valgrind)', async (ctx) => {
    const { stdout } = await run('valgrind', ['--tool=none', '--quiet', process.execPath, 'bin/run-ts.mjs', 'scripts/kernel-check.ts'], { maxBuffer: 1 << 20 });
    const { check } = JSON.parse(stdout.trim().split('\n').at(-1)!) as { check: Int8KernelCheck };
    if (!check.u8s8Saturates) ctx.skip('valgrind did not hide the dot-product instructions: this run says nothing about AVX2-only CPUs');
    expectCorrectInt8(check);
  }, 300_000);
});
