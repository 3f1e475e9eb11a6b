import * as ort from 'onnxruntime-node';
import { GRAPH_IO } from '../graph/graph-io.ts';
import { LORA_TARGETS, loraTargetShape, type LoraTarget, type ModelConfig } from '../model-config.ts';
import type { AdapterSlotStacks } from './adapter-slot-stacks.ts';
import { packedLoraIndices, type PackedLoraStacks } from './packed-lora-stacks.ts';

/**
 * Which LoRA stacks a graph takes: `config` gives their shapes (a tensor-parallel shard passes its local config), the
 * stacks of `layers` [start, end) are held at local index layer - start, and with `inputNames` the stacks the graph
 * does not take are left out (a tensor-parallel segment takes one layer's attention or MLP targets).
 */
export interface LoraFeedScope {
  layers?: { start: number; end: number };
  inputNames?: ReadonlySet<string>;
}

function forEachStack(config: ModelConfig, scope: LoraFeedScope, feed: (layer: number, local: number, target: LoraTarget, inF: number, outF: number) => void): void {
  const start = scope.layers?.start ?? 0;
  const end = scope.layers?.end ?? config.numLayers;
  for (let layer = start; layer < end; layer++) {
    for (const target of LORA_TARGETS) {
      if (scope.inputNames && !scope.inputNames.has(GRAPH_IO.loraA(layer, target))) continue;
      const [inF, outF] = loraTargetShape(config, target);
      feed(layer, layer - start, target, inF, outF);
    }
  }
}

/**
 * Feeds of the exact multi-LoRA graph (kernels/multi-lora.ts, per-row gather) for rows using `rowSlots`: each row's slot
 * and scale, and the slot stacks as they are.
 */
export function addGatherLoraFeeds(feeds: Record<string, ort.Tensor>, slots: AdapterSlotStacks, config: ModelConfig, rowSlots: readonly number[], scope: LoraFeedScope = {}): void {
  const { numSlots, maxRank } = slots;
  feeds[GRAPH_IO.loraSlot] = new ort.Tensor('int64', BigInt64Array.from(rowSlots, (s) => BigInt(s)), [rowSlots.length]);
  feeds[GRAPH_IO.loraScale] = new ort.Tensor('float32', Float32Array.from(rowSlots, (s) => slots.scales[s]), [rowSlots.length, 1, 1]);
  forEachStack(config, scope, (layer, local, target, inF, outF) => {
    feeds[GRAPH_IO.loraA(layer, target)] = new ort.Tensor('float32', slots.stackA(local, target), [numSlots, inF, maxRank]);
    feeds[GRAPH_IO.loraB(layer, target)] = new ort.Tensor('float32', slots.stackB(local, target), [numSlots, maxRank, outF]);
  });
}

/**
 * Feeds of the packed LoRA graph (kernels/multi-lora-packed.ts) for `rows` (each with its slot and its number of
 * tokens, right-padded to `stepLength`): the token and row indices and, per layer and target, the packed factors of the
 * adapters the rows use.
 */
export function addPackedLoraFeeds(
  feeds: Record<string, ort.Tensor>,
  packed: PackedLoraStacks,
  rows: ReadonlyArray<{ slot: number; tokens: number }>,
  stepLength: number,
  scope: LoraFeedScope = {},
): void {
  const factors = packed.forRows(rows.map((r) => r.slot));
  const adapters = factors.slots.length;
  const { tokenIndex, rowIndex, entries } = packedLoraIndices(rows, stepLength, factors.slots);
  feeds[GRAPH_IO.loraTokenIndex] = new ort.Tensor('int64', tokenIndex, [adapters, entries, 2]);
  feeds[GRAPH_IO.loraRowIndex] = new ort.Tensor('int64', rowIndex, [rows.length, stepLength, 2]);
  forEachStack(packed.config, scope, (layer, local, target, inF, outF) => {
    feeds[GRAPH_IO.loraA(layer, target)] = new ort.Tensor('float32', factors.a(local, target), [adapters, inF, factors.rank]);
    feeds[GRAPH_IO.loraB(layer, target)] = new ort.Tensor('float32', factors.b(local, target), [adapters, factors.rank, outF]);
  });
}
