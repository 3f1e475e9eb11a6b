import * as ort from 'onnxruntime-node';
import { GRAPH_IO } from '../graph/llama-graph.ts';
import { LORA_TARGETS, loraTargetShape, type ModelConfig } from '../model-config.ts';
import type { AdapterSlotStacks } from './adapter-slot-stacks.ts';

/**
 * Feeds of the exact multi-LoRA graph (kernels/multi-lora.ts, per-row gather) for rows using `rowSlots`: each row's slot
 * and scale, and the slot stacks as they are. `config` gives the stacks' shapes (a tensor-parallel shard passes its local
 * config); the stacks of `layers` [start, end) are held at local index layer - start; with `inputNames`, stacks the
 * graph does not take are left out.
 */
export function addGatherLoraFeeds(
  feeds: Record<string, ort.Tensor>,
  slots: AdapterSlotStacks,
  config: ModelConfig,
  rowSlots: readonly number[],
  options: { layers?: { start: number; end: number }; inputNames?: ReadonlySet<string> } = {},
): void {
  const { numSlots, maxRank } = slots;
  const start = options.layers?.start ?? 0;
  const end = options.layers?.end ?? config.numLayers;
  feeds[GRAPH_IO.loraSlot] = new ort.Tensor('int64', BigInt64Array.from(rowSlots, (s) => BigInt(s)), [rowSlots.length]);
  feeds[GRAPH_IO.loraScale] = new ort.Tensor('float32', Float32Array.from(rowSlots, (s) => slots.scales[s]), [rowSlots.length, 1, 1]);
  for (let layer = start; layer < end; layer++) {
    for (const target of LORA_TARGETS) {
      if (options.inputNames && !options.inputNames.has(GRAPH_IO.loraA(layer, target))) continue;
      const [inF, outF] = loraTargetShape(config, target);
      feeds[GRAPH_IO.loraA(layer, target)] = new ort.Tensor('float32', slots.stackA(layer - start, target), [numSlots, inF, maxRank]);
      feeds[GRAPH_IO.loraB(layer, target)] = new ort.Tensor('float32', slots.stackB(layer - start, target), [numSlots, maxRank, outF]);
    }
  }
}
