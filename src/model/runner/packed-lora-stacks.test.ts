import { describe, expect, test } from 'vitest';
import { SMALL_TEST_CONFIG } from '../../adapters/compeft/compeft-synthetic.ts';
import { LORA_TARGETS, loraTargetShape, type LoraTarget, type ModelConfig } from '../model-config.ts';
import { seededRandom } from '../../../test/helpers/seeded-random.ts';
import { AdapterSlotStacks, type LoraWeights } from './adapter-slot-stacks.ts';
import { packedLoraIndices, PackedLoraStacks, type PackedLoraFactors } from './packed-lora-stacks.ts';

const CONFIG: ModelConfig = { ...SMALL_TEST_CONFIG, hiddenSize: 48, intermediateSize: 80, numHeads: 4, numKvHeads: 2, headDim: 12, numLayers: 2 };

function randomAdapter(rank: number, scale: number, seed: number, magnitude = 1): LoraWeights {
  const rand = seededRandom(seed);
  const layers = Array.from({ length: CONFIG.numLayers }, () =>
    Object.fromEntries(LORA_TARGETS.map((t) => {
      const [inF, outF] = loraTargetShape(CONFIG, t);
      return [t, { a: Float32Array.from({ length: rank * inF }, () => (rand() - 0.5) * magnitude), b: Float32Array.from({ length: outF * rank }, () => (rand() - 0.5) * magnitude) }];
    })),
  );
  return { rank, scale, layers };
}

/** The dense product A B ([in, out]) of one adapter and module from PEFT factors: sum_i A[i, k] B[o, i]. */
function denseDelta(w: LoraWeights, layer: number, target: LoraTarget): Float64Array {
  const [inF, outF] = loraTargetShape(CONFIG, target);
  const { a, b } = w.layers[layer][target]!;
  const out = new Float64Array(inF * outF);
  for (let k = 0; k < inF; k++) for (let o = 0; o < outF; o++) {
    let s = 0;
    for (let i = 0; i < w.rank; i++) s += a[i * inF + k] * b[o * w.rank + i];
    out[k * outF + o] = s;
  }
  return out;
}

/** The same product from the packed factors of adapter n (the scale is in A; columns past the rank are zero). */
function packedDelta(p: PackedLoraFactors, layer: number, target: LoraTarget, n: number): Float64Array {
  const [inF, outF] = loraTargetShape(CONFIG, target);
  const R = p.rank;
  const a = p.a(layer, target);
  const b = p.b(layer, target);
  const out = new Float64Array(inF * outF);
  for (let k = 0; k < inF; k++) for (let o = 0; o < outF; o++) {
    let s = 0;
    for (let j = 0; j < R; j++) s += a[(n * inF + k) * R + j] * b[(n * R + j) * outF + o];
    out[k * outF + o] = s;
  }
  return out;
}

function maxAbsDiff(x: Float64Array, y: Float64Array): { diff: number; scale: number } {
  let diff = 0;
  let scale = 0;
  for (let i = 0; i < x.length; i++) {
    diff = Math.max(diff, Math.abs(x[i] - y[i]));
    scale = Math.max(scale, Math.abs(y[i]));
  }
  return { diff, scale };
}

