import { describe, expect, test } from 'vitest';
import { cpuKernelFeatures } from './cpu-features.ts';

describe('cpuKernelFeatures', () => {
  test('names the kernel-selecting flags and the int8 class of x86 CPUs from /proc/cpuinfo', () => {
    const zen3 = 'processor\t: 0\nflags\t\t: fpu sse sse2 avx fma avx2 bmi2 sha_ni\n';
    expect(cpuKernelFeatures(zen3)).toMatchObject({ flags: ['avx2', 'fma'], int8Class: 'avx2' });
    const zen4 = 'flags\t: avx2 fma avx512f avx512bw avx512_vnni avx512_bf16 avx_vnni\n';
    expect(cpuKernelFeatures(zen4)).toMatchObject({ flags: ['avx2', 'fma', 'avx512f', 'avx512bw', 'avx512_vnni', 'avx_vnni', 'avx512_bf16'], int8Class: 'avx512-vnni' });
    expect(cpuKernelFeatures('flags : avx2 avx512f avx512bw\n').int8Class).toBe('avx512');
    expect(cpuKernelFeatures('flags : avx2 avx_vnni\n').int8Class).toBe('avx-vnni');
    expect(cpuKernelFeatures('flags : avx2 avx512_vnni amx_tile amx_int8\n').int8Class).toBe('amx');
  });

  test('arm64 Features lines, and no /proc/cpuinfo at all', () => {
    expect(cpuKernelFeatures('Features\t: fp asimd asimddp i8mm sve\n')).toMatchObject({ flags: ['asimddp', 'i8mm', 'sve'], int8Class: 'arm64-i8mm' });
    expect(cpuKernelFeatures(null)).toMatchObject({ flags: [], int8Class: 'other' });
    expect(cpuKernelFeatures(null).model.length).toBeGreaterThan(0);
  });
});
