/**
 * Process and Node.js runtime metrics under the names Prometheus client libraries use (`process_*` as in the
 * Prometheus client guidelines, `nodejs_*`), so standard dashboards, alerts and `tessera bench --soak-minutes`
 * (which reads `process_resident_memory_bytes`) find them. Observed at scrape time; the event-loop delay histogram
 * restarts after each scrape, so its values describe the interval since the previous scrape.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { monitorEventLoopDelay, PerformanceObserver } from 'node:perf_hooks';
import type { Meter } from '@opentelemetry/api';

/** Buckets of nodejs_gc_duration_seconds. */
export const GC_DURATION_BUCKETS_S: readonly number[] = [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5];

const GC_KINDS: Readonly<Record<number, string>> = { 1: 'minor', 2: 'major', 4: 'incremental', 8: 'weakcb' };

/** Linux only: the file's text, or null elsewhere. */
function procText(path: string): string | null {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return null;
  }
}

function openFds(): number | null {
  try {
    return readdirSync('/proc/self/fd').length;
  } catch {
    return null;
  }
}

function maxFds(): number | null {
  const m = /^Max open files\s+(\d+)/m.exec(procText('/proc/self/limits') ?? '');
  return m ? Number(m[1]) : null;
}

/** Virtual memory size from /proc/self/stat (field 23, after the parenthesised command name). */
function virtualMemoryBytes(): number | null {
  const stat = procText('/proc/self/stat');
  if (stat === null) return null;
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const vsize = Number(fields[20]);
  return Number.isFinite(vsize) ? vsize : null;
}

/** Registers the instruments; returns a function that stops the event-loop and GC observers. */
export function registerProcessMetrics(meter: Meter): () => void {
  const startTimeS = Math.round(Date.now() / 1000 - process.uptime());
  const gauge = (name: string, description: string, unit: string, read: () => number | null): void => {
    meter.createObservableGauge(name, { description, unit }).addCallback((r) => {
      const v = read();
      if (v !== null) r.observe(v);
    });
  };
  meter.createObservableCounter('process_cpu_seconds', { description: 'User and system CPU time spent', unit: 's' }).addCallback((r) => {
    const u = process.cpuUsage();
    r.observe((u.user + u.system) / 1e6);
  });
  gauge('process_resident_memory_bytes', 'Resident memory size', 'By', () => process.memoryUsage.rss());
  gauge('process_virtual_memory_bytes', 'Virtual memory size', 'By', virtualMemoryBytes);
  gauge('process_heap_bytes', 'Process heap size (V8 heap total)', 'By', () => process.memoryUsage().heapTotal);
  gauge('process_start_time_seconds', 'Start time of the process since the Unix epoch', 's', () => startTimeS);
  gauge('process_open_fds', 'Open file descriptors', '{fd}', openFds);
  gauge('process_max_fds', 'Maximum number of open file descriptors', '{fd}', maxFds);
  gauge('nodejs_heap_size_used_bytes', 'V8 heap used', 'By', () => process.memoryUsage().heapUsed);
  gauge('nodejs_heap_size_total_bytes', 'V8 heap total', 'By', () => process.memoryUsage().heapTotal);
  gauge('nodejs_external_memory_bytes', 'Memory of C++ objects bound to JavaScript objects (Buffers, ORT tensors)', 'By', () => process.memoryUsage().external);
  gauge('nodejs_active_resources', 'Resources keeping the event loop alive (sockets, timers, ...)', '{resource}', () => process.getActiveResourcesInfo().length);
  meter.createObservableGauge('nodejs_version_info', { description: 'Node.js version' }).addCallback((r) => r.observe(1, { version: process.version }));

  const loop = monitorEventLoopDelay({ resolution: 10 });
  loop.enable();
  meter.createObservableGauge('nodejs_eventloop_lag_seconds', { description: 'Event-loop delay since the last scrape, by statistic (mean, p50, p99, max)', unit: 's' }).addCallback((r) => {
    if (loop.count === 0) return;
    r.observe(loop.mean / 1e9, { stat: 'mean' });
    r.observe(loop.percentile(50) / 1e9, { stat: 'p50' });
    r.observe(loop.percentile(99) / 1e9, { stat: 'p99' });
    r.observe(loop.max / 1e9, { stat: 'max' });
    loop.reset();
  });

  const gcDuration = meter.createHistogram('nodejs_gc_duration_seconds', { description: 'Garbage collection pauses, by kind', unit: 's', advice: { explicitBucketBoundaries: [...GC_DURATION_BUCKETS_S] } });
  const gc = new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) {
      const kind = GC_KINDS[(entry as { detail?: { kind?: number } }).detail?.kind ?? 0] ?? 'other';
      gcDuration.record(entry.duration / 1000, { kind });
    }
  });
  gc.observe({ entryTypes: ['gc'] });
  return () => {
    loop.disable();
    gc.disconnect();
  };
}
