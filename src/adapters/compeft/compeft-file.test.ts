import { describe, expect, it } from 'vitest';
import { loraTargetShape, type ModelConfig } from '../../model/model-config.ts';
import { compressLoraTensors } from './compeft-codec.ts';
import { decodeTensorInto, decodeToPeftLike } from './compeft-decode.ts';
import { COMPEFT_MAGIC } from './compeft-format.ts';
import { parseCompeft } from './compeft-reader.ts';
import { SMALL_TEST_CONFIG, syntheticLoraTensors } from './compeft-synthetic.ts';
import type { TernaryTensor } from './compeft-types.ts';
import { writeCompeft, type CompeftMeta } from './compeft-writer.ts';

const TINY: ModelConfig = { ...SMALL_TEST_CONFIG, hiddenSize: 48, intermediateSize: 80, numHeads: 4, numKvHeads: 2, headDim: 12, numLayers: 2 };

function meta(numLayers: number, rank: number, density: number): CompeftMeta {
  return { baseModel: 'tiny/base', numLayers, rank, loraAlpha: 2 * rank, scale: 2, density, alpha: 'auto', relFrobeniusError: null };
}

function expectedValue(t: TernaryTensor, flat: number): number {
  // Independent of the decoder: binary search the kept positions.
  let lo = 0;
  let hi = t.positions.length - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    if (t.positions[mid] === flat) return t.negative[mid] ? -Math.fround(t.scale) : Math.fround(t.scale);
    if (t.positions[mid] < flat) lo = mid + 1;
    else hi = mid - 1;
  }
  return 0;
}

