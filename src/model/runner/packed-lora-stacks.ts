import { LORA_TARGETS, loraTargetShape, type LoraTarget, type ModelConfig } from '../model-config.ts';
import type { AdapterSlotStacks } from './adapter-slot-stacks.ts';

/** One adapter's place in a packing's columns. */
export interface PackedColumnRange {
  slot: number;
  /** First packed column. */
  start: number;
  /** Columns = the adapter's true rank. */
  rank: number;
}

const INT8_MAX = 127;
/** Packings kept for reuse (e.g. one for the decode group, some for prefill groups). */
const MAX_CACHED_PACKINGS = 4;

/** A group's packed factors: the adapters it needs, side by side at true rank (see PackedLoraStacks). */
export interface PackedLoraFactors {
  /** Columns (sum of the packed adapters' ranks, at least 1: with none there is one all-zero column). */
  readonly numColumns: number;
  readonly columnRanges: readonly PackedColumnRange[];
  /** [in, numColumns] int8 */
  a(layer: number, target: LoraTarget): Int8Array;
  /** [numColumns] float32 */
  aScale(layer: number, target: LoraTarget): Float32Array;
  /** [numColumns, out] int8 */
  b(layer: number, target: LoraTarget): Int8Array;
  /** [rowSlots.length, numColumns]: each row's adapter scale on its adapter's columns, 0 elsewhere (slot 0: all 0). */
  mask(rowSlots: readonly number[]): Float32Array;
}

/**
 * Int8 copies of adapters for the packed multi-LoRA kernel (kernels/multi-lora-packed.ts), derived from the fp32 slot
 * stacks. A group's packing holds the adapters its rows use, each at `rank` consecutive columns (true rank, no
 * padding), in slot order; per layer and target, A is [in, numColumns] int8 with a per-column scale and B is
 * [numColumns, out] int8:
 *
 *   A column j  = aq[:, j] * aScale[j]     aScale[j] = (max |A[:, j]| / 127) * bRowFactor[j]
 *   B row j     = bq[j, :] * bRowFactor[j] bRowFactor[j] = max |B[j, :]| / 127 (folded into aScale, so bq's scale is 1)
 *
 * Every token computes every packed column, so a packing holds only what the group uses (resident but idle adapters
 * cost nothing). Slots are quantized once per write (cached by slot version); packings are kept (a few, LRU) and
 * reused by any group whose adapters they contain, if no more than twice as wide as the group needs; a packing with a
 * slot written or cleared since is dropped.
 */
export class PackedLoraStacks {
  private readonly perSlot = new Map<number, QuantizedSlot>();
  /** Most recently used last. */
  private packings: Packing[] = [];

  constructor(
    readonly config: ModelConfig,
    private readonly slots: AdapterSlotStacks,
  ) {}

  /** The packed factors for a group whose rows use `rowSlots` (0 = base). */
  forRows(rowSlots: readonly number[]): PackedLoraFactors {
    const { ranks, scales, slotVersions } = this.slots;
    const needed = [...new Set(rowSlots)].filter((slot) => slot !== 0 && ranks[slot] > 0 && scales[slot] !== 0).sort((x, y) => x - y);
    const neededColumns = needed.reduce((sum, slot) => sum + ranks[slot], 0);
    this.packings = this.packings.filter((p) => p.ranges.every((r) => slotVersions[r.slot] === p.versions.get(r.slot) && scales[r.slot] !== 0));
    const fit = this.packings.find((p) => needed.every((slot) => p.versions.has(slot)) && p.numColumns <= Math.max(1, 2 * neededColumns));
    if (fit) {
      this.packings = [...this.packings.filter((p) => p !== fit), fit];
      return fit;
    }
    const packing = this.pack(needed);
    this.packings = [...this.packings.slice(-(MAX_CACHED_PACKINGS - 1)), packing];
    return packing;
  }

  /** Lays the given slots' cached int8 factors side by side (quantizing any slot written since it was last used). */
  private pack(slotList: number[]): Packing {
    const ranges: PackedColumnRange[] = [];
    const quantized: QuantizedSlot[] = [];
    let columns = 0;
    for (const slot of slotList) {
      const rank = this.slots.ranks[slot];
      ranges.push({ slot, start: columns, rank });
      quantized.push(this.quantizedSlot(slot));
      columns += rank;
    }
    const numColumns = Math.max(1, columns);
    const aq = new Map<string, Int8Array>();
    const aScales = new Map<string, Float32Array>();
    const bq = new Map<string, Int8Array>();
    for (let layer = 0; layer < this.config.numLayers; layer++) {
      for (const target of LORA_TARGETS) {
        const [inF, outF] = loraTargetShape(this.config, target);
        const k = key(layer, target);
        const a = new Int8Array(inF * numColumns);
        const aScale = new Float32Array(numColumns);
        const b = new Int8Array(numColumns * outF);
        ranges.forEach((range, n) => {
          const q = quantized[n].modules.get(k)!;
          copyColumns(q.a, a, inF, range.rank, numColumns, range.start);
          aScale.set(q.aScale, range.start);
          b.set(q.b, range.start * outF);
        });
        aq.set(k, a);
        aScales.set(k, aScale);
        bq.set(k, b);
      }
    }
    const scales = this.slots.scales;
    return {
      numColumns,
      columnRanges: ranges,
      ranges,
      versions: new Map(ranges.map((r) => [r.slot, this.slots.slotVersions[r.slot]])),
      a: (layer, target) => aq.get(key(layer, target))!,
      aScale: (layer, target) => aScales.get(key(layer, target))!,
      b: (layer, target) => bq.get(key(layer, target))!,
      mask: (rowSlots) => {
        const bySlot = new Map(ranges.map((r) => [r.slot, r]));
        const mask = new Float32Array(rowSlots.length * numColumns);
        for (let row = 0; row < rowSlots.length; row++) {
          const range = bySlot.get(rowSlots[row]);
          if (range) mask.fill(scales[range.slot], row * numColumns + range.start, row * numColumns + range.start + range.rank);
        }
        return mask;
      },
    };
  }

