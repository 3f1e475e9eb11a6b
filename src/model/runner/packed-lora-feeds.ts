import * as ort from 'onnxruntime-node';
import { GRAPH_IO } from '../graph/llama-graph.ts';
import { LORA_TARGETS, loraTargetShape } from '../model-config.ts';
import type { PackedLoraStacks } from './packed-lora-stacks.ts';

/**
 * Feeds of the packed LoRA graph (kernels/multi-lora-packed.ts) for a group whose rows use `rowSlots`: each row's
 * column selection [rows, 1, columns] and, per layer and target, the packed factors of the adapters the rows use.
 */
export function addPackedLoraFeeds(feeds: Record<string, ort.Tensor>, packed: PackedLoraStacks, rowSlots: readonly number[]): void {
  const config = packed.config;
  const factors = packed.forRows(rowSlots);
  const columns = factors.numColumns;
  feeds[GRAPH_IO.loraSelect] = new ort.Tensor('bool', factors.select(rowSlots), [rowSlots.length, 1, columns]);
  for (let layer = 0; layer < config.numLayers; layer++) {
    for (const target of LORA_TARGETS) {
      const [inF, outF] = loraTargetShape(config, target);
      feeds[GRAPH_IO.loraA(layer, target)] = new ort.Tensor('float32', factors.a(layer, target), [inF, columns]);
      feeds[GRAPH_IO.loraB(layer, target)] = new ort.Tensor('float32', factors.b(layer, target), [columns, outF]);
    }
  }
}