describe('.cpeft write -> parse -> decode', () => {
  const rank = 6;
  const tensors = syntheticLoraTensors({ config: TINY, rank, seed: 21 });

  for (const density of [0.05, 0.3, 0.8]) {
    it(`round-trips positions, signs and scales exactly (density ${density})`, () => {
      const c = compressLoraTensors(tensors, { density });
      const file = parseCompeft(writeCompeft(meta(TINY.numLayers, rank, density), c.tensors));
      expect(file.header.tensors.map((t) => t.name)).toEqual(tensors.map((t) => t.name));
      const peft = decodeToPeftLike(file);
      c.tensors.forEach((t) => {
        const got = t.kind === 'A' ? peft.layers[t.layer][t.target]!.a : peft.layers[t.layer][t.target]!.b;
        expect(got.length).toBe(t.rows * t.cols);
        for (let p = 0; p < got.length; p++) expect(got[p]).toBe(expectedValue(t, p));
      });
      expect(peft.rank).toBe(rank);
      expect(peft.baseModel).toBe('tiny/base');
      expect(peft.targets).toEqual(['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj']);
      if (density === 0.8) expect(file.header.tensors.every((t) => t.encoding === 'bitmap')).toBe(true);
      if (density === 0.05) expect(file.header.tensors.every((t) => t.encoding === 'rice')).toBe(true);
    });
  }

  it('keeps names that are not canonical PEFT keys', () => {
    const c = compressLoraTensors(tensors.slice(0, 2).map((t) => ({ ...t, name: `custom.${t.kind}` })), { density: 0.1 });
    const file = parseCompeft(writeCompeft(meta(TINY.numLayers, rank, 0.1), c.tensors));
    expect(file.header.tensors.map((t) => t.name)).toEqual(['custom.A', 'custom.B']);
  });

  it('decodes straight into transposed, rank-padded slots and leaves padding alone', () => {
    const c = compressLoraTensors(tensors, { density: 0.2 });
    const file = parseCompeft(writeCompeft(meta(TINY.numLayers, rank, 0.2), c.tensors));
    const maxRank = 9;
    const numSlots = 3;
    const slot = 1;
    const [inF, outF] = loraTargetShape(TINY, 'q_proj');
    const aIdx = file.header.tensors.findIndex((t) => t.layer === 1 && t.target === 'q_proj' && t.kind === 'A');
    const bIdx = file.header.tensors.findIndex((t) => t.layer === 1 && t.target === 'q_proj' && t.kind === 'B');
    const aStack = new Float32Array(numSlots * inF * maxRank).fill(7); // [slots, in, maxRank]
    const bStack = new Float32Array(numSlots * maxRank * outF).fill(7); // [slots, maxRank, out]
    decodeTensorInto(file, aIdx, aStack, slot * inF * maxRank, { row: 1, col: maxRank });
    decodeTensorInto(file, bIdx, bStack, slot * maxRank * outF, { row: 1, col: outF });
    const a = c.tensors[aIdx];
    const b = c.tensors[bIdx];
    for (let s = 0; s < numSlots; s++) for (let j = 0; j < inF; j++) for (let q = 0; q < maxRank; q++) {
      const v = aStack[(s * inF + j) * maxRank + q];
      expect(v).toBe(s === slot && q < rank ? expectedValue(a, q * inF + j) : 7);
    }
    for (let s = 0; s < numSlots; s++) for (let q = 0; q < maxRank; q++) for (let i = 0; i < outF; i++) {
      const v = bStack[(s * maxRank + q) * outF + i];
      expect(v).toBe(s === slot && q < rank ? expectedValue(b, i * rank + q) : 7);
    }
  });

  it('bounds-checks the destination before writing anything', () => {
    const c = compressLoraTensors(tensors, { density: 0.2 });
    const file = parseCompeft(writeCompeft(meta(TINY.numLayers, rank, 0.2), c.tensors));
    const t = file.header.tensors[0];
    const exact = new Float32Array(t.rows * t.cols).fill(3);
    decodeTensorInto(file, 0, exact, 0, { row: t.cols, col: 1 });
    const n = t.rows * t.cols;
    const cases: Array<{ len: number; off: number; strides: { row: number; col: number }; ok: boolean }> = [
      { len: n - 1, off: 0, strides: { row: t.cols, col: 1 }, ok: false }, // one short
      { len: n, off: 1, strides: { row: t.cols, col: 1 }, ok: false }, // last element past the end
      { len: n, off: -1, strides: { row: t.cols, col: 1 }, ok: false }, // before the start
      { len: 2 * n, off: 0, strides: { row: 1, col: 2 * t.rows + 1 }, ok: false }, // strided past the end
      { len: n, off: n - 2, strides: { row: -t.cols, col: -1 }, ok: false }, // negative strides below 0
      { len: n, off: n - 1, strides: { row: -t.cols, col: -1 }, ok: true }, // reversed layout, exactly fits
    ];
    for (const { len, off, strides, ok } of cases) {
      const dest = new Float32Array(len).fill(3);
      if (ok) {
        decodeTensorInto(file, 0, dest, off, strides);
        expect([...dest].reverse()).toEqual([...exact]);
      } else {
        expect(() => decodeTensorInto(file, 0, dest, off, strides)).toThrow(/must hold them/);
        expect(dest.every((v) => v === 3)).toBe(true);
      }
    }
    expect(() => decodeTensorInto(file, file.header.tensors.length, exact, 0, { row: 1, col: 1 })).toThrow(/tensorIndex/);
    expect(() => decodeTensorInto(file, 0, exact, 0.5, { row: t.cols, col: 1 })).toThrow(/integers/);
  });

  it('is much smaller than fp16 and decodes fast (rank 16, 30 layers x 7 targets, small shapes)', () => {
    const full = syntheticLoraTensors({ config: SMALL_TEST_CONFIG, rank: 16, seed: 2 });
    const numParams = full.reduce((s, t) => s + t.data.length, 0);
    const c = compressLoraTensors(full, { density: 0.1 });
    const bytes = writeCompeft(meta(30, 16, 0.1), c.tensors);
    const ratio = (numParams * 2) / bytes.length;
    expect(ratio).toBeGreaterThan(15);
    expect(ratio).toBeLessThan(28.5); // entropy bound of positions + signs at 10% is ~28x
    const t0 = performance.now();
    const file = parseCompeft(bytes);
    const parseMs = performance.now() - t0;
    const dest = new Float32Array(16 * SMALL_TEST_CONFIG.intermediateSize);
    const reps = 3;
    const t1 = performance.now();
    for (let r = 0; r < reps; r++) {
      file.header.tensors.forEach((t, i) => decodeTensorInto(file, i, dest, 0, { row: t.cols, col: 1 }));
    }
    const decodeMs = (performance.now() - t1) / reps;
    const denseMB = (numParams * 4) / 1e6;
    console.log(
      `[compeft] rank16 x 30 layers x 7 targets: ${numParams} params, ${bytes.length} bytes, ${ratio.toFixed(1)}x vs fp16, ` +
        `parse+verify ${parseMs.toFixed(1)} ms, decode ${decodeMs.toFixed(1)} ms/adapter (${(denseMB / (decodeMs / 1000)).toFixed(0)} MB/s fp32 out, ` +
        `${(bytes.length / 1e6 / (decodeMs / 1000)).toFixed(0)} MB/s compressed in), rel. Frobenius error ${c.overallRelError.toFixed(3)}`,
    );
    expect(decodeMs).toBeLessThan(1000);
  });

  it('starts with the magic and a little-endian version', () => {
    const c = compressLoraTensors(tensors.slice(0, 2), { density: 0.1 });
    const bytes = writeCompeft(meta(TINY.numLayers, rank, 0.1), c.tensors);
    expect([...bytes.subarray(0, 8)]).toEqual([...COMPEFT_MAGIC]);
    expect(bytes[8] | (bytes[9] << 8)).toBe(1);
    const headerLen = new DataView(bytes.buffer).getUint32(12, true);
    const json = JSON.parse(new TextDecoder().decode(bytes.subarray(16, 16 + headerLen)));
    expect(json.formatVersion).toBe('1.0');
    expect(json.tensors[0].shape).toEqual([rank, TINY.hiddenSize]);
  });
});

describe('checkCompeftCompatible', () => {
  it('accepts the model the adapter was made for and names the mismatch otherwise', async () => {
    const { checkCompeftCompatible } = await import('./compeft-compat.ts');
    const c = compressLoraTensors(syntheticLoraTensors({ config: TINY, rank: 6, seed: 1 }), { density: 0.1 });
    const file = parseCompeft(writeCompeft(meta(TINY.numLayers, 6, 0.1), c.tensors));
    checkCompeftCompatible(file, TINY, { maxRank: 8 });
    expect(() => checkCompeftCompatible(file, TINY, { maxRank: 4 })).toThrow(/max rank 4. Given: 6/);
    expect(() => checkCompeftCompatible(file, { ...TINY, numLayers: 3 })).toThrow(/2 layers; the model has 3/);
    expect(() => checkCompeftCompatible(file, { ...TINY, hiddenSize: 64 })).toThrow(/the model needs \[6, 64\]/);
  });
});
