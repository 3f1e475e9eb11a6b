import { describe, expect, test } from 'vitest';
import { describeMachine, kernelCpuFeatures, machineInfo } from './machine-info.ts';

describe('machine info', () => {
  test('kernel-selecting CPU features are read from the first flags line, in a fixed order', () => {
    const x86 = 'processor\t: 0\nflags\t\t: fpu sse4_2 avx512_vnni avx2 fma avx512f amx_tile avx512fp16\nbugs\t\t: none\nprocessor\t: 1\nflags\t\t: avx2\n';
    expect(kernelCpuFeatures(x86)).toEqual(['avx2', 'fma', 'avx512f', 'avx512_vnni', 'amx_tile']);
    expect(kernelCpuFeatures('processor\t: 0\nFeatures\t: fp asimd asimddp sve i8mm\n')).toEqual(['asimddp', 'i8mm', 'sve']);
    expect(kernelCpuFeatures('flags\t: avx avx2_but_not_really\n')).toEqual([]); // whole words only
    expect(kernelCpuFeatures('')).toEqual([]);
  });

  test('the machine line names the CPU and, where known, its features', () => {
    const m = machineInfo();
    const line = describeMachine(m);
    expect(line).toContain(m.cpuModel);
    for (const f of m.cpuFeatures ?? []) expect(line).toContain(f);
    expect(describeMachine({ ...m, cpuFeatures: undefined })).not.toContain('avx'); // results written before the field existed
  });
});
