import { LORA_TARGETS, loraTargetShape, type LoraTarget, type ModelConfig } from '../model-config.ts';
import type { AdapterSlotStacks } from './adapter-slot-stacks.ts';

/**
 * Packings kept for reuse: a step runs at most two LoRA batches (decode rows, prefill rows), each on its own packing,
 * and consecutive steps mostly reuse them.
 */
const MAX_CACHED_PACKINGS = 2;

/** A batch's packed factors: the adapters its rows use, along a leading adapter axis (see PackedLoraStacks). */
export interface PackedLoraFactors {
  /** The packed adapters' slots, in packing order (index n = adapter n of the kernel); at least one entry. */
  readonly slots: readonly number[];
  /** Columns per adapter: the slots' max rank, whatever the adapters' ranks (the kernel's GEMM shapes stay fixed). */
  readonly rank: number;
  /** [adapters, in, rank] float32: adapter n's A (transposed) times its scale lora_alpha / r */
  a(layer: number, target: LoraTarget): Float32Array;
  /** [adapters, rank, out] float32: adapter n's B (transposed) */
  b(layer: number, target: LoraTarget): Float32Array;
}

/**
 * Copies of adapters for the packed multi-LoRA kernel (kernels/multi-lora-packed.ts), taken from the fp32 slot stacks:
 * a batch's packing holds the adapters its rows use, in slot order, each as its slot's [in, maxRank] block of A (times
 * the adapter's scale) and [maxRank, out] block of B, so a packing is a row of contiguous copies. A batch that uses no
 * adapter (every slot it names was cleared) gets one all-zero adapter.
 *
 * The kernel multiplies every packed adapter (its M token entries), so a packing holds only what the batch uses
 * (resident but idle adapters cost nothing). Packings are kept (a few, LRU) and reused by any batch whose adapters
 * they contain, if no more than twice as many as the batch needs; a packing with a slot written or cleared since is
 * dropped.
 */
export class PackedLoraStacks {
  /** Most recently used last. */
  private packings: Packing[] = [];
  /** The largest dropped packing: its buffers are reused by the next one that fits (saves allocation and page faults). */
  private spare: Packing | null = null;

  constructor(
    readonly config: ModelConfig,
    private readonly slots: AdapterSlotStacks,
  ) {}

  /** The most memory the copies can take for `numSlots` slots (slot 0 included) of `maxRank`: cached packings and the spare. */
  static maxBytes(config: ModelConfig, numSlots: number, maxRank: number): number {
    return (MAX_CACHED_PACKINGS + 1) * numSlots * maxRank * bytesPerColumn(config);
  }

  /** Memory the copies hold now (cached packings and the spare). */
  bytes(): number {
    let adapters = 0;
    for (const p of new Set<Packing>([...this.packings, ...(this.spare ? [this.spare] : [])])) adapters += p.capacityAdapters;
    return adapters * this.slots.maxRank * bytesPerColumn(this.config);
  }

