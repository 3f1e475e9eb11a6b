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
 * next to steps, and only the slots that changed are quantized again. With no adapter resident there is one all-zero
 * column (the graph needs a non-empty dimension).
 */
export class PackedLoraStacks {
  private builtVersion = -1;
  private ranges: PackedColumnRange[] = [];
  private columns = 1;
  private readonly aq = new Map<string, Int8Array>();
  private readonly aScales = new Map<string, Float32Array>();
  private readonly bq = new Map<string, Int8Array>();
  private readonly perSlot = new Map<number, QuantizedSlot>();

  constructor(
    readonly config: ModelConfig,
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

  /**
   * Rebuilds the packed copy if the slot stacks changed since the last build. Slots are quantized once per write
   * (cached by slot version); a rebuild then only lays the cached int8 columns side by side.
   */
  sync(): void {
    if (this.builtVersion === this.slots.version) return;
    const { numSlots, ranks, scales } = this.slots;
    const ranges: PackedColumnRange[] = [];
    const quantized: QuantizedSlot[] = [];
    let columns = 0;
    for (let slot = 1; slot < numSlots; slot++) {
      if (ranks[slot] === 0 || scales[slot] === 0) {
        this.perSlot.delete(slot);
        continue;
      }
      ranges.push({ slot, start: columns, rank: ranks[slot] });
      quantized.push(this.quantizedSlot(slot));
      columns += ranks[slot];
    }
    const numColumns = Math.max(1, columns);
    for (let layer = 0; layer < this.config.numLayers; layer++) {
      for (const target of LORA_TARGETS) {
        const [inF, outF] = loraTargetShape(this.config, target);
        const k = key(layer, target);
        const aq = new Int8Array(inF * numColumns);
        const aScale = new Float32Array(numColumns);
        const bq = new Int8Array(numColumns * outF);
        ranges.forEach((range, n) => {
          const q = quantized[n].modules.get(k)!;
          copyColumns(q.a, aq, inF, range.rank, numColumns, range.start);
          aScale.set(q.aScale, range.start);
          bq.set(q.b, range.start * outF);
        });
        this.aq.set(k, aq);
        this.aScales.set(k, aScale);
        this.bq.set(k, bq);
      }
    }
    this.ranges = ranges;
    this.columns = numColumns;
    this.builtVersion = this.slots.version;
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
