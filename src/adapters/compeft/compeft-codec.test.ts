import { describe, expect, it } from 'vitest';
import type { ModelConfig } from '../../model/model-config.ts';
import { compressLoraTensors } from './compeft-codec.ts';
import { moduleProductStats, productSquaredError } from './compeft-product-error.ts';
import { chooseScales, type ModuleFactors } from './compeft-scales.ts';
import { SeededRandom } from '../../util/seeded-random.ts';
import { SMALL_TEST_CONFIG, syntheticLoraTensors } from './compeft-synthetic.ts';
import { keptCount, selectTopK } from './compeft-topk.ts';
import type { LoraTensor, TernaryTensor } from './compeft-types.ts';

const TINY: ModelConfig = { ...SMALL_TEST_CONFIG, hiddenSize: 48, intermediateSize: 80, numHeads: 4, numKvHeads: 2, headDim: 12, numLayers: 3 };

/** Dense [out, in] = B [out, r] x A [r, in]. */
function matmul(b: Float32Array | Float64Array, a: Float32Array | Float64Array, out: number, r: number, inF: number): Float64Array {
  const y = new Float64Array(out * inF);
  for (let i = 0; i < out; i++) for (let p = 0; p < r; p++) {
    const bv = b[i * r + p];
    for (let j = 0; j < inF; j++) y[i * inF + j] += bv * a[p * inF + j];
  }
  return y;
}

function dense(t: TernaryTensor): Float64Array {
  const d = new Float64Array(t.rows * t.cols);
  t.positions.forEach((p, m) => (d[p] = t.negative[m] ? -t.scale : t.scale));
  return d;
}

function relErr(x: Float64Array, y: Float64Array): number {
  let e = 0;
  let n = 0;
  for (let i = 0; i < x.length; i++) {
    e += (x[i] - y[i]) ** 2;
    n += x[i] ** 2;
  }
  return Math.sqrt(e / n);
}

describe('selectTopK', () => {
  it('keeps exactly round(density * n) values of largest magnitude, with their signs', () => {
    const rng = new SeededRandom(3);
    const data = new Float32Array(1000).map(() => rng.nextNormal());
    const { positions, negative } = selectTopK(data, 0.1);
    expect(positions.length).toBe(100);
    const kept = new Set(positions);
    let minKept = Infinity;
    let maxDropped = 0;
    data.forEach((v, i) => (kept.has(i) ? (minKept = Math.min(minKept, Math.abs(v))) : (maxDropped = Math.max(maxDropped, Math.abs(v)))));
    expect(minKept).toBeGreaterThan(maxDropped);
    positions.forEach((p, m) => expect(negative[m]).toBe(data[p] < 0 ? 1 : 0));
    for (let m = 1; m < positions.length; m++) expect(positions[m]).toBeGreaterThan(positions[m - 1]);
  });

  it('breaks ties by index and never keeps zeros', () => {
    const data = Float32Array.of(1, -1, 1, -1, 0.5, 0, 0, 0);
    expect([...selectTopK(data, 0.25).positions]).toEqual([0, 1]);
    expect([...selectTopK(data, 0.375).positions]).toEqual([0, 1, 2]);
    expect([...selectTopK(data, 1).positions]).toEqual([0, 1, 2, 3, 4]);
    expect(selectTopK(new Float32Array(10), 0.5).positions.length).toBe(0);
    expect(keptCount(10, 0.01)).toBe(1);
  });

  it('rejects bad density and non-finite values', () => {
    expect(() => selectTopK(new Float32Array(4), 0)).toThrow(/density/);
    expect(() => selectTopK(new Float32Array(4), 1.5)).toThrow(/density/);
    expect(() => selectTopK(Float32Array.of(1, NaN), 0.5)).toThrow(/finite/);
  });
});

describe('module product statistics', () => {
  it('match the materialised products', () => {
    const tensors = syntheticLoraTensors({ config: TINY, rank: 5, numLayers: 1, seed: 4 });
    for (let m = 0; m < tensors.length; m += 2) {
      const [a, b] = [tensors[m], tensors[m + 1]];
      const pa = selectTopK(a.data, 0.2);
      const pb = selectTopK(b.data, 0.3);
      const st = moduleProductStats(a, pa, b, pb);
      const ba = matmul(b.data, a.data, b.rows, a.rows, a.cols);
      const sa = dense({ ...a, scale: 1, ...pa });
      const sb = dense({ ...b, scale: 1, ...pb });
      const ss = matmul(sb, sa, b.rows, a.rows, a.cols);
      let normBA2 = 0, cross = 0, normSS2 = 0;
      for (let i = 0; i < ba.length; i++) {
        normBA2 += ba[i] ** 2;
        cross += ba[i] * ss[i];
        normSS2 += ss[i] ** 2;
      }
      expect(st.normBA2).toBeCloseTo(normBA2, 10);
      expect(st.cross / cross).toBeCloseTo(1, 9);
      expect(st.normSS2).toBeCloseTo(normSS2, 6);
      // Error formula vs direct evaluation at some scale.
      const c = 0.37 * (cross / normSS2);
      let direct = 0;
      for (let i = 0; i < ba.length; i++) direct += (ba[i] - c * ss[i]) ** 2;
      expect(productSquaredError(st, c) / direct).toBeCloseTo(1, 9);
    }
  });
});