  /** One slot's factors as int8 at its true rank, quantized from the fp32 stacks (cached until the slot changes). */
  private quantizedSlot(slot: number): QuantizedSlot {
    const version = this.slots.slotVersions[slot];
    const cached = this.perSlot.get(slot);
    if (cached && cached.version === version) return cached;
    const { maxRank } = this.slots;
    const r = this.slots.ranks[slot];
    const modules = new Map<string, QuantizedModule>();
    for (let layer = 0; layer < this.config.numLayers; layer++) {
      for (const target of LORA_TARGETS) {
        const [inF, outF] = loraTargetShape(this.config, target);
        const stackA = this.slots.stackA(layer, target);
        const stackB = this.slots.stackB(layer, target);
        const a = new Int8Array(inF * r);
        const aScale = new Float32Array(r);
        const b = new Int8Array(r * outF);
        // Column maxima of A, read row by row (the stack is [in, maxRank] per slot).
        const aBase = slot * inF * maxRank;
        const aMax = new Float32Array(r);
        for (let k = 0; k < inF; k++) {
          for (let i = 0, p = aBase + k * maxRank; i < r; i++, p++) {
            const v = Math.abs(stackA[p]);
            if (v > aMax[i]) aMax[i] = v;
          }
        }
        const aInv = new Float32Array(r);
        for (let i = 0; i < r; i++) {
          const bBase = slot * maxRank * outF + i * outF;
          const bRowFactor = maxAbs(stackB, bBase, outF) / INT8_MAX;
          const aColumnScale = aMax[i] / INT8_MAX;
          if (bRowFactor === 0 || aColumnScale === 0) continue; // a zero column contributes nothing: leave it 0
          const bInv = 1 / bRowFactor;
          for (let o = 0; o < outF; o++) b[i * outF + o] = roundToInt(stackB[bBase + o] * bInv);
          aInv[i] = 1 / aColumnScale;
          aScale[i] = aColumnScale * bRowFactor;
        }
        for (let k = 0; k < inF; k++) {
          for (let i = 0, p = aBase + k * maxRank; i < r; i++, p++) a[k * r + i] = roundToInt(stackA[p] * aInv[i]);
        }
        modules.set(key(layer, target), { a, aScale, b });
      }
    }
    const q = { version, modules };
    this.perSlot.set(slot, q);
    return q;
  }
}

interface QuantizedModule {
  /** [in, rank] int8 */
  a: Int8Array;
  /** [rank] */
  aScale: Float32Array;
  /** [rank, out] int8 */
  b: Int8Array;
}

interface Packing extends PackedLoraFactors {
  readonly ranges: readonly PackedColumnRange[];
  /** Slot -> the slot version its columns were quantized from. */
  readonly versions: ReadonlyMap<number, number>;
}

interface QuantizedSlot {
  version: number;
  modules: Map<string, QuantizedModule>;
}

/** Copies a [rows, width] int8 block into columns [start, start + width) of a [rows, stride] one. */
function copyColumns(from: Int8Array, to: Int8Array, rows: number, width: number, stride: number, start: number): void {
  const aligned = width % 4 === 0 && stride % 4 === 0 && start % 4 === 0 && from.byteOffset % 4 === 0 && to.byteOffset % 4 === 0;
  if (aligned) {
    // Ranks are usually multiples of 4: move 4 bytes at a time.
    const src = new Uint32Array(from.buffer, from.byteOffset, from.length / 4);
    const dst = new Uint32Array(to.buffer, to.byteOffset, to.length / 4);
    const [w, s, o] = [width / 4, stride / 4, start / 4];
    for (let row = 0; row < rows; row++) for (let i = 0; i < w; i++) dst[row * s + o + i] = src[row * w + i];
    return;
  }
  for (let row = 0; row < rows; row++) for (let i = 0; i < width; i++) to[row * stride + start + i] = from[row * width + i];
}

/** Round half away from zero (|v| <= 127 here). */
function roundToInt(v: number): number {
  return v >= 0 ? Math.floor(v + 0.5) : -Math.floor(-v + 0.5);
}

function maxAbs(data: Float32Array, start: number, count: number): number {
  let max = 0;
  for (let p = start; p < start + count; p++) {
    const v = Math.abs(data[p]);
    if (v > max) max = v;
  }
  return max;
}

function key(layer: number, target: LoraTarget): string {
  return `${layer}.${target}`;
}
