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
  /** The widest dropped packing: its buffers are reused by the next one that fits (saves allocation and page faults). */
  private spare: Packing | null = null;

  constructor(
    readonly config: ModelConfig,
    private readonly slots: AdapterSlotStacks,
  ) {}

  /**
   * The most memory the int8 copies can take for `numSlots` slots (slot 0 included) of `maxRank`: a quantized copy per
   * adapter slot, plus the cached packings and the spare, each at most numSlots * maxRank columns wide.
   */
  static maxBytes(config: ModelConfig, numSlots: number, maxRank: number): number {
    const perColumn = bytesPerColumn(config);
    return ((numSlots - 1) * maxRank + (MAX_CACHED_PACKINGS + 1) * numSlots * maxRank) * perColumn;
  }

  /** Memory the int8 copies hold now (quantized slots, cached packings and the spare). */
  bytes(): number {
    const perColumn = bytesPerColumn(this.config);
    let columns = 0;
    for (const q of this.perSlot.values()) columns += q.rank;
    const buffers = new Set<Packing>([...this.packings, ...(this.spare ? [this.spare] : [])]);
    for (const p of buffers) columns += p.capacityColumns;
    return columns * perColumn;
  }

  /** The packed factors for a group whose rows use `rowSlots` (0 = base). */
  forRows(rowSlots: readonly number[]): PackedLoraFactors {
    const { ranks, scales, slotVersions } = this.slots;
    const needed = [...new Set(rowSlots)].filter((slot) => slot !== 0 && ranks[slot] > 0 && scales[slot] !== 0).sort((x, y) => x - y);
    const neededColumns = needed.reduce((sum, slot) => sum + ranks[slot], 0);
    const valid = (p: Packing) => p.ranges.every((r) => slotVersions[r.slot] === p.versions.get(r.slot) && scales[r.slot] !== 0);
    for (const p of this.packings) if (!valid(p)) this.drop(p);
    this.packings = this.packings.filter(valid);
    const fit = this.packings.find((p) => needed.every((slot) => p.versions.has(slot)) && p.numColumns <= Math.max(1, 2 * neededColumns));
    if (fit) {
      this.packings = [...this.packings.filter((p) => p !== fit), fit];
      return fit;
    }
    const packing = this.pack(needed);
    if (this.packings.length >= MAX_CACHED_PACKINGS) this.drop(this.packings.shift()!);
    this.packings.push(packing);
    return packing;
  }

  /**
   * A dropped packing's buffers get rewritten by a later one. Safe while runs that use a packing finish before a
   * later group's packing is built, or at least before a packing is dropped: a step's groups (at most 2) use the most
   * recent packings, which LRU never drops, and slots change only between steps.
   */
  private drop(p: Packing): void {
    if (!this.spare || p.capacityColumns > this.spare.capacityColumns) this.spare = p;
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
    const spare = this.spare && this.spare.capacityColumns >= numColumns ? this.spare : null;
    if (spare) this.spare = null;
    // Fresh buffers get room for one more max-rank adapter, so the next packing a little wider can reuse them.
    const capacityColumns = spare ? spare.capacityColumns : numColumns + this.slots.maxRank;
    // Views over the spare's buffers (every element is rewritten below; only an empty packing needs zeroing).
    const int8 = (length: number, perColumn: number, old: Int8Array | undefined) =>
      old ? new Int8Array(old.buffer, 0, length).fill(0, 0, columns ? 0 : length) : new Int8Array(new ArrayBuffer(capacityColumns * perColumn), 0, length);
    const aq = new Map<string, Int8Array>();
    const aScales = new Map<string, Float32Array>();
    const bq = new Map<string, Int8Array>();
    for (let layer = 0; layer < this.config.numLayers; layer++) {
      for (const target of LORA_TARGETS) {
        const [inF, outF] = loraTargetShape(this.config, target);
        const k = key(layer, target);
        const a = int8(inF * numColumns, inF, spare?.a(layer, target));
        const aScale = new Float32Array(spare ? spare.aScale(layer, target).buffer : new ArrayBuffer(capacityColumns * 4), 0, numColumns).fill(0);
        const b = int8(numColumns * outF, outF, spare?.b(layer, target));
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
      capacityColumns,
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
        const aBase = slot * inF * maxRank;
        const aMax = columnMaxAbs(stackA, aBase, inF, maxRank, r);
        const aInv = new Float64Array(r);
        for (let i = 0; i < r; i++) {
          const bBase = slot * maxRank * outF + i * outF;
          const bRowFactor = maxAbs(stackB, bBase, outF) / INT8_MAX;
          const aColumnScale = aMax[i] / INT8_MAX;
          if (bRowFactor === 0 || aColumnScale === 0) continue; // a zero column contributes nothing: leave it 0
          const bInv = 1 / bRowFactor;
          quantizeRow(stackB, bBase, outF, bInv, b, i * outF);
          aInv[i] = 1 / aColumnScale;
          aScale[i] = aColumnScale * bRowFactor;
        }
        quantizeColumns(stackA, aBase, inF, maxRank, aInv, a);
        modules.set(key(layer, target), { a, aScale, b });
      }
    }
    const q = { version, rank: r, modules };
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
  /** Columns its buffers have room for (>= numColumns). */
  readonly capacityColumns: number;
  readonly ranges: readonly PackedColumnRange[];
  /** Slot -> the slot version its columns were quantized from. */
  readonly versions: ReadonlyMap<number, number>;
}

interface QuantizedSlot {
  version: number;
  rank: number;
  modules: Map<string, QuantizedModule>;
}

/** Bytes one packed column takes over all layers and targets: an int8 column of A, an int8 row of B, a float32 scale. */
function bytesPerColumn(config: ModelConfig): number {
  let perLayer = 0;
  for (const target of LORA_TARGETS) {
    const [inF, outF] = loraTargetShape(config, target);
    perLayer += inF + outF + 4;
  }
  return perLayer * config.numLayers;
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

/** Max |x| of each of the first `width` columns of a [rows, stride] block at `start`. */
function columnMaxAbs(data: Float32Array, start: number, rows: number, stride: number, width: number): Float64Array {
  const max = new Float64Array(width);
  for (let k = 0, p = start; k < rows; k++, p += stride) {
    for (let i = 0; i < width; i++) {
      const v = Math.abs(data[p + i]);
      if (v > max[i]) max[i] = v;
    }
  }
  return max;
}

/**
 * Round to nearest (halves up) for |v| <= 127.5: v + 128.5 is positive, so `| 0` floors it. ~5x faster than
 * Math.round into an Int8Array in V8.
 */
function roundInt8(v: number): number {
  return ((v + 128.5) | 0) - 128;
}

/** to[at + o] = round(from[start + o] * inv) for o < count (|result| <= 127). */
function quantizeRow(from: Float32Array, start: number, count: number, inv: number, to: Int8Array, at: number): void {
  for (let o = 0; o < count; o++) to[at + o] = roundInt8(from[start + o] * inv);
}

/** The first inv.length columns of a [rows, stride] block at `start`, each times its inv, rounded into [rows, width]. */
function quantizeColumns(from: Float32Array, start: number, rows: number, stride: number, inv: Float64Array, to: Int8Array): void {
  const width = inv.length;
  for (let k = 0, p = start, q = 0; k < rows; k++, p += stride, q += width) {
    for (let i = 0; i < width; i++) to[q + i] = roundInt8(from[p + i] * inv[i]);
  }
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
