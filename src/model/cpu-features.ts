/**
 * The CPU features that decide which kernels ONNX Runtime's CPU provider runs (MLAS dispatches its int8 and int4
 * GEMMs on these): a measured number is only a result once it is known which kernel produced it, so the serve log's
 * "model worker ready" line and every bench result carry them.
 */
import { readFileSync } from 'node:fs';
import os from 'node:os';

/** The flags that select a kernel class: x86 (AVX2 / AVX-512 / VNNI / AMX) and arm64 (dot product, int8 matmul, SVE). */
export const KERNEL_SELECTING_FLAGS = ['avx2', 'fma', 'avx512f', 'avx512bw', 'avx512_vnni', 'avx_vnni', 'avx512_bf16', 'amx_tile', 'amx_int8', 'asimddp', 'i8mm', 'sve'] as const;

export interface CpuKernelFeatures {
  model: string;
  arch: string;
  /** The kernel-selecting flags this CPU reports, in KERNEL_SELECTING_FLAGS order. */
  flags: string[];
  /** One word for the int8 GEMM class MLAS picks on it. */
  int8Class: 'amx' | 'avx512-vnni' | 'avx-vnni' | 'avx512' | 'avx2' | 'arm64-i8mm' | 'arm64-dotprod' | 'other';
}

/** Reads /proc/cpuinfo where there is one (Linux); elsewhere only the model and architecture are known. */
export function cpuKernelFeatures(cpuinfo: string | null = readCpuinfo()): CpuKernelFeatures {
  const model = os.cpus()[0]?.model.trim() ?? 'unknown';
  const line = cpuinfo?.split('\n').find((l) => /^(flags|Features)\s*:/.test(l)) ?? '';
  const present = new Set(line.replace(/^[^:]*:/, '').trim().split(/\s+/));
  const flags = KERNEL_SELECTING_FLAGS.filter((f) => present.has(f));
  return { model, arch: os.arch(), flags, int8Class: int8Class(new Set(flags)) };
}

function int8Class(f: Set<string>): CpuKernelFeatures['int8Class'] {
  if (f.has('amx_int8')) return 'amx';
  if (f.has('avx512_vnni')) return 'avx512-vnni';
  if (f.has('avx_vnni')) return 'avx-vnni';
  if (f.has('avx512bw')) return 'avx512';
  if (f.has('avx2')) return 'avx2';
  if (f.has('i8mm')) return 'arm64-i8mm';
  if (f.has('asimddp')) return 'arm64-dotprod';
  return 'other';
}

function readCpuinfo(): string | null {
  try {
    return readFileSync('/proc/cpuinfo', 'utf8');
  } catch {
    return null;
  }
}
