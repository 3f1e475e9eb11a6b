import { TesseraError } from '../../errors.ts';
import type { SignPattern } from './compeft-types.ts';

/** Number of values top-k keeps out of `numValues` at `density`: round(density * n), at least 1 when n > 0. */
export function keptCount(numValues: number, density: number): number {
  if (numValues === 0) return 0;
  return Math.min(numValues, Math.max(1, Math.round(density * numValues)));
}

export function checkDensity(density: number): void {
  if (!(Number.isFinite(density) && density > 0 && density <= 1)) {
    throw new TesseraError('INVALID_ARGUMENT', `\`density\` must be > 0 and <= 1. Given: ${JSON.stringify(density)}`);
  }
}

/**
 * Keeps the `keptCount(n, density)` values of largest magnitude (exact zeros are never kept, so a tensor may keep
 * fewer). Ties at the threshold are broken by position (lower index first), so the result is deterministic.
 */
export function selectTopK(data: Float32Array, density: number): SignPattern {
  checkDensity(density);
  const n = data.length;
  const k = keptCount(n, density);
  if (k === 0) return { positions: new Uint32Array(0), negative: new Uint8Array(0) };
  const magnitudes = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const a = Math.abs(data[i]);
    if (!Number.isFinite(a)) {
      throw new TesseraError('INVALID_ARGUMENT', `LoRA values must be finite. Given: ${data[i]} at index ${i}`);
    }
    magnitudes[i] = a;
  }
  magnitudes.sort(); // typed-array sort is numeric ascending
  const threshold = magnitudes[n - k];
  let numAbove = 0;
  if (threshold > 0) {
    for (let i = n - k; i < n; i++) if (magnitudes[i] > threshold) numAbove++;
  }
  // Entries strictly above the threshold are all kept; entries equal to it fill the rest in index order.
  let equalsLeft = threshold > 0 ? k - numAbove : 0;
  const keep = threshold > 0 ? k : countNonZero(data);
  const positions = new Uint32Array(keep);
  const negative = new Uint8Array(keep);
  let m = 0;
  for (let i = 0; i < n && m < keep; i++) {
    const v = data[i];
    const a = Math.abs(v);
    if (threshold > 0) {
      if (a > threshold) {
        // kept
      } else if (a === threshold && equalsLeft > 0) {
        equalsLeft--;
      } else {
        continue;
      }
    } else if (a === 0) {
      continue;
    }
    positions[m] = i;
    negative[m] = v < 0 ? 1 : 0;
    m++;
  }
  return { positions, negative };
}

function countNonZero(data: Float32Array): number {
  let c = 0;
  for (let i = 0; i < data.length; i++) if (data[i] !== 0) c++;
  return c;
}

/** Population standard deviation of the dense values (float64 accumulation). */
export function denseStd(data: Float32Array): number {
  const n = data.length;
  if (n === 0) return 0;
  let sum = 0;
  for (let i = 0; i < n; i++) sum += data[i];
  const mean = sum / n;
  let sq = 0;
  for (let i = 0; i < n; i++) {
    const d = data[i] - mean;
    sq += d * d;
  }
  return Math.sqrt(sq / n);
}

/** Mean |x| over the kept positions: the least-squares scale of the ternary pattern for this tensor alone. */
export function meanKeptMagnitude(data: Float32Array, pattern: SignPattern): number {
  const nnz = pattern.positions.length;
  if (nnz === 0) return 0;
  let s = 0;
  for (let m = 0; m < nnz; m++) s += Math.abs(data[pattern.positions[m]]);
  return s / nnz;
}
