import { join } from 'node:path';
import { OnnxGraph } from '../../../kernels/onnx-graph.ts';
import { pagedPast, pagedWrite, slotWrite } from '../../../kernels/paged-kv-device.ts';
import { TesseraError } from '../../errors.ts';
import { GRAPH_IO } from '../graph/llama-graph.ts';
import { serializeModel } from '../graph/onnx-serialize.ts';
import { encodeModelProto, readModelProto, toModelProto } from '../graph/onnx-proto.ts';
import type { ModelConfig } from '../model-config.ts';

/** Inputs and outputs the device-KV graphs add to (or use instead of) the converted graph's. */
export const DEVICE_KV_IO = {
  /** [B, nb] int64: blocks holding each row's cached positions, padded with the scratch block. */
  blockIndex: 'kv_block_index',
  /** [B, kvHeads, S, 3] int64: (block, head, offset) where each new position is written. */
  writeIndex: 'kv_write_index',
  cacheKey: (layer: number) => `cache_key.${layer}`,
  cacheValue: (layer: number) => `cache_value.${layer}`,
  presentKey: (layer: number) => `present_key.${layer}`,
  presentValue: (layer: number) => `present_value.${layer}`,
  /** Slot-write graph: [1, 1] int64 slot index. */
  slot: 'slot',
  stackIn: (name: string) => `${name}`,
  stackOut: (name: string) => `${name}.updated`,
  stackValue: (name: string) => `${name}.value`,
  /** Zeros graph: int64 shape of the zero tensor to make. */
  zerosShape: 'shape',
  zeros: 'zeros',
} as const;

/**
 * Rewrites a converted decoder graph (base or LoRA; see llama-graph.ts) so its KV cache stays on the device: the
 * per-layer `past_key.l` / `past_value.l` inputs become values read from device cache inputs `cache_key.l` /
 * `cache_value.l` [numBlocks + 1, kvHeads, blockSizeTokens, headDim] through `kv_block_index`, and the `new_key.l` /
 * `new_value.l` outputs are replaced by `present_key.l` / `present_value.l`: the caches with this step's keys/values
 * written at `kv_write_index` (kernels/paged-kv-device.ts). Everything else (weights, LoRA stacks, logits) is unchanged,
 * so the rewritten graph computes exactly what the converted graph computes over a host-gathered past.
 * Returns ONNX model bytes whose external weights are resolved against the converted model directory, and the names of
 * the rewritten graph's outputs.
 */
export function deviceKvModel(modelDir: string, graphFile: string, config: ModelConfig, blockSizeTokens: number): { bytes: Uint8Array; outputs: string[] } {
  const path = join(modelDir, graphFile);
  const model = readModelProto(path);
  const { numLayers, numKvHeads, headDim } = config;
  const cacheDims = ['kv_blocks', numKvHeads, blockSizeTokens, headDim];

  const pre = new OnnxGraph('device_kv_read');
  const blockIndex = pre.input(DEVICE_KV_IO.blockIndex, 'int64', ['batch', 'past_blocks']);
  const post = new OnnxGraph('device_kv_write');
  const writeIndex = post.input(DEVICE_KV_IO.writeIndex, 'int64', ['batch', numKvHeads, 'seq', 3]);
  for (let layer = 0; layer < numLayers; layer++) {
    for (const [cacheName, pastName, newName, presentName] of [
      [DEVICE_KV_IO.cacheKey(layer), GRAPH_IO.pastKey(layer), GRAPH_IO.newKey(layer), DEVICE_KV_IO.presentKey(layer)],
      [DEVICE_KV_IO.cacheValue(layer), GRAPH_IO.pastValue(layer), GRAPH_IO.newValue(layer), DEVICE_KV_IO.presentValue(layer)],
    ]) {
      const cache = pre.input(cacheName, 'float32', cacheDims);
      const past = pagedPast(pre, cache, blockIndex, headDim, `devkv_${pastName}`);
      pre.node('Identity', [past], { outputs: [pastName], hint: `devkv_${pastName}_out` });
      const present = pagedWrite(post, cacheName, writeIndex, newName, `devkv_${presentName}`);
      post.node('Identity', [present], { outputs: [presentName], hint: `devkv_${presentName}_out` });
      post.output(presentName, 'float32', cacheDims);
    }
  }
  const preModel = toModelProto(pre);
  const postModel = toModelProto(post);

  const g = model.graph;
  const replaced = new Set<string>();
  for (let layer = 0; layer < numLayers; layer++) {
    replaced.add(GRAPH_IO.pastKey(layer)).add(GRAPH_IO.pastValue(layer)).add(GRAPH_IO.newKey(layer)).add(GRAPH_IO.newValue(layer));
  }
  const missing = [...replaced].filter((name) => !g.input.some((v) => v.name === name) && !g.output.some((v) => v.name === name));
  if (missing.length > 0) throw new TesseraError('CHECKPOINT_INVALID', `${path}: not a decoder graph with a KV cache: no ${missing.slice(0, 2).join(', ')}`);
  g.input = [...g.input.filter((v) => !replaced.has(v.name)), ...preModel.graph.input, ...postModel.graph.input];
  g.output = [...g.output.filter((v) => !replaced.has(v.name)), ...postModel.graph.output];
  g.node = [...preModel.graph.node, ...g.node, ...postModel.graph.node];
  g.initializer = [...g.initializer, ...preModel.graph.initializer, ...postModel.graph.initializer];
  return { bytes: encodeModelProto(model), outputs: g.output.map((v) => v.name) };
}

/**
 * A graph that writes one slot of several stacks [numSlots, ...] on the device: for each stack `name`, output
 * `name.updated` = the stack with slot `slot` replaced by `name.value` [1, ...]. Used to load an adapter into the
 * device-resident LoRA slot stacks: only that adapter's bytes cross to the device.
 */
export function slotWriteModel(stacks: Array<{ name: string; dims: Array<number | string> }>): Uint8Array {
  const g = new OnnxGraph('device_slot_write');
  const slot = g.input(DEVICE_KV_IO.slot, 'int64', [1, 1]);
  for (const s of stacks) {
    const stack = g.input(DEVICE_KV_IO.stackIn(s.name), 'float32', s.dims);
    const value = g.input(DEVICE_KV_IO.stackValue(s.name), 'float32', [1, ...s.dims.slice(1)]);
    const out = slotWrite(g, stack, slot, value, `${s.name}_write`);
    g.node('Identity', [out], { outputs: [DEVICE_KV_IO.stackOut(s.name)], hint: `${s.name}_out` });
    g.output(DEVICE_KV_IO.stackOut(s.name), 'float32', s.dims);
  }
  return serializeModel(g, null);
}

/** A graph that makes a zero float32 tensor of a given shape (rank `rank`) directly on the device. */
export function zerosModel(rank: number): Uint8Array {
  const g = new OnnxGraph(`device_zeros_rank${rank}`);
  const shape = g.input(DEVICE_KV_IO.zerosShape, 'int64', [rank]);
  const zero = g.constFloat('zero', [0], []);
  const out = g.op('Expand', [zero, shape], { hint: 'expanded' });
  g.node('Identity', [out], { outputs: [DEVICE_KV_IO.zeros], hint: 'zeros_out' });
  g.output(DEVICE_KV_IO.zeros, 'float32', Array.from({ length: rank }, (_, i) => `d${i}`));
  return serializeModel(g, null);
}
