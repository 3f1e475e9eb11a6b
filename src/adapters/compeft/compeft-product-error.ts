import type { SignPattern } from './compeft-types.ts';

/**
 * Inner products that decide how well a ternary pair (S_B, S_A) approximates one LoRA module's update BA,
 * computed from r x r Gram matrices so that the [out, in] product is never materialised:
 *   normBA2 = ||BA||_F^2          = <B^T B, A A^T>_F
 *   cross   = <BA, S_B S_A>_F      = tr((B^T S_B)(S_A A^T))
 *   normSS2 = ||S_B S_A||_F^2     = <S_B^T S_B, S_A S_A^T>_F
 * Cost O(r^2 (in + out)) for the dense Grams plus O(r nnz) for the sparse ones.
 * With B^ A^ = c S_B S_A the squared error is normBA2 - 2 c cross + c^2 normSS2, minimised by c* = cross / normSS2.
 */
export interface ModuleProductStats {
  normBA2: number;
  cross: number;
  normSS2: number;
}

export interface DenseMatrix {
  rows: number;
  cols: number;
  data: Float32Array; // [rows, cols] row-major
}

/** a: A [r, in], b: B [out, r]; patterns are flat row-major indices into each. */
export function moduleProductStats(a: DenseMatrix, patternA: SignPattern, b: DenseMatrix, patternB: SignPattern): ModuleProductStats {
  const r = a.rows;
  const inF = a.cols;
  const outF = b.rows;
  if (b.cols !== r) throw new Error(`B has ${b.cols} columns but A has ${r} rows`);
  const A = a.data;
  const B = b.data;

  // A A^T and B^T B (symmetric r x r).
  const aat = new Float64Array(r * r);
  for (let p = 0; p < r; p++) {
    for (let q = p; q < r; q++) {
      let s = 0;
      const po = p * inF;
      const qo = q * inF;
      for (let j = 0; j < inF; j++) s += A[po + j] * A[qo + j];
      aat[p * r + q] = s;
      aat[q * r + p] = s;
    }
  }
  const btb = new Float64Array(r * r);
  for (let i = 0; i < outF; i++) {
    const io = i * r;
    for (let p = 0; p < r; p++) {
      const bp = B[io + p];
      if (bp === 0) continue;
      for (let q = 0; q < r; q++) btb[p * r + q] += bp * B[io + q];
    }
  }
  let normBA2 = 0;
  for (let t = 0; t < r * r; t++) normBA2 += btb[t] * aat[t];

  const sA = denseSigns(patternA, r * inF);
  const sB = denseSigns(patternB, outF * r);

  // GA = S_A A^T, SAS = S_A S_A^T: one pass over A's kept entries (p, j).
  const ga = new Float64Array(r * r);
  const sas = new Float64Array(r * r);
  for (let m = 0; m < patternA.positions.length; m++) {
    const pos = patternA.positions[m];
    const p = Math.floor(pos / inF);
    const j = pos - p * inF;
    const s = patternA.negative[m] ? -1 : 1;
    for (let q = 0; q < r; q++) {
      ga[p * r + q] += s * A[q * inF + j];
      sas[p * r + q] += s * sA[q * inF + j];
    }
  }
  // GB = B^T S_B, SBS = S_B^T S_B: one pass over B's kept entries (i, q).
  const gb = new Float64Array(r * r);
  const sbs = new Float64Array(r * r);
  for (let m = 0; m < patternB.positions.length; m++) {
    const pos = patternB.positions[m];
    const i = Math.floor(pos / r);
    const q = pos - i * r;
    const s = patternB.negative[m] ? -1 : 1;
    for (let p = 0; p < r; p++) {
      gb[p * r + q] += s * B[i * r + p];
      sbs[q * r + p] += s * sB[i * r + p];
    }
  }
  let cross = 0;
  let normSS2 = 0;
  for (let p = 0; p < r; p++) {
    for (let q = 0; q < r; q++) {
      cross += gb[p * r + q] * ga[q * r + p];
      normSS2 += sbs[p * r + q] * sas[p * r + q];
    }
  }
  return { normBA2, cross, normSS2 };
}

/** ||BA - c S_B S_A||_F^2 from the stats (clamped at 0 against rounding). */
export function productSquaredError(stats: ModuleProductStats, c: number): number {
  return Math.max(0, stats.normBA2 - 2 * c * stats.cross + c * c * stats.normSS2);
}

function denseSigns(pattern: SignPattern, size: number): Int8Array {
  const out = new Int8Array(size);
  for (let m = 0; m < pattern.positions.length; m++) out[pattern.positions[m]] = pattern.negative[m] ? -1 : 1;
  return out;
}
