/** What a result was measured on: stored in every result file, since numbers from different machines don't compare. */
import os from 'node:os';
import { createRequire } from 'node:module';
import { cpuKernelFeatures } from '../../src/model/cpu-features.ts';

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
  /** The CPU features that select ORT's kernels, and the int8 kernel class they give (src/model/cpu-features.ts). */
  kernelFlags: string[];
  int8KernelClass: string;
}

export function machineInfo(): MachineInfo {
  const cpus = os.cpus();
  const cpu = cpuKernelFeatures();
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
    kernelFlags: cpu.flags,
    int8KernelClass: cpu.int8Class,
  };
}

export function describeMachine(m: MachineInfo): string {
  const kernels = m.int8KernelClass ? `, int8 kernels ${m.int8KernelClass} (${m.kernelFlags.join(' ')})` : '';
  return `${m.numCpus} x ${m.cpuModel}${kernels}, ${(m.totalMemoryBytes / 2 ** 30).toFixed(0)} GiB, ${m.platform}/${m.arch}, node ${m.nodeVersion}, onnxruntime-node ${m.ortVersion}, load ${m.loadAverage1m}`;
}
