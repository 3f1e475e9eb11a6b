import { describe, expect, test } from 'vitest';
import { SMALL_TEST_CONFIG } from '../../adapters/compeft/compeft-synthetic.ts';
import { LORA_TARGETS, loraTargetShape, type LoraTarget, type ModelConfig } from '../model-config.ts';
import { seededRandom } from '../../../test/helpers/seeded-random.ts';
import { AdapterSlotStacks, type LoraWeights } from './adapter-slot-stacks.ts';
import { PackedLoraStacks, type PackedLoraFactors } from './packed-lora-stacks.ts';

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

/** The same product from the packed factors, over the columns [start, start + rank) (the adapter scale is in A). */
function packedDelta(p: PackedLoraFactors, layer: number, target: LoraTarget, start: number, rank: number): Float64Array {
  const [inF, outF] = loraTargetShape(CONFIG, target);
  const cols = p.numColumns;
  const a = p.a(layer, target);
  const b = p.b(layer, target);
  const out = new Float64Array(inF * outF);
  for (let k = 0; k < inF; k++) for (let o = 0; o < outF; o++) {
    let s = 0;
    for (let j = start; j < start + rank; j++) s += a[k * cols + j] * b[j * outF + o];
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
  test('a group\'s packing holds the adapters its rows use, at true rank, in slot order; base and empty slots take no columns', () => {
    const slots = new AdapterSlotStacks(CONFIG, 6, 8);
    const packed = new PackedLoraStacks(CONFIG, slots);
    const none = packed.forRows([0, 0]);
    expect(none.numColumns).toBe(1); // nothing to apply: one zero column
    expect(none.a(0, 'q_proj')).toEqual(new Float32Array(loraTargetShape(CONFIG, 'q_proj')[0]));
    expect(Array.from(none.select([0, 0]))).toEqual([0, 0]);
    slots.write(3, randomAdapter(5, 2, 1));
    slots.write(1, randomAdapter(3, 0.5, 2));
    slots.write(4, randomAdapter(8, 1, 3)); // resident, not used by the group below
    const f = packed.forRows([3, 0, 1, 3, 2]); // slot 2 is empty
    expect(f.columnRanges).toEqual([{ slot: 1, start: 0, rank: 3 }, { slot: 3, start: 3, rank: 5 }]);
    expect(f.numColumns).toBe(8);
    expect(f.a(1, 'down_proj').length).toBe(CONFIG.intermediateSize * 8);
    expect(f.b(1, 'down_proj').length).toBe(8 * CONFIG.hiddenSize);
    slots.clear(1);
    expect(packed.forRows([3, 1]).columnRanges).toEqual([{ slot: 3, start: 0, rank: 5 }]);
  });

  test('packed factors reproduce each adapter\'s scale * A B up to fp32 rounding, for adapters of different magnitudes', () => {
    const slots = new AdapterSlotStacks(CONFIG, 4, 8);
    const adapters = [randomAdapter(8, 2, 11, 1), randomAdapter(4, 1, 12, 0.01)];
    slots.write(1, adapters[0]);
    slots.write(2, adapters[1]);
    const f = new PackedLoraStacks(CONFIG, slots).forRows([1, 2]);
    for (const [n, range] of f.columnRanges.entries()) {
      for (const layer of [0, 1]) {
        for (const target of LORA_TARGETS) {
          const dense = denseDelta(adapters[n], layer, target).map((v) => v * adapters[n].scale);
          const { diff, scale } = maxAbsDiff(packedDelta(f, layer, target, range.start, range.rank), dense);
          expect(diff).toBeLessThan(1e-6 * scale);
          expect(scale).toBeGreaterThan(0);
        }
      }
    }
  });

  test('select: each row selects its own adapter\'s columns only; base rows select none', () => {
    const slots = new AdapterSlotStacks(CONFIG, 4, 8);
    slots.write(1, randomAdapter(2, 4, 3));
    slots.write(3, randomAdapter(3, 0.25, 4));
    const rows = [3, 0, 1, 3];
    const select = new PackedLoraStacks(CONFIG, slots).forRows(rows).select(rows);
    expect(Array.from(select)).toEqual([0, 0, 1, 1, 1, 0, 0, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0, 1, 1, 1]);
  });

  test('packings are reused by groups they cover (up to twice the width needed) and rebuilt when a slot changes', () => {
    const slots = new AdapterSlotStacks(CONFIG, 5, 4);
    slots.write(1, randomAdapter(4, 1, 5));
    slots.write(2, randomAdapter(2, 1, 6));
    slots.write(3, randomAdapter(4, 1, 7));
    const packed = new PackedLoraStacks(CONFIG, slots);
    const all = packed.forRows([1, 2, 3]);
    expect(packed.forRows([3, 1, 2, 2])).toBe(all);
    expect(packed.forRows([1, 3])).toBe(all); // 10 columns for 8 needed
    const one = packed.forRows([2]); // 10 columns for 2 needed: too wide, a packing of its own
    expect(one.numColumns).toBe(2);
    expect(packed.forRows([1, 2, 3])).toBe(all); // both kept
    // slot 2's columns are the same bytes in both packings
    const [inF] = loraTargetShape(CONFIG, 'q_proj');
    for (let k = 0; k < inF; k++) for (let j = 0; j < 2; j++) expect(one.a(0, 'q_proj')[k * 2 + j]).toBe(all.a(0, 'q_proj')[k * 10 + 4 + j]);
    slots.write(3, randomAdapter(4, 1, 8));
    const rebuilt = packed.forRows([1, 2, 3]);
    expect(rebuilt).not.toBe(all);
    expect(rebuilt.a(0, 'q_proj').subarray(0, 4)).toEqual(all.a(0, 'q_proj').subarray(0, 4)); // slot 1 unchanged
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
