import { describe, expect, it } from 'vitest';
import { dequantizeInt4, quantizeInt4, roundTripInt4 } from './int4-block.ts';
import { seededNormals } from '../../util/seeded-random.ts';

const sse = (a: Float32Array, b: Float32Array): number => a.reduce((s, x, i) => s + (x - b[i]) ** 2, 0);

describe('quantizeInt4 layout', () => {
  // Row 0: block 0 = i - 5 (lo -5, hi 10: scale 1, zp 5, q = i); block 1 = (i - 12) / 2 (lo -6, hi 1.5: scale 0.5, zp 12, q = i)
  // Row 1: block 0 = zeros (scale 1, zp 0, q = 0); block 1 = 2i (lo 0, hi 30: scale 2, zp 0, q = i)
  const K = 32;
  const w = new Float32Array(2 * K);
  for (let i = 0; i < 16; i++) {
    w[i] = i - 5;
    w[16 + i] = (i - 12) / 2;
    w[K + 16 + i] = 2 * i;
  }
  const q = quantizeInt4(w, 2, K, { blockSize: 16 });

  it('packs element 2j in the low nibble and 2j+1 in the high nibble, block after block, row after row', () => {
    const ascending = [0x10, 0x32, 0x54, 0x76, 0x98, 0xba, 0xdc, 0xfe];
    expect(Array.from(q.packed)).toEqual([...ascending, ...ascending, ...new Array(8).fill(0), ...ascending]);
    for (let i = 0; i < 16; i++) {
      const byte = q.packed[i >> 1];
      expect((i & 1) === 0 ? byte & 0x0f : byte >> 4).toBe(i);
    }
  });

  it('stores one scale per (row, block) and zero points two to a byte, even block in the low nibble', () => {
    expect(Array.from(q.scales)).toEqual([1, 0.5, 1, 2]);
    expect(Array.from(q.zeroPoints)).toEqual([5 | (12 << 4), 0]);
    expect(q).toMatchObject({ N: 2, K: 32, blockSize: 16 });
  });

  it('dequantizes this exactly representable input exactly', () => {
    expect(Array.from(dequantizeInt4(q))).toEqual(Array.from(w));
  });

  it('pads an odd K with zeros that land on the zero point', () => {
    const K = 37; // 3 blocks of 16: 11 padding values in the last block
    const x = seededNormals(3 * K, 4);
    const odd = quantizeInt4(x, 3, K, { blockSize: 16 });
    expect(odd.packed.length).toBe(3 * 3 * 8);
    expect(odd.scales.length).toBe(9);
    expect(odd.zeroPoints.length).toBe(3 * 2);
    for (let n = 0; n < 3; n++) {
      const zp = odd.zeroPoints[n * 2 + 1] & 0x0f; // block 2: low nibble of the second byte
      expect(odd.zeroPoints[n * 2 + 1] >> 4).toBe(0); // no block 3
      for (let i = 5; i < 16; i++) {
        const byte = odd.packed[(n * 3 + 2) * 8 + (i >> 1)];
        expect((i & 1) === 0 ? byte & 0x0f : byte >> 4).toBe(zp);
      }
    }
    const back = dequantizeInt4(odd);
    expect(back.length).toBe(3 * K);
    expect(Math.max(...back.map((v, i) => Math.abs(v - x[i])))).toBeLessThan(0.5);
  });
});

describe('quantizeInt4 error', () => {
  const N = 24;
  const K = 300;
  const w = seededNormals(N * K, 17, 0.05);

  it.each([16, 32, 64, 128])('without clipping every value is within scale/2 (block %i)', (blockSize) => {
    const q = quantizeInt4(w, N, K, { blockSize, clipRatios: [1] });
    const back = dequantizeInt4(q);
    const kBlocks = Math.ceil(K / blockSize);
    let worst = 0; // largest |x - deq| / scale
    for (let n = 0; n < N; n++) {
      for (let k = 0; k < K; k++) {
        const scale = q.scales[n * kBlocks + Math.floor(k / blockSize)];
        worst = Math.max(worst, Math.abs(w[n * K + k] - back[n * K + k]) / scale);
      }
    }
    expect(worst).toBeLessThanOrEqual(0.5 + 1e-6);
    expect(worst).toBeGreaterThan(0.4);
  });

  it('keeps 0 exact and maps an all-zero block to scale 1, zero point 0', () => {
    const x = new Float32Array(2 * 32);
    x.set(seededNormals(32, 5), 32);
    x[40] = 0;
    const q = quantizeInt4(x, 2, 32, { blockSize: 32 });
    expect(q.scales[0]).toBe(1);
    expect(q.zeroPoints[0]).toBe(0);
    expect(dequantizeInt4(q)[40]).toBe(0);
  });

  it('the clip search lowers the squared error and never raises it', () => {
    for (const blockSize of [32, 128]) {
      const plain = sse(w, roundTripInt4(w, N, K, { blockSize, clipRatios: [1] }));
      const searched = sse(w, roundTripInt4(w, N, K, { blockSize }));
      expect(searched).toBeLessThan(plain * 0.98);
    }
  });

  it('rejects unsupported block sizes and mismatched lengths, naming the field', () => {
    expect(() => quantizeInt4(w, N, K, { blockSize: 48 })).toThrowError('`blockSize` must be one of 16, 32, 64, 128. Given: 48');
    expect(() => quantizeInt4(w, N, K + 1)).toThrowError(/`weight.length` must be N \* K/);
    expect(() => quantizeInt4(w, N, K, { clipRatios: [1.2] })).toThrowError(expect.objectContaining({ code: 'INVALID_ARGUMENT' }));
  });
});
