/** What a result was measured on: stored in every result file, since numbers from different machines don't compare. */
import fs from 'node:fs';
import os from 'node:os';
import { createRequire } from 'node:module';

export interface MachineInfo {
  cpuModel: string;
  numCpus: number;
  totalMemoryBytes: number;
  platform: string;
  arch: string;
  nodeVersion: string;
  ortVersion: string;
  /** 1-minute load average when the run started: above numCpus means others were competing for the cores. */
  loadAverage1m: number;
  /**
   * The CPU features that decide which kernels ONNX Runtime (MLAS) and llama.cpp (ggml) pick, those this CPU has
   * (KERNEL_CPU_FEATURES order); null where /proc/cpuinfo cannot be read. Absent in results written before it existed.
   */
  cpuFeatures?: string[] | null;
}

/**
 * x86: AVX2/FMA kernels, AVX-512 kernels, the int8 dot-product instructions (VNNI in AVX-512 or AVX form: u8s8 GEMMs
 * without 16-bit saturation), AMX tiles; arm64: dot-product, int8 matrix multiply, SVE.
 */
export const KERNEL_CPU_FEATURES = ['avx2', 'fma', 'f16c', 'avx512f', 'avx512bw', 'avx512vl', 'avx512_vnni', 'avx_vnni', 'avx512_bf16', 'amx_tile', 'amx_int8', 'amx_bf16', 'asimddp', 'i8mm', 'sve'] as const;

/** The KERNEL_CPU_FEATURES listed in the first `flags` (x86) or `Features` (arm64) line of /proc/cpuinfo text. */
export function kernelCpuFeatures(cpuinfo: string): string[] {
  const line = cpuinfo.split('\n').find((l) => /^(flags|Features)\s*:/.test(l));
  const present = new Set((line?.split(':')[1] ?? '').trim().split(/\s+/));
  return KERNEL_CPU_FEATURES.filter((f) => present.has(f));
}

function readCpuFeatures(): string[] | null {
  try {
    return kernelCpuFeatures(fs.readFileSync('/proc/cpuinfo', 'utf8'));
  } catch {
    return null;
  }
}

export function machineInfo(): MachineInfo {
  const cpus = os.cpus();
  const require = createRequire(import.meta.url);
  const ortVersion = (require('onnxruntime-node/package.json') as { version: string }).version;
  return {
    cpuModel: cpus[0]?.model.trim() ?? 'unknown',
    numCpus: os.availableParallelism(),
    totalMemoryBytes: os.totalmem(),
    platform: os.platform(),
    arch: os.arch(),
    nodeVersion: process.version,
    ortVersion,
    loadAverage1m: Number(os.loadavg()[0].toFixed(2)),
    cpuFeatures: readCpuFeatures(),
  };
}

export function describeMachine(m: MachineInfo): string {
  return `${m.numCpus} x ${m.cpuModel}, ${(m.totalMemoryBytes / 2 ** 30).toFixed(0)} GiB, ${m.platform}/${m.arch}, node ${m.nodeVersion}, onnxruntime-node ${m.ortVersion}, load ${m.loadAverage1m}${m.cpuFeatures?.length ? `, ${m.cpuFeatures.join(' ')}` : ''}`;
}