describe('PackedLoraStacks', () => {
  test('a batch\'s packing holds the adapters its rows use, in slot order, at the slots\' max rank; none: one zero adapter', () => {
    const slots = new AdapterSlotStacks(CONFIG, 6, 8);
    const packed = new PackedLoraStacks(CONFIG, slots);
    const none = packed.forRows([0, 0]);
    expect(none.slots).toEqual([0]);
    expect(none.a(0, 'q_proj')).toEqual(new Float32Array(loraTargetShape(CONFIG, 'q_proj')[0] * 8));
    slots.write(3, randomAdapter(5, 2, 1));
    slots.write(1, randomAdapter(3, 0.5, 2));
    slots.write(4, randomAdapter(8, 1, 3)); // resident, not used by the batch below
    const f = packed.forRows([3, 0, 1, 3, 2]); // slot 2 is empty
    expect(f.slots).toEqual([1, 3]);
    expect(f.rank).toBe(8);
    expect(f.a(1, 'down_proj').length).toBe(2 * CONFIG.intermediateSize * 8);
    expect(f.b(1, 'down_proj').length).toBe(2 * 8 * CONFIG.hiddenSize);
    slots.clear(1);
    expect(packed.forRows([3, 1]).slots).toEqual([3]);
  });

  test('packed factors reproduce each adapter\'s scale * A B up to fp32 rounding, for adapters of different ranks and magnitudes', () => {
    const slots = new AdapterSlotStacks(CONFIG, 4, 8);
    const adapters = [randomAdapter(8, 2, 11, 1), randomAdapter(4, 1, 12, 0.01)];
    slots.write(1, adapters[0]);
    slots.write(2, adapters[1]);
    const f = new PackedLoraStacks(CONFIG, slots).forRows([1, 2]);
    for (const n of [0, 1]) {
      for (const layer of [0, 1]) {
        for (const target of LORA_TARGETS) {
          const dense = denseDelta(adapters[n], layer, target).map((v) => v * adapters[n].scale);
          const { diff, scale } = maxAbsDiff(packedDelta(f, layer, target, n), dense);
          expect(diff).toBeLessThan(1e-6 * scale);
          expect(scale).toBeGreaterThan(0);
        }
      }
    }
  });

  test('packings are reused by batches they cover (up to twice the adapters needed) and rebuilt when a slot changes', () => {
    const slots = new AdapterSlotStacks(CONFIG, 5, 4);
    slots.write(1, randomAdapter(4, 1, 5));
    slots.write(2, randomAdapter(2, 1, 6));
    slots.write(3, randomAdapter(4, 1, 7));
    const packed = new PackedLoraStacks(CONFIG, slots);
    const all = packed.forRows([1, 2, 3]);
    expect(packed.forRows([3, 1, 2, 2])).toBe(all);
    expect(packed.forRows([1, 3])).toBe(all); // 3 adapters for 2 needed
    const one = packed.forRows([2]); // 3 for 1 needed: too many, a packing of its own
    expect(one.slots).toEqual([2]);
    expect(packed.forRows([1, 2, 3])).toBe(all); // both kept
    // slot 2's factors are the same bytes in both packings
    const block = loraTargetShape(CONFIG, 'q_proj')[0] * 4;
    expect(one.a(0, 'q_proj').subarray(0, block)).toEqual(all.a(0, 'q_proj').subarray(block, 2 * block));
    slots.write(3, randomAdapter(4, 1, 8));
    const rebuilt = packed.forRows([1, 2, 3]);
    expect(rebuilt).not.toBe(all);
    expect(rebuilt.a(0, 'q_proj').subarray(0, block)).toEqual(all.a(0, 'q_proj').subarray(0, block)); // slot 1 unchanged
    expect(packed.forRows([2])).toBe(one); // does not contain slot 3: still valid
  });

  test('memory: what the copies hold under slot churn stays within maxBytes, which grows with slots and rank', () => {
    const numSlots = 6;
    const maxRank = 4;
    const slots = new AdapterSlotStacks(CONFIG, numSlots, maxRank);
    const packed = new PackedLoraStacks(CONFIG, slots);
    const bound = PackedLoraStacks.maxBytes(CONFIG, numSlots, maxRank);
    const rand = seededRandom(3);
    let peak = 0;
    for (let round = 0; round < 60; round++) {
      const slot = 1 + Math.floor(rand() * (numSlots - 1));
      slots.write(slot, randomAdapter(1 + Math.floor(rand() * maxRank), 1, 100 + round));
      const rows = Array.from({ length: 1 + Math.floor(rand() * 8) }, () => Math.floor(rand() * numSlots));
      packed.forRows(rows);
      peak = Math.max(peak, packed.bytes());
    }
    expect(peak).toBeGreaterThan(0);
    expect(peak).toBeLessThanOrEqual(bound);
    expect(PackedLoraStacks.maxBytes(CONFIG, numSlots + 1, maxRank)).toBeGreaterThan(bound);
    expect(PackedLoraStacks.maxBytes(CONFIG, numSlots, 2 * maxRank)).toBe(2 * bound);
  });
});

describe('packedLoraIndices', () => {
  const pairs = (a: BigInt64Array) => Array.from({ length: a.length / 2 }, (_, i) => [Number(a[2 * i]), Number(a[2 * i + 1])]);

  test('groups each adapter\'s tokens, pads every group to the same M >= 2, and points tokens without adapter at the zero row', () => {
    // rows: slot 3 (2 tokens), base (3 tokens), slot 1 (1 token), slot 3 (1 token); step length 3
    const { tokenIndex, rowIndex, entries } = packedLoraIndices(
      [{ slot: 3, tokens: 2 }, { slot: 0, tokens: 3 }, { slot: 1, tokens: 1 }, { slot: 3, tokens: 1 }],
      3,
      [1, 3],
    );
    expect(entries).toBe(3);
    // adapter 0 (slot 1): token (2, 0), padded with itself; adapter 1 (slot 3): (0, 0), (0, 1), (3, 0)
    expect(pairs(tokenIndex)).toEqual([[2, 0], [2, 0], [2, 0], [0, 0], [0, 1], [3, 0]]);
    const zero = [0, 3];
    expect(pairs(rowIndex)).toEqual([
      [1, 0], [1, 1], zero, // row 0: its 2 tokens, then padding
      zero, zero, zero, // row 1: base model
      [0, 0], zero, zero, // row 2
      [1, 2], zero, zero, // row 3
    ]);
  });

  test('never one entry per adapter (a one-row GEMM runs another code path): a single decode row gets M = 2', () => {
    const { tokenIndex, entries } = packedLoraIndices([{ slot: 2, tokens: 1 }], 1, [2]);
    expect(entries).toBe(2);
    expect(pairs(tokenIndex)).toEqual([[0, 0], [0, 0]]);
  });
});
