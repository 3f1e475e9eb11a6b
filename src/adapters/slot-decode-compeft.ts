/**
 * Decodes a `.cpeft` file straight into a device slot of the rank-padded slot stacks (no dense intermediate):
 *   A [r, in]  goes to stackA[slot] laid out [in, maxRank]:  (i, k) -> slot * in * maxRank + k * maxRank + i
 *   B [out, r] goes to stackB[slot] laid out [maxRank, out]: (o, i) -> slot * maxRank * out + i * out + o
 * Ranks past the adapter's stay zero (the slot is cleared first), so padded columns contribute nothing.
 */
import { loraTargetShape, type LoraTarget, type ModelConfig } from '../model/model-config.ts';
import { checkCompeftCompatible } from './compeft/compeft-compat.ts';
import { decodeTensorInto } from './compeft/compeft-decode.ts';
import { parseCompeft } from './compeft/compeft-reader.ts';

/** The rank-padded slot stacks as the decoder writes them (the runner's AdapterSlotStacks has this shape). */
export interface SlotStacks {
  readonly maxRank: number;
  stackA(layer: number, target: LoraTarget): Float32Array;
  stackB(layer: number, target: LoraTarget): Float32Array;
}

/** Runs `fill` on the slot stacks after zeroing the slot, then sets its rank/scale (ModelRunner.fillAdapterSlot). */
export type SlotFiller = (rank: number, scale: number, fill: (stacks: SlotStacks) => void) => void;

/**
 * Parses `bytes` (checksums verified; payload structure is checked while decoding), checks it fits `config` and the
 * slots' max rank (ADAPTER_INCOMPATIBLE), and writes it into `slot` through `fillSlot`. Malformed files throw
 * COMPEFT_INVALID and leave the slot zeroed.
 */
export function decodeCompeftIntoSlot(bytes: Uint8Array, config: ModelConfig, slot: number, fillSlot: SlotFiller): void {
  const file = parseCompeft(bytes, { source: `.cpeft for slot ${slot}`, verifyPayloads: false });
  const h = file.header;
  fillSlot(h.rank, h.scale, (stacks) => {
    checkCompeftCompatible(file, config, { maxRank: stacks.maxRank });
    const maxRank = stacks.maxRank;
    h.tensors.forEach((t, index) => {
      const [inF, outF] = loraTargetShape(config, t.target);
      if (t.kind === 'A') {
        decodeTensorInto(file, index, stacks.stackA(t.layer, t.target), slot * inF * maxRank, { row: 1, col: maxRank });
      } else {
        decodeTensorInto(file, index, stacks.stackB(t.layer, t.target), slot * maxRank * outF, { row: 1, col: outF });
      }
    });
  });
}
