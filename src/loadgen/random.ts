/**
 * Seeded random numbers and the distributions the load generator draws from: request lengths (fixed, uniform,
 * normal), adapter popularity (uniform or Zipf over a ranked list) and Poisson arrivals (exponential gaps).
 * Seeded (src/util/seeded-random.ts, not Math.random) so a `--seed` reproduces the same prompts, lengths, adapters and
 * arrival times.
 */
import { TesseraError } from '../errors.ts';
import { SeededRandom } from '../util/seeded-random.ts';

/** The load generator's random stream (the project's one seeded generator). */
export type Rng = SeededRandom;

/** A stream per (seed, label): prompts and lengths, arrivals, ... draw from independent streams. */
export function createRng(seed: number, label = 'loadgen'): Rng {
  return new SeededRandom(seed, label);
}

/**
 * Gap before the next arrival of a Poisson process with `ratePerS` arrivals per second: exponential with mean
 * 1/rate, by inversion (-ln(U) / rate).
 */
export function exponentialGapMs(rng: Rng, ratePerS: number): number {
  return (-Math.log(rng.nextUniform()) / ratePerS) * 1000;
}

/** A token-length distribution, from `--prompt-tokens N` or `--prompt-tokens-dist uniform:a:b|normal:mu:sigma`. */
export type LengthDist =
  | { kind: 'fixed'; tokens: number }
  | { kind: 'uniform'; minTokens: number; maxTokens: number }
  | { kind: 'normal'; meanTokens: number; stddevTokens: number };

/** Parses `N`, `fixed:N`, `uniform:a:b` (inclusive) or `normal:mu:sigma`; `flag` names the option in errors. */
export function parseLengthDist(flag: string, text: string): LengthDist {
  const parts = text.trim().split(':');
  const num = (s: string | undefined, what: string, min: number): number => {
    const n = Number(s);
    if (s === undefined || s === '' || !Number.isFinite(n) || n < min) {
      throw new TesseraError('CONFIG_INVALID', `--${flag}: ${what} must be a number >= ${min}. Given: ${JSON.stringify(text)}`);
    }
    return n;
  };
  const int = (s: string | undefined, what: string): number => {
    const n = num(s, what, 1);
    if (!Number.isInteger(n)) throw new TesseraError('CONFIG_INVALID', `--${flag}: ${what} must be an integer >= 1. Given: ${JSON.stringify(text)}`);
    return n;
  };
  if (parts.length === 1) return { kind: 'fixed', tokens: int(parts[0], 'the token count') };
  const [kind, a, b] = parts;
  if (kind === 'fixed' && parts.length === 2) return { kind: 'fixed', tokens: int(a, 'the token count') };
  if (kind === 'uniform' && parts.length === 3) {
    const lo = int(a, 'the lower bound');
    const hi = int(b, 'the upper bound');
    if (hi < lo) throw new TesseraError('CONFIG_INVALID', `--${flag}: uniform:a:b needs a <= b. Given: ${JSON.stringify(text)}`);
    return { kind: 'uniform', minTokens: lo, maxTokens: hi };
  }
  if (kind === 'normal' && parts.length === 3) return { kind: 'normal', meanTokens: num(a, 'the mean', 1), stddevTokens: num(b, 'the standard deviation', 0) };
  throw new TesseraError('CONFIG_INVALID', `--${flag} must be N, uniform:a:b or normal:mu:sigma. Given: ${JSON.stringify(text)}`);
}

/** Largest value the distribution can produce (normal: unbounded above, so Infinity). */
export function lengthDistMax(dist: LengthDist): number {
  if (dist.kind === 'fixed') return dist.tokens;
  if (dist.kind === 'uniform') return dist.maxTokens;
  return dist.stddevTokens === 0 ? Math.round(dist.meanTokens) : Infinity;
}

/** Draws one length, rounded to an integer and clamped to [1, maxTokens]. */
export function sampleLength(dist: LengthDist, rng: Rng, maxTokens: number): number {
  let n: number;
  if (dist.kind === 'fixed') n = dist.tokens;
  else if (dist.kind === 'uniform') n = dist.minTokens + rng.nextInt(dist.maxTokens - dist.minTokens + 1);
  else n = Math.round(dist.meanTokens + dist.stddevTokens * rng.nextNormal());
  return Math.min(maxTokens, Math.max(1, n));
}

export function formatLengthDist(dist: LengthDist): string {
  if (dist.kind === 'fixed') return String(dist.tokens);
  if (dist.kind === 'uniform') return `uniform:${dist.minTokens}:${dist.maxTokens}`;
  return `normal:${dist.meanTokens}:${dist.stddevTokens}`;
}

/** How adapter ids are picked from `--adapters`: uniformly, or Zipf with exponent s (the first id most popular). */
export type AdapterDist = { kind: 'uniform' } | { kind: 'zipf'; exponent: number };

export function parseAdapterDist(text: string): AdapterDist {
  if (text === 'uniform') return { kind: 'uniform' };
  const m = /^zipf:(.+)$/.exec(text);
  const s = m ? Number(m[1]) : NaN;
  if (!m || !Number.isFinite(s) || s < 0) throw new TesseraError('CONFIG_INVALID', `--adapter-dist must be uniform or zipf:s with s >= 0. Given: ${JSON.stringify(text)}`);
  return { kind: 'zipf', exponent: s };
}

/**
 * Samples indices 0..n-1 with P(k) proportional to 1 / (k+1)^s (Zipf over ranks; s = 0 is uniform), by binary search
 * of U in the cumulative weights: O(n) setup, O(log n) per draw.
 */
export function createZipfSampler(n: number, exponent: number): (rng: Rng) => number {
  if (!Number.isInteger(n) || n < 1) throw new TesseraError('INVALID_ARGUMENT', `\`n\` must be an integer >= 1. Given: ${n}`);
  const cdf = new Float64Array(n);
  let total = 0;
  for (let k = 0; k < n; k++) {
    total += 1 / Math.pow(k + 1, exponent);
    cdf[k] = total;
  }
  return (rng) => {
    const u = rng.nextUniform() * total;
    let lo = 0;
    let hi = n - 1;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (cdf[mid] > u) hi = mid;
      else lo = mid + 1;
    }
    return lo;
  };
}

/** Picks adapter ids per the distribution; null when no adapters were given (base model). */
export function createAdapterPicker(adapterIds: readonly string[], dist: AdapterDist): ((rng: Rng) => string) | null {
  if (adapterIds.length === 0) return null;
  const pick = createZipfSampler(adapterIds.length, dist.kind === 'zipf' ? dist.exponent : 0);
  return (rng) => adapterIds[pick(rng)];
}
