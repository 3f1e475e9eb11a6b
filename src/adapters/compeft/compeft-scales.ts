import { TesseraError } from '../../errors.ts';
import { moduleProductStats, productSquaredError, type DenseMatrix, type ModuleProductStats } from './compeft-product-error.ts';
import { denseStd, meanKeptMagnitude } from './compeft-topk.ts';
import type { SignPattern } from './compeft-types.ts';

/**
 * How the magnitude of each ternary factor is chosen.
 * - auto: per module, the Frobenius-optimal product scale c* = <BA, S_B S_A> / ||S_B S_A||^2, split between A and B
 *   in the ratio of their own least-squares scales (mean kept |value|). Never worse than any single scalar.
 * - alpha: the paper's rule per tensor, scale = alpha * std(dense tensor).
 * - global: the paper's reference code, one scale alpha * std(all adapter values) for every tensor;
 *   alpha 'auto' picks the single scalar that minimises the total error over all modules (an oracle baseline).
 */
export type ScaleMode = { kind: 'auto' } | { kind: 'alpha'; alpha: number } | { kind: 'global'; alpha: number | 'auto' };

export interface ModuleFactors {
  a: DenseMatrix; // [r, in]
  b: DenseMatrix; // [out, r]
  patternA: SignPattern;
  patternB: SignPattern;
}

export interface ModuleScaleChoice {
  scaleA: number;
  scaleB: number;
  stats: ModuleProductStats;
  /** ||BA - B^A^||_F / ||BA||_F (0 when BA = 0). */
  relError: number;
}

export function checkAlpha(alpha: number): void {
  if (!(Number.isFinite(alpha) && alpha > 0)) {
    throw new TesseraError('INVALID_ARGUMENT', `\`alpha\` must be a finite number > 0 or 'auto'. Given: ${JSON.stringify(alpha)}`);
  }
}

export function chooseScales(modules: ModuleFactors[], mode: ScaleMode): ModuleScaleChoice[] {
  const stats = modules.map((m) => moduleProductStats(m.a, m.patternA, m.b, m.patternB));
  let scales: Array<[number, number]>;
  switch (mode.kind) {
    case 'auto':
      scales = modules.map((m, i) => splitProductScale(m, stats[i]));
      break;
    case 'alpha':
      checkAlpha(mode.alpha);
      scales = modules.map((m) => [mode.alpha * denseStd(m.a.data), mode.alpha * denseStd(m.b.data)]);
      break;
    case 'global': {
      let s: number;
      if (mode.alpha === 'auto') {
        let cross = 0;
        let normSS2 = 0;
        for (const st of stats) {
          cross += st.cross;
          normSS2 += st.normSS2;
        }
        s = normSS2 > 0 && cross > 0 ? Math.sqrt(cross / normSS2) : 0;
      } else {
        checkAlpha(mode.alpha);
        s = mode.alpha * globalStd(modules);
      }
      scales = modules.map(() => [s, s]);
      break;
    }
  }
  return modules.map((_, i) => {
    const [scaleA, scaleB] = scales[i];
    const st = stats[i];
    const relError = st.normBA2 > 0 ? Math.sqrt(productSquaredError(st, scaleA * scaleB) / st.normBA2) : 0;
    return { scaleA, scaleB, stats: st, relError };
  });
}

/** Splits c* into (a, b) with a * b = c*, a : b = a0 : b0 (each factor's own least-squares scale). */
function splitProductScale(m: ModuleFactors, st: ModuleProductStats): [number, number] {
  const a0 = meanKeptMagnitude(m.a.data, m.patternA);
  const b0 = meanKeptMagnitude(m.b.data, m.patternB);
  if (st.normSS2 <= 0 || a0 <= 0 || b0 <= 0) return [a0, b0];
  const c = st.cross / st.normSS2;
  const t = Math.sqrt(Math.abs(c) / (a0 * b0));
  return [a0 * t, (c < 0 ? -1 : 1) * b0 * t];
}

function globalStd(modules: ModuleFactors[]): number {
  let n = 0;
  let sum = 0;
  let sumSq = 0;
  for (const m of modules) {
    for (const d of [m.a.data, m.b.data]) {
      for (let i = 0; i < d.length; i++) {
        sum += d[i];
        sumSq += d[i] * d[i];
      }
      n += d.length;
    }
  }
  if (n === 0) return 0;
  const mean = sum / n;
  return Math.sqrt(Math.max(0, sumSq / n - mean * mean));
}
