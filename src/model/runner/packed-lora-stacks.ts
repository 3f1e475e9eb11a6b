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

/**
 * Packings kept for reuse: a step runs at most two LoRA groups (decode rows, prefill rows), each on its own packing,
 * and consecutive steps mostly reuse them.
 */
const MAX_CACHED_PACKINGS = 2;

/** A group's packed factors: the adapters it needs, side by side at true rank (see PackedLoraStacks). */
export interface PackedLoraFactors {
  /** Columns (sum of the packed adapters' ranks, at least 1: with none there is one all-zero column). */
  readonly numColumns: number;
  readonly columnRanges: readonly PackedColumnRange[];
  /** [in, numColumns] float32: column j = the A column of its adapter times that adapter's scale (lora_alpha / r) */
  a(layer: number, target: LoraTarget): Float32Array;
  /** [numColumns, out] float32: row j = the B row of its adapter */
  b(layer: number, target: LoraTarget): Float32Array;
  /** [rowSlots.length, numColumns] bool as bytes: 1 where column j belongs to the row's adapter (slot 0: none). */
  select(rowSlots: readonly number[]): Uint8Array;
}

/**
 * Copies of adapters for the packed multi-LoRA kernel (kernels/multi-lora-packed.ts), taken from the fp32 slot stacks.
 * A group's packing holds the adapters its rows use, each at `rank` consecutive columns (true rank, no padding), in
 * slot order; per layer and target, A is [in, numColumns] with each column already multiplied by its adapter's scale,
 * and B is [numColumns, out]. Values are copied exactly (fp32), so the packed kernel computes the same delta as the
 * per-row gather kernel up to the order of fp32 additions.
 *
 * Every token computes every packed column, so a packing holds only what the group uses (resident but idle adapters
 * cost nothing). Packings are kept (a few, LRU) and reused by any group whose adapters they contain, if no more than
 * twice as wide as the group needs; a packing with a slot written or cleared since is dropped.
 */
export class PackedLoraStacks {
  /** Most recently used last. */
  private packings: Packing[] = [];
  /** The widest dropped packing: its buffers are reused by the next one that fits (saves allocation and page faults). */
  private spare: Packing | null = null;

  constructor(
    readonly config: ModelConfig,
    private readonly slots: AdapterSlotStacks,
  ) {}

  /**
   * The most memory the copies can take for `numSlots` slots (slot 0 included) of `maxRank`: the cached packings and
   * the spare, each at most (numSlots - 1) * maxRank columns wide plus one max-rank adapter of room.
   */
  static maxBytes(config: ModelConfig, numSlots: number, maxRank: number): number {
    return (MAX_CACHED_PACKINGS + 1) * numSlots * maxRank * bytesPerColumn(config);
  }

  /** Memory the copies hold now (cached packings and the spare). */
  bytes(): number {
    let columns = 0;
    for (const p of new Set<Packing>([...this.packings, ...(this.spare ? [this.spare] : [])])) columns += p.capacityColumns;
    return columns * bytesPerColumn(this.config);
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
   * A dropped packing's buffers get rewritten by a later one. Safe because a step's groups (at most 2) use the most
   * recent packings, which LRU never drops, and slots change only between steps.
   */
  private drop(p: Packing): void {
    if (!this.spare || p.capacityColumns > this.spare.capacityColumns) this.spare = p;
  }

  /** Lays the given slots' factors side by side. */
  private pack(slotList: number[]): Packing {
    const { maxRank } = this.slots;
    const ranges: PackedColumnRange[] = [];
    let columns = 0;
    for (const slot of slotList) {
      const rank = this.slots.ranks[slot];
      ranges.push({ slot, start: columns, rank });
      columns += rank;
    }
    const numColumns = Math.max(1, columns);
    const spare = this.spare && this.spare.capacityColumns >= numColumns ? this.spare : null;
    if (spare) this.spare = null;
    // Fresh buffers get room for one more max-rank adapter, so the next packing a little wider can reuse them.
    const capacityColumns = spare ? spare.capacityColumns : numColumns + maxRank;
    // Views over the spare's buffers: every element is rewritten below, except in an empty packing (zeroed).
    const view = (length: number, perColumn: number, old: Float32Array | undefined) =>
      old ? new Float32Array(old.buffer, 0, length).fill(0, 0, columns ? 0 : length) : new Float32Array(new ArrayBuffer(capacityColumns * perColumn * 4), 0, length);
    const aPacked = new Map<string, Float32Array>();
    const bPacked = new Map<string, Float32Array>();
    for (let layer = 0; layer < this.config.numLayers; layer++) {
      for (const target of LORA_TARGETS) {
        const [inF, outF] = loraTargetShape(this.config, target);
        const k = key(layer, target);
        const a = view(inF * numColumns, inF, spare?.a(layer, target));
        const b = view(numColumns * outF, outF, spare?.b(layer, target));
        const stackA = this.slots.stackA(layer, target);
        const stackB = this.slots.stackB(layer, target);
        for (const { slot, start, rank } of ranges) {
          const scale = this.slots.scales[slot];
          const from = slot * inF * maxRank;
          for (let row = 0; row < inF; row++) {
            const src = from + row * maxRank;
            const dst = row * numColumns + start;
            for (let i = 0; i < rank; i++) a[dst + i] = stackA[src + i] * scale;
          }
          b.set(stackB.subarray(slot * maxRank * outF, (slot * maxRank + rank) * outF), start * outF);
        }
        aPacked.set(k, a);
        bPacked.set(k, b);
      }
    }
    return {
      numColumns,
      capacityColumns,
      columnRanges: ranges,
      ranges,
      versions: new Map(ranges.map((r) => [r.slot, this.slots.slotVersions[r.slot]])),
      a: (layer, target) => aPacked.get(key(layer, target))!,
      b: (layer, target) => bPacked.get(key(layer, target))!,
      select: (rowSlots) => {
        const bySlot = new Map(ranges.map((r) => [r.slot, r]));
        const select = new Uint8Array(rowSlots.length * numColumns);
        for (let row = 0; row < rowSlots.length; row++) {
          const range = bySlot.get(rowSlots[row]);
          if (range) select.fill(1, row * numColumns + range.start, row * numColumns + range.start + range.rank);
        }
        return select;
      },
    };
  }
}

interface Packing extends PackedLoraFactors {
  /** Columns its buffers have room for (>= numColumns). */
  readonly capacityColumns: number;
  readonly ranges: readonly PackedColumnRange[];
  /** Slot -> the slot version its columns were copied from. */
  readonly versions: ReadonlyMap<number, number>;
}

/** Bytes one packed column takes over all layers and targets: a float32 column of A and a float32 row of B. */
function bytesPerColumn(config: ModelConfig): number {
  let perLayer = 0;
  for (const target of LORA_TARGETS) {
    const [inF, outF] = loraTargetShape(config, target);
    perLayer += inF + outF;
  }
  return 4 * perLayer * config.numLayers;
}

function key(layer: number, target: LoraTarget): string {
  return `${layer}.${target}`;
}
