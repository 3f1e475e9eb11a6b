import { BitWriter } from './bit-writer.ts';

/**
 * One tensor's payload: [positions section][sign section].
 * - positions, 'rice': for each kept flat index p_m (increasing), gap g_m = p_m - p_{m-1} - 1 (p_{-1} = -1), written as
 *   q = g >> k in unary (q one-bits, then a zero bit) followed by the k low bits of g, least significant first.
 * - positions, 'bitmap': ceil(n / 8) bytes, bit p set when index p is kept.
 * - signs: ceil(nnz / 8) bytes, bit m set when the m-th kept value is negative.
 * All bit streams are least-significant-bit first; padding bits are zero.
 */
export type PositionEncoding = 'rice' | 'bitmap';

/** Rice parameters are capped so one read never needs more than a 32-bit window. */
export const MAX_RICE_K = 24;

export interface EncodedPayload {
  encoding: PositionEncoding;
  /** Rice parameter (0 for bitmaps). */
  riceK: number;
  bytes: Uint8Array;
}

export interface PayloadLayout {
  encoding: PositionEncoding;
  riceK: number;
  nnz: number;
  /** rows * cols of the tensor. */
  numElements: number;
}

/** Exact size in bits of the Rice-coded gaps with parameter k. */
export function riceBits(positions: Uint32Array, k: number): number {
  let bits = positions.length * (k + 1);
  let prev = -1;
  for (let m = 0; m < positions.length; m++) {
    const gap = positions[m] - prev - 1;
    bits += Math.floor(gap / 2 ** k);
    prev = positions[m];
  }
  return bits;
}

/** The Rice parameter in [0, MAX_RICE_K] that minimises the coded size (exhaustive; ties go to the smaller k). */
export function chooseRiceParameter(positions: Uint32Array): { riceK: number; bits: number } {
  let best = { riceK: 0, bits: riceBits(positions, 0) };
  for (let k = 1; k <= MAX_RICE_K; k++) {
    const bits = riceBits(positions, k);
    if (bits < best.bits) best = { riceK: k, bits };
    // Once k exceeds every gap's bit length, cost only grows by nnz per step.
    if (bits > best.bits + positions.length * 2) break;
  }
  return best;
}

export function signBytes(nnz: number): number {
  return Math.ceil(nnz / 8);
}

export function bitmapBytes(numElements: number): number {
  return Math.ceil(numElements / 8);
}

/** Encodes positions (strictly increasing, < numElements) and signs with whichever of Rice or bitmap is smaller. */
export function encodePayload(positions: Uint32Array, negative: Uint8Array, numElements: number): EncodedPayload {
  const nnz = positions.length;
  const rice = chooseRiceParameter(positions);
  const riceSize = Math.ceil(rice.bits / 8);
  const bitmapSize = bitmapBytes(numElements);
  const useRice = riceSize < bitmapSize;
  const posBytes = useRice ? riceSize : bitmapSize;
  const out = new Uint8Array(posBytes + signBytes(nnz));
  if (useRice) {
    out.set(encodeRicePositions(positions, rice.riceK), 0);
  } else {
    for (let m = 0; m < nnz; m++) {
      const p = positions[m];
      out[p >>> 3] |= 1 << (p & 7);
    }
  }
  for (let m = 0; m < nnz; m++) {
    if (negative[m]) out[posBytes + (m >>> 3)] |= 1 << (m & 7);
  }
  return { encoding: useRice ? 'rice' : 'bitmap', riceK: useRice ? rice.riceK : 0, bytes: out };
}

/** Rice-codes the gaps between strictly increasing positions with parameter k (0 <= k <= MAX_RICE_K). */
export function encodeRicePositions(positions: Uint32Array, k: number): Uint8Array {
  const w = new BitWriter(Math.ceil(riceBits(positions, k) / 8));
  const twoK = 2 ** k;
  let prev = -1;
  for (let m = 0; m < positions.length; m++) {
    const gap = positions[m] - prev - 1;
    const q = Math.floor(gap / twoK);
    w.writeUnary(q);
    w.writeBits(gap - q * twoK, k);
    prev = positions[m];
  }
  return w.finish();
}

/** Thrown by `visitPayload` on malformed data; callers wrap it with the file and tensor name. */
export class PayloadError extends Error {}

/**
 * Calls `visit(flatIndex, negative)` for each kept entry in increasing index order, reading
 * bytes[start, start + length). Checks everything a hostile payload can get wrong (truncation, gaps running past the
 * tensor end, wrong counts, non-zero padding) and throws PayloadError; never reads outside the given range.
 * O(nnz + length).
 */
