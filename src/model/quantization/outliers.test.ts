import { describe, expect, it } from 'vitest';
import {
  int4OutlierQuantizer,
  int8OutlierQuantizer,
  outlierSplitError,
  selectOutlierColumns,
  splitOutliers,
} from './outliers.ts';
import { seededNormals } from '../../util/seeded-random.ts';

describe('selectOutlierColumns', () => {
  const N = 64;
  const K = 256;
  const planted = [5, 20, 100, 201]; // 5 and 20 share an int4 block of 32
  const w = seededNormals(N * K, 3);
  for (const k of planted) for (let n = 0; n < N; n++) w[n * K + k] *= 40;

  it('finds planted outlier columns, including two in one block, for int4 and int8', () => {
    for (const quantizer of [int4OutlierQuantizer({ blockSize: 32 }), int8OutlierQuantizer()]) {
      expect(Array.from(selectOutlierColumns(w, N, K, planted.length / K, quantizer))).toEqual(planted);
    }
  });

  it('keeping them in float cuts the quantization error far more than keeping other columns', () => {
    const quantizer = int4OutlierQuantizer({ blockSize: 32 });
    const none = outlierSplitError(w, N, K, [], quantizer);
    const chosen = outlierSplitError(w, N, K, selectOutlierColumns(w, N, K, planted.length / K, quantizer), quantizer);
    const others = outlierSplitError(w, N, K, [6, 21, 101, 202], quantizer);
    expect(chosen).toBeLessThan(none * 0.2);
    expect(chosen).toBeLessThan(others * 0.2);
  });

  it('selects round(fraction * K) columns and none for fraction 0', () => {
    const quantizer = int4OutlierQuantizer();
    expect(selectOutlierColumns(w, N, K, 0, quantizer).length).toBe(0);
    expect(selectOutlierColumns(w, N, K, 0.03, quantizer).length).toBe(8);
    expect(() => selectOutlierColumns(w, N, K, 1.5, quantizer)).toThrowError('`fraction` must be >= 0 and <= 1. Given: 1.5');
  });
});

describe('splitOutliers', () => {
  // W [N=2, K=3]
  const w = Float32Array.of(1, 2, 3, 4, 5, 6);

  it('zeroes the columns in main and stores them as rows of W^T, sorted', () => {
    const split = splitOutliers(w, 2, 3, [2, 0]);
    expect(Array.from(split.columns)).toEqual([0, 2]);
    expect(Array.from(split.main)).toEqual([0, 2, 0, 0, 5, 0]);
    expect(Array.from(split.outlier)).toEqual([1, 4, 3, 6]);
  });

  it('x W^T equals x main^T + x[:, columns] @ outlier', () => {
    const N = 5;
    const K = 9;
    const weight = seededNormals(N * K, 12);
    const x = seededNormals(K, 13);
    const split = splitOutliers(weight, N, K, [7, 1, 4]);
    for (let n = 0; n < N; n++) {
      let full = 0;
      let parts = 0;
      for (let k = 0; k < K; k++) {
        full += x[k] * weight[n * K + k];
        parts += x[k] * split.main[n * K + k];
      }
      split.columns.forEach((k, c) => (parts += x[k] * split.outlier[c * N + n]));
      expect(parts).toBeCloseTo(full, 5);
    }
  });

  it('rejects repeated or out-of-range columns', () => {
    expect(() => splitOutliers(w, 2, 3, [1, 1])).toThrowError('`columns` must not repeat a column. Given: 1 twice');
    expect(() => splitOutliers(w, 2, 3, [3])).toThrowError('`columns` must be values >= 0 and < K (3). Given: 3');
  });
});