  /** The packed factors for a batch whose rows use `rowSlots` (0 = base). */
  forRows(rowSlots: readonly number[]): PackedLoraFactors {
    const { ranks, scales, slotVersions } = this.slots;
    const needed = [...new Set(rowSlots)].filter((slot) => slot !== 0 && ranks[slot] > 0 && scales[slot] !== 0).sort((x, y) => x - y);
    const valid = (p: Packing) => p.slots.every((slot) => slot === 0 || (slotVersions[slot] === p.versions.get(slot) && scales[slot] !== 0));
    for (const p of this.packings) if (!valid(p)) this.drop(p);
    this.packings = this.packings.filter(valid);
    const fit = this.packings.find((p) => needed.every((slot) => p.versions.has(slot)) && p.slots.length <= Math.max(1, 2 * needed.length));
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
   * A dropped packing's buffers get rewritten by a later one. Safe because a step's batches (at most 2) use the most
   * recent packings, which LRU never drops, and slots change only between steps.
   */
  private drop(p: Packing): void {
    if (!this.spare || p.capacityAdapters > this.spare.capacityAdapters) this.spare = p;
  }

  private pack(needed: number[]): Packing {
    const { maxRank } = this.slots;
    // With nothing to apply, one zero adapter: slot 0 of the stacks is all zeros.
    const slots = needed.length > 0 ? needed : [0];
    const count = slots.length;
    const spare = this.spare && this.spare.capacityAdapters >= count ? this.spare : null;
    if (spare) this.spare = null;
    // Fresh buffers get room for one more adapter, so the next packing a little larger can reuse them.
    const capacityAdapters = spare ? spare.capacityAdapters : count + 1;
    const view = (perAdapter: number, old: Float32Array | undefined) =>
      old ? new Float32Array(old.buffer, 0, count * perAdapter) : new Float32Array(new ArrayBuffer(capacityAdapters * perAdapter * 4), 0, count * perAdapter);
    const aPacked = new Map<string, Float32Array>();
    const bPacked = new Map<string, Float32Array>();
    for (let layer = 0; layer < this.config.numLayers; layer++) {
      for (const target of LORA_TARGETS) {
        const [inF, outF] = loraTargetShape(this.config, target);
        const k = key(layer, target);
        const aBlock = inF * maxRank;
        const bBlock = maxRank * outF;
        const a = view(aBlock, spare?.a(layer, target));
        const b = view(bBlock, spare?.b(layer, target));
        const stackA = this.slots.stackA(layer, target);
        const stackB = this.slots.stackB(layer, target);
        slots.forEach((slot, n) => {
          const scale = this.slots.scales[slot];
          const from = slot * aBlock;
          for (let i = 0; i < aBlock; i++) a[n * aBlock + i] = stackA[from + i] * scale;
          b.set(stackB.subarray(slot * bBlock, (slot + 1) * bBlock), n * bBlock);
        });
        aPacked.set(k, a);
        bPacked.set(k, b);
      }
    }
    return {
      slots,
      rank: maxRank,
      capacityAdapters,
      versions: new Map(slots.map((slot) => [slot, this.slots.slotVersions[slot]])),
      a: (layer, target) => aPacked.get(key(layer, target))!,
      b: (layer, target) => bPacked.get(key(layer, target))!,
    };
  }
}

/**
 * The token indices of the packed kernel for a batch of `rows` (each with its adapter slot and its number of tokens,
 * right-padded to `stepLength`) over a packing of `slots`:
 *   tokenIndex [N, M, 2]: (row, position) of adapter n's tokens, then padding entries that repeat one of them
 *   rowIndex [B, S, 2]: (n, entry) of each token, (0, M) for a token without adapter or a padding position
 * M = max(2, most tokens any adapter has): never one row per GEMM (see the kernel).
 */
export function packedLoraIndices(rows: ReadonlyArray<{ slot: number; tokens: number }>, stepLength: number, slots: readonly number[]): { tokenIndex: BigInt64Array; rowIndex: BigInt64Array; entries: number } {
  const adapterOf = new Map(slots.map((slot, n) => [slot, n]));
  const tokens: Array<Array<[number, number]>> = slots.map(() => []);
  rows.forEach((row, b) => {
    const n = row.slot === 0 ? undefined : adapterOf.get(row.slot);
    if (n !== undefined) for (let s = 0; s < row.tokens; s++) tokens[n].push([b, s]);
  });
  const entries = Math.max(2, ...tokens.map((t) => t.length));
  const tokenIndex = new BigInt64Array(slots.length * entries * 2);
  const rowIndex = new BigInt64Array(rows.length * stepLength * 2);
  for (let i = 0; i < rows.length * stepLength; i++) rowIndex[2 * i + 1] = BigInt(entries);
  tokens.forEach((list, n) => {
    for (let m = 0; m < entries; m++) {
      const [b, s] = list[m] ?? list[0] ?? [0, 0];
      tokenIndex[2 * (n * entries + m)] = BigInt(b);
      tokenIndex[2 * (n * entries + m) + 1] = BigInt(s);
      if (m < list.length) {
        rowIndex[2 * (b * stepLength + s)] = BigInt(n);
        rowIndex[2 * (b * stepLength + s) + 1] = BigInt(m);
      }
    }
  });
  return { tokenIndex, rowIndex, entries };
}

interface Packing extends PackedLoraFactors {
  /** Adapters its buffers have room for (>= slots.length). */
  readonly capacityAdapters: number;
  /** Slot -> the slot version its factors were copied from. */
  readonly versions: ReadonlyMap<number, number>;
}

/** Bytes one rank column of every layer and target takes: a float32 column of A and a float32 row of B. */
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
