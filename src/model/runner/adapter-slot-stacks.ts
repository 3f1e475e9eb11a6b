import { firstNonFinite } from '../checkpoint/tensor.ts';
import { LORA_TARGETS, loraTargetShape, type LoraTarget, type LoraWeights, type ModelConfig } from '../model-config.ts';

export type { LoraWeights };

/**
 * Device-side adapter slots: per layer and target module, A stacked as [numSlots, in, maxRank] and B as
 * [numSlots, maxRank, out] (transposed from PEFT's [r, in] / [out, r] so the graph multiplies without transposes).
 * Slot 0 is all zeros = base model. Loading an adapter writes its slot in place; the graph is never rebuilt.
 */
export class AdapterSlotStacks {
  readonly a: Map<string, Float32Array> = new Map();
  readonly b: Map<string, Float32Array> = new Map();
  /** Scale per slot (0 for empty slots). */
  readonly scales: Float32Array;
  /** True rank per slot (0 for empty slots): the columns a packed copy of the slot needs. */
  readonly ranks: Int32Array;
  /** Bumped by every write or clear, so derived copies (packed int8 factors) know when to rebuild. */
  version = 0;
  /** Per slot: bumped by every write or clear of that slot (derived copies rebuild only the slots that changed). */
  readonly slotVersions: Uint32Array;

  constructor(
    private readonly config: ModelConfig,
    readonly numSlots: number,
    readonly maxRank: number,
  ) {
    this.scales = new Float32Array(numSlots);
    this.ranks = new Int32Array(numSlots);
    this.slotVersions = new Uint32Array(numSlots);
    for (let layer = 0; layer < config.numLayers; layer++) {
      for (const target of LORA_TARGETS) {
        const [inF, outF] = loraTargetShape(config, target);
        this.a.set(key(layer, target), new Float32Array(numSlots * inF * maxRank));
        this.b.set(key(layer, target), new Float32Array(numSlots * maxRank * outF));
      }
    }
  }

  get totalBytes(): number {
    let bytes = 0;
    for (const t of this.a.values()) bytes += t.byteLength;
    for (const t of this.b.values()) bytes += t.byteLength;
    return bytes;
  }

  stackA(layer: number, target: LoraTarget): Float32Array {
    return this.a.get(key(layer, target))!;
  }

  stackB(layer: number, target: LoraTarget): Float32Array {
    return this.b.get(key(layer, target))!;
  }

  /**
   * Writes an adapter into a slot (1..numSlots-1); modules the adapter does not target are zeroed. Non-finite values
   * are refused here as well as by the readers (ADAPTER_INVALID): the packed kernel's isolation of rows relies on every
   * slot value being finite (kernels/multi-lora-packed.ts).
   */
  write(slot: number, adapter: LoraWeights): void {
    this.checkSlot(slot);
    if (adapter.rank > this.maxRank) throw new Error(`adapter rank ${adapter.rank} exceeds the slots' max rank ${this.maxRank}`);
    if (!Number.isFinite(adapter.scale)) throw new Error(`adapter scale ${adapter.scale} is not finite`);
    adapter.layers.forEach((modules, layer) => {
      for (const [target, w] of Object.entries(modules)) {
        if (w && (firstNonFinite(w.a) >= 0 || firstNonFinite(w.b) >= 0)) throw new Error(`adapter factors of layer ${layer} ${target} hold a non-finite value`);
      }
    });
    this.clear(slot);
    const r = adapter.rank;
    for (let layer = 0; layer < this.config.numLayers; layer++) {
      for (const target of LORA_TARGETS) {
        const w = adapter.layers[layer]?.[target];
        if (!w) continue;
        const [inF, outF] = loraTargetShape(this.config, target);
        const a = this.stackA(layer, target);
        const b = this.stackB(layer, target);
        const aBase = slot * inF * this.maxRank;
        for (let i = 0; i < r; i++) for (let k = 0; k < inF; k++) a[aBase + k * this.maxRank + i] = w.a[i * inF + k];
        const bBase = slot * this.maxRank * outF;
        for (let o = 0; o < outF; o++) for (let i = 0; i < r; i++) b[bBase + i * outF + o] = w.b[o * r + i];
      }
    }
    this.scales[slot] = adapter.scale;
    this.ranks[slot] = r;
    this.version++;
    this.slotVersions[slot]++;
  }

  /**
   * Writes a slot through a callback that fills the stacks in place (e.g. a compressed-adapter decoder writing straight
   * into this layout): the slot is zeroed first, then `fill` runs, then the slot's scale is set. If `fill` throws, the
   * slot is left zeroed (scale 0 = no adapter), never half-written with a live scale.
   */
  writeWith(slot: number, rank: number, scale: number, fill: (stacks: AdapterSlotStacks) => void): void {
    this.checkSlot(slot);
    if (rank > this.maxRank) throw new Error(`adapter rank ${rank} exceeds the slots' max rank ${this.maxRank}`);
    this.clear(slot);
    try {
      fill(this);
    } catch (err) {
      this.clear(slot);
      throw err;
    }
    this.scales[slot] = scale;
    this.ranks[slot] = rank;
    this.version++;
    this.slotVersions[slot]++;
  }

  clear(slot: number): void {
    this.checkSlot(slot);
    for (let layer = 0; layer < this.config.numLayers; layer++) {
      for (const target of LORA_TARGETS) {
        const [inF, outF] = loraTargetShape(this.config, target);
        this.stackA(layer, target).fill(0, slot * inF * this.maxRank, (slot + 1) * inF * this.maxRank);
        this.stackB(layer, target).fill(0, slot * this.maxRank * outF, (slot + 1) * this.maxRank * outF);
      }
    }
    this.scales[slot] = 0;
    this.ranks[slot] = 0;
    this.version++;
    this.slotVersions[slot]++;
  }

  private checkSlot(slot: number): void {
    if (!Number.isInteger(slot) || slot < 1 || slot >= this.numSlots) {
      throw new Error(`adapter slot ${slot} out of range [1, ${this.numSlots - 1}]`);
    }
  }
}

function key(layer: number, target: LoraTarget): string {
  return `${layer}.${target}`;
}