describe('compressLoraTensors', () => {
  const tensors = syntheticLoraTensors({ config: TINY, rank: 8, seed: 12 });

  function reconstructionError(out: TernaryTensor[], src: LoraTensor[]): number[] {
    const errs: number[] = [];
    for (let m = 0; m < src.length; m += 2) {
      const [a, b] = [src[m], src[m + 1]];
      const ba = matmul(b.data, a.data, b.rows, a.rows, a.cols);
      const rec = matmul(dense(out[m + 1]), dense(out[m]), b.rows, a.rows, a.cols);
      errs.push(relErr(ba, rec));
    }
    return errs;
  }

  it('reports per-module errors equal to the materialised reconstruction error', () => {
    const res = compressLoraTensors(tensors, { density: 0.2, alpha: 'auto' });
    const direct = reconstructionError(res.tensors, tensors);
    res.modules.forEach((m, i) => expect(m.relError).toBeCloseTo(direct[i], 6));
    expect(res.overallRelError).toBeGreaterThan(0);
    expect(res.overallRelError).toBeLessThan(1);
    // Ternary: every kept value is exactly +-scale, scales positive, order preserved.
    res.tensors.forEach((t, i) => {
      expect(t.name).toBe(tensors[i].name);
      expect(t.positions.length).toBe(keptCount(t.rows * t.cols, 0.2));
      expect(t.scale).toBeGreaterThan(0);
    });
  });

  it('auto scales are optimal per module: no fixed alpha or global scalar does better on any module', () => {
    const auto = compressLoraTensors(tensors, { density: 0.1, alpha: 'auto' });
    const others = [
      ...[0.5, 1, 2, 3, 4].map((alpha) => compressLoraTensors(tensors, { density: 0.1, alpha })),
      compressLoraTensors(tensors, { density: 0.1, scaleMode: { kind: 'global', alpha: 'auto' } }),
      compressLoraTensors(tensors, { density: 0.1, scaleMode: { kind: 'global', alpha: 1 } }),
    ];
    for (const o of others) {
      o.modules.forEach((m, i) => expect(auto.modules[i].relError).toBeLessThanOrEqual(m.relError + 1e-12));
      expect(auto.overallRelError).toBeLessThanOrEqual(o.overallRelError + 1e-12);
    }
    // And scaling the chosen product up or down makes it worse.
    const factors: ModuleFactors[] = [];
    for (let m = 0; m < tensors.length; m += 2) {
      factors.push({ a: tensors[m], b: tensors[m + 1], patternA: auto.tensors[m], patternB: auto.tensors[m + 1] });
    }
    const chosen = chooseScales(factors, { kind: 'auto' });
    chosen.forEach((c) => {
      const c0 = c.scaleA * c.scaleB;
      for (const f of [0.9, 1.1]) expect(productSquaredError(c.stats, c0 * f)).toBeGreaterThan(productSquaredError(c.stats, c0));
    });
  });

  it('fixed alpha uses alpha x std of each dense tensor', () => {
    const res = compressLoraTensors(tensors, { density: 0.1, alpha: 2 });
    for (let i = 0; i < 4; i++) {
      const d = tensors[i].data;
      const mean = d.reduce((s, v) => s + v, 0) / d.length;
      const std = Math.sqrt(d.reduce((s, v) => s + (v - mean) ** 2, 0) / d.length);
      expect(res.tensors[i].scale).toBeCloseTo(2 * std, 10);
    }
  });

  it('error falls as density grows from 0.05 to 0.3 (keeping everything as +-scale is worse again)', () => {
    const errs = [0.05, 0.1, 0.2, 0.3].map((density) => compressLoraTensors(tensors, { density }).overallRelError);
    for (let i = 1; i < errs.length; i++) expect(errs[i]).toBeLessThan(errs[i - 1]);
    expect(compressLoraTensors(tensors, { density: 1 }).overallRelError).toBeGreaterThan(errs[3]);
  });

  it('rejects unpaired modules, rank mismatches and bad alpha', () => {
    expect(() => compressLoraTensors(tensors.slice(1), { density: 0.1 })).toThrow(/needs both A and B/);
    const bad = tensors.slice(0, 2).map((t) => ({ ...t }));
    bad[1] = { ...bad[1], cols: 3, rows: bad[1].data.length / 3 };
    expect(() => compressLoraTensors(bad, { density: 0.1 })).toThrow(/rank/);
    expect(() => compressLoraTensors(tensors, { density: 0.1, alpha: -1 })).toThrow(/alpha/);
  });
});
