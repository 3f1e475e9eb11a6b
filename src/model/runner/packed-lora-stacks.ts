import { LORA_TARGETS, loraTargetShape, type LoraTarget, type ModelConfig } from '../model-config.ts';
import type { AdapterSlotStacks } from './adapter-slot-stacks.ts';

/** One resident adapter's place in the packed columns. */
export interface PackedColumnRange {
  slot: number;
  /** First packed column. */
  start: number;
  /** Columns = the adapter's true rank. */
  rank: number;
}

const INT8_MAX = 127;

/**
 * Int8 copy of the resident adapters for the packed multi-LoRA kernel (kernels/multi-lora-packed.ts), derived from the
 * fp32 slot stacks: every slot with an adapter gets `rank` consecutive columns (true rank, no padding), in slot
 * order; per layer and target, A is [in, numColumns] int8 with a per-column scale and B is [numColumns, out] int8.
 *
 *   A column j  = aq[:, j] * aScale[j]     aScale[j] = (max |A[:, j]| / 127) * bRowFactor[j]
 *   B row j     = bq[j, :] * bRowFactor[j] bRowFactor[j] = max |B[j, :]| / 127 (folded into aScale, so bq's scale is 1)
 *
 * The copy is rebuilt when the slot stacks change (`sync`, keyed on AdapterSlotStacks.version): slot writes are rare
 * next to steps. With no adapter resident there is one all-zero column (the graph needs a non-empty dimension).
 */
export class PackedLoraStacks {
  private builtVersion = -1;
  private ranges: PackedColumnRange[] = [];
  private columns = 1;
  private readonly aq = new Map<string, Int8Array>();
  private readonly aScales = new Map<string, Float32Array>();
  private readonly bq = new Map<string, Int8Array>();

  constructor(
    private readonly config: ModelConfig,
    private readonly slots: AdapterSlotStacks,
  ) {}

  /** Columns of the packed factors (sum of resident adapters' ranks, at least 1). */
  get numColumns(): number {
    this.sync();
    return this.columns;
  }

  get columnRanges(): readonly PackedColumnRange[] {
    this.sync();
    return this.ranges;
  }

  /** [in, numColumns] int8 */
  a(layer: number, target: LoraTarget): Int8Array {
    this.sync();
    return this.aq.get(key(layer, target))!;
  }

  /** [numColumns] float32 */
  aScale(layer: number, target: LoraTarget): Float32Array {
    this.sync();
    return this.aScales.get(key(layer, target))!;
  }

  /** [numColumns, out] int8 */
  b(layer: number, target: LoraTarget): Int8Array {
    this.sync();
    return this.bq.get(key(layer, target))!;
  }

  /** [rowSlots.length, numColumns]: each row's adapter scale on its adapter's columns, 0 elsewhere (slot 0: all 0). */
  mask(rowSlots: ArrayLike<number>): Float32Array {
    this.sync();
    const columns = this.columns;
    const bySlot = new Map(this.ranges.map((r) => [r.slot, r]));
    const mask = new Float32Array(rowSlots.length * columns);
    for (let row = 0; row < rowSlots.length; row++) {
      const range = bySlot.get(rowSlots[row]);
      if (!range) continue;
      mask.fill(this.slots.scales[range.slot], row * columns + range.start, row * columns + range.start + range.rank);
    }
    return mask;
  }

  /** Rebuilds the packed copy if the slot stacks changed since the last build. */
  sync(): void {
    if (this.builtVersion === this.slots.version) return;
    const { numSlots, maxRank, ranks, scales } = this.slots;
    const ranges: PackedColumnRange[] = [];
    let columns = 0;
    for (let slot = 1; slot < numSlots; slot++) {
      if (ranks[slot] === 0 || scales[slot] === 0) continue;
      ranges.push({ slot, start: columns, rank: ranks[slot] });
      columns += ranks[slot];
    }
    const numColumns = Math.max(1, columns);
    for (let layer = 0; layer < this.config.numLayers; layer++) {
      for (const target of LORA_TARGETS) {
        const [inF, outF] = loraTargetShape(this.config, target);
        const aq = new Int8Array(inF * numColumns);
        const aScale = new Float32Array(numColumns);
        const bq = new Int8Array(numColumns * outF);
        const stackA = this.slots.stackA(layer, target);
        const stackB = this.slots.stackB(layer, target);
        for (const range of ranges) {
          for (let i = 0; i < range.rank; i++) {
            const column = range.start + i;
            const bBase = range.slot * maxRank * outF + i * outF;
            const bRowFactor = maxAbs(stackB, bBase, 1, outF) / INT8_MAX;
            const aBase = range.slot * inF * maxRank + i;
            const aColumnScale = maxAbs(stackA, aBase, maxRank, inF) / INT8_MAX;
            if (bRowFactor === 0 || aColumnScale === 0) continue; // a zero column contributes nothing: leave it 0
            for (let o = 0; o < outF; o++) bq[column * outF + o] = Math.round(stackB[bBase + o] / bRowFactor);
            for (let k = 0; k < inF; k++) aq[k * numColumns + column] = Math.round(stackA[aBase + k * maxRank] / aColumnScale);
            aScale[column] = aColumnScale * bRowFactor;
          }
        }
        this.aq.set(key(layer, target), aq);
        this.aScales.set(key(layer, target), aScale);
        this.bq.set(key(layer, target), bq);
      }
    }
    this.ranges = ranges;
    this.columns = numColumns;
    this.builtVersion = this.slots.version;
  }
}

function maxAbs(data: Float32Array, start: number, stride: number, count: number): number {
  let max = 0;
  for (let n = 0, p = start; n < count; n++, p += stride) {
    const v = Math.abs(data[p]);
    if (v > max) max = v;
  }
  return max;
}

function key(layer: number, target: LoraTarget): string {
  return `${layer}.${target}`;
}
