/**
 * Partial selection over index arrays (no full sort): quickselect with a three-way partition and a median-of-three
 * pivot, deterministic (no randomness: the request's PRNG must advance exactly once per token).
 *
 * All functions permute `idx[lo..hi)` (token ids) and read `values[idx[i]]`.
 */

export type Values = Float32Array | Float64Array;

/** Index of the largest value in values[0..count); ties go to the lowest index. */
export function argmax(values: Values, count: number): number {
  let best = 0;
  let bestValue = values[0];
  for (let i = 1; i < count; i++) {
    const v = values[i];
    if (v > bestValue) {
      bestValue = v;
      best = i;
    }
  }
  return best;
}

/**
 * Three-way partition of idx[lo..hi) around the value `pivot`, descending: [greater | equal | less].
 * Returns [endOfGreater, endOfEqual].
 */
function partitionDescending(values: Values, idx: Int32Array, lo: number, hi: number, pivot: number): [number, number] {
  let lt = lo; // idx[lo..lt) > pivot
  let i = lo;
  let gt = hi; // idx[gt..hi) < pivot
  while (i < gt) {
    const token = idx[i];
    const v = values[token];
    if (v > pivot) {
      idx[i] = idx[lt];
      idx[lt] = token;
      lt++;
      i++;
    } else if (v < pivot) {
      gt--;
      idx[i] = idx[gt];
      idx[gt] = token;
    } else {
      i++;
    }
  }
  return [lt, gt];
}

function medianOfThree(values: Values, idx: Int32Array, lo: number, hi: number): number {
  const a = values[idx[lo]];
  const b = values[idx[(lo + hi) >>> 1]];
  const c = values[idx[hi - 1]];
  if (a < b) return b < c ? b : a < c ? c : a;
  return a < c ? a : b < c ? c : b;
}

/**
 * Moves the k largest values of idx[0..count) into idx[0..k) (in no particular order). Returns min(k, count).
 * Expected O(count).
 */
export function selectTopK(values: Values, idx: Int32Array, count: number, k: number): number {
  if (k >= count) return count;
  let lo = 0;
  let hi = count;
  while (hi - lo > 1) {
    const [g, e] = partitionDescending(values, idx, lo, hi, medianOfThree(values, idx, lo, hi));
    if (k <= g) hi = g;
    else if (k <= e) break;
    else lo = e;
  }
  return k;
}

/**
 * Nucleus selection: moves into idx[0..m) the smallest set of largest `weights` whose sum reaches `targetMass`, and
 * returns m (at least 1 when count >= 1). Weights are non-negative. Expected O(count).
 */
export function selectNucleus(weights: Float64Array, idx: Int32Array, count: number, targetMass: number): number {
  let lo = 0;
  let hi = count;
  let taken = 0; // mass of idx[0..lo)
  while (lo < hi) {
    const [g, e] = partitionDescending(weights, idx, lo, hi, medianOfThree(weights, idx, lo, hi));
    let massGreater = 0;
    for (let i = lo; i < g; i++) massGreater += weights[idx[i]];
    if (g > lo && taken + massGreater >= targetMass) {
      hi = g;
      continue;
    }
    taken += massGreater;
    for (let i = g; i < e; i++) {
      taken += weights[idx[i]];
      if (taken >= targetMass) return i + 1;
    }
    lo = e;
  }
  return Math.max(1, Math.min(lo, count));
}

/**
 * The n largest of values[0..count), sorted descending (ties: lower token id first). O(count * n) worst case but
 * O(count) in practice for small n (most values fail the first comparison).
 */
export function topNSorted(values: Values, count: number, n: number): number[] {
  const m = Math.min(n, count);
  if (m <= 0) return [];
  const ids: number[] = [];
  let floor = -Infinity; // smallest value kept once full
  for (let i = 0; i < count; i++) {
    const v = values[i];
    if (ids.length === m && v <= floor) continue;
    let pos = ids.length === m ? m - 1 : ids.length;
    if (ids.length < m) ids.push(i);
    while (pos > 0 && values[ids[pos - 1]] < v) {
      ids[pos] = ids[pos - 1];
      pos--;
    }
    ids[pos] = i;
    if (ids.length === m) floor = values[ids[m - 1]];
  }
  return ids;
}