export function visitPayload(
  bytes: Uint8Array,
  start: number,
  length: number,
  layout: PayloadLayout,
  visit: (flatIndex: number, negative: number) => void,
): void {
  const { nnz, numElements: n } = layout;
  const signLen = signBytes(nnz);
  const posLen = length - signLen;
  if (posLen < 0) throw new PayloadError(`payload is ${length} bytes, shorter than its ${signLen} sign bytes`);
  const signStart = start + posLen;
  if (nnz % 8 !== 0 && bytes[signStart + signLen - 1] >>> (nnz % 8) !== 0) {
    throw new PayloadError('sign padding bits are not zero');
  }
  if (layout.encoding === 'bitmap') {
    visitBitmap(bytes, start, posLen, signStart, nnz, n, visit);
  } else {
    visitRice(bytes, start, posLen, signStart, nnz, n, layout.riceK, visit);
  }
}

function visitBitmap(
  bytes: Uint8Array,
  start: number,
  posLen: number,
  signStart: number,
  nnz: number,
  n: number,
  visit: (flatIndex: number, negative: number) => void,
): void {
  if (posLen !== bitmapBytes(n)) throw new PayloadError(`bitmap is ${posLen} bytes, expected ${bitmapBytes(n)} for ${n} elements`);
  let m = 0;
  for (let byteIdx = 0; byteIdx < posLen; byteIdx++) {
    let x = bytes[start + byteIdx];
    while (x !== 0) {
      const low = x & -x;
      const p = byteIdx * 8 + (31 - Math.clz32(low));
      if (p >= n) throw new PayloadError(`bitmap marks index ${p}, past the tensor's ${n} elements`);
      if (m >= nnz) throw new PayloadError(`bitmap marks more than nnz = ${nnz} entries`);
      visit(p, (bytes[signStart + (m >>> 3)] >>> (m & 7)) & 1);
      m++;
      x ^= low;
    }
  }
  if (m !== nnz) throw new PayloadError(`bitmap marks ${m} entries, header says nnz = ${nnz}`);
}

function visitRice(
  bytes: Uint8Array,
  start: number,
  posLen: number,
  signStart: number,
  nnz: number,
  n: number,
  k: number,
  visit: (flatIndex: number, negative: number) => void,
): void {
  const end = start + posLen;
  const lowMask = (1 << k) - 1;
  const twoK = 2 ** k;
  // A quotient above this already puts the index past the end of the tensor.
  const maxQ = Math.floor(n / twoK);
  let p = start;
  let buf = 0; // holds `cnt` unread bits, LSB first; bits above cnt are zero
  let cnt = 0;
  let prev = -1;
  for (let m = 0; m < nnz; m++) {
    // Unary quotient: count one-bits up to the terminating zero bit.
    let q = 0;
    for (;;) {
      while (cnt <= 24 && p < end) {
        buf |= bytes[p++] << cnt;
        cnt += 8;
      }
      if (cnt === 0) throw new PayloadError(`positions end after ${m} of ${nnz} entries`);
      const inv = ~buf;
      const t = inv === 0 ? 32 : 31 - Math.clz32(inv & -inv);
      if (t < cnt) {
        q += t;
        buf = t + 1 >= 32 ? 0 : buf >>> (t + 1);
        cnt -= t + 1;
        break;
      }
      q += cnt;
      buf = 0;
      cnt = 0;
      if (q > maxQ) throw new PayloadError(`gap of entry ${m} runs past the tensor's ${n} elements`);
    }
    if (q > maxQ) throw new PayloadError(`gap of entry ${m} runs past the tensor's ${n} elements`);
    let low = 0;
    if (k > 0) {
      while (cnt < k && p < end) {
        buf |= bytes[p++] << cnt;
        cnt += 8;
      }
      if (cnt < k) throw new PayloadError(`positions end inside entry ${m} of ${nnz}`);
      low = buf & lowMask;
      buf = k >= 32 ? 0 : buf >>> k;
      cnt -= k;
    }
    const pos = prev + 1 + q * twoK + low;
    if (pos >= n) throw new PayloadError(`entry ${m} lands at index ${pos}, past the tensor's ${n} elements`);
    visit(pos, (bytes[signStart + (m >>> 3)] >>> (m & 7)) & 1);
    prev = pos;
  }
  const bitsUsed = (p - start) * 8 - cnt;
  if (Math.ceil(bitsUsed / 8) !== posLen || buf !== 0) {
    throw new PayloadError(`positions section is ${posLen} bytes but its ${nnz} entries use ${bitsUsed} bits (or padding is not zero)`);
  }
}
