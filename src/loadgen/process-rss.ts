/** Resident set size of a local process, for the soak's memory check. */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { TesseraError } from '../errors.ts';

/** RSS in bytes of process `pid`: /proc/PID/status (VmRSS) on Linux, `ps -o rss=` elsewhere. Throws if it is gone. */
export function readProcessRssBytes(pid: number): number {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const m = /^VmRSS:\s+(\d+)\s+kB/m.exec(status);
    if (m) return Number(m[1]) * 1024;
  } catch {
    // no procfs (macOS) or no such process: ask ps
  }
  try {
    const out = execFileSync('ps', ['-o', 'rss=', '-p', String(pid)], { encoding: 'utf8' }).trim();
    const kb = Number(out);
    if (out !== '' && Number.isFinite(kb)) return kb * 1024;
  } catch {
    // fall through
  }
  throw new TesseraError('INVALID_ARGUMENT', `--server-pid: no running process ${pid} whose RSS can be read`);
}
