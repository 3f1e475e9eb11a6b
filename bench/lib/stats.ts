/** Small statistics over repeated timings. Medians, not means: a shared machine's stalls only ever add time. */
import { outOfRange } from '../../src/errors.ts';
import { percentile } from '../../src/loadgen/latency-stats.ts';

export function median(values: readonly number[]): number {
  return quantile(values, 0.5);
}

/** Linear-interpolated quantile q in [0, 1] of a non-empty list (the load generator's percentile, type 7). */
export function quantile(values: readonly number[], q: number): number {
  if (values.length === 0) throw outOfRange('values.length', '>= 1', 0);
  if (!(q >= 0 && q <= 1)) throw outOfRange('q', '>= 0 and <= 1', q);
  return percentile(Float64Array.from(values).sort(), q * 100);
}

/** Runs `fn` and returns its wall time in milliseconds. */
export async function timeMs(fn: () => Promise<unknown> | unknown): Promise<number> {
  const started = performance.now();
  await fn();
  return performance.now() - started;
}

/** Rounds to `digits` significant digits (for tables; raw numbers stay in the JSON data). */
export function significant(value: number, digits = 3): number {
  if (value === 0 || !Number.isFinite(value)) return value;
  return Number(value.toPrecision(digits));
}

export const MIB = 1024 * 1024;
