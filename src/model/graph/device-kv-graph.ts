import { join } from 'node:path';
import { OnnxGraph } from '../../../kernels/onnx-graph.ts';
import { pagedPast, pagedWrite, slotWrite } from '../../../kernels/paged-kv-device.ts';
import { sampleTokens } from '../../../kernels/loop-sampling.ts';
import { TesseraError } from '../../errors.ts';
import { noiseIfBranches } from './graph-sampling.ts';
import { GRAPH_IO } from './graph-io.ts';
import { serializeModel } from './onnx-serialize.ts';
import { encodeModelProto, readModelProto, toModelProto, type ProtoGraph } from './onnx-proto.ts';
import type { ModelConfig } from '../model-config.ts';

/** A layer's keys or its values. */
export type KvPart = 'key' | 'value';
export const KV_PARTS: readonly KvPart[] = ['key', 'value'];

/** Inputs and outputs the device-KV graphs add to (or use instead of) the converted graph's. */
export const DEVICE_KV_IO = {
  /** [B, nb] int64: blocks holding each row's cached positions, padded with the scratch block. */
  blockIndex: 'kv_block_index',
  /** [B, kvHeads, S, 3] int64: (block, head, offset) where each new position is written. */
  writeIndex: 'kv_write_index',
  /**
   * Per layer, for the keys and for the values: `cache_*` [numBlocks + 1, kvHeads, blockSizeTokens, headDim] the device
   * cache the step reads (last block: scratch), `present_*` the same cache with the step's keys / values written, kept
   * on the device as the next step's cache.
   */
  cache: (part: KvPart, layer: number) => `cache_${part}.${layer}`,
  present: (part: KvPart, layer: number) => `present_${part}.${layer}`,
  /** Slot-write graph: [1, 1] int64 slot index. */
  slot: 'slot',
  stackIn: (name: string) => `${name}`,
  stackOut: (name: string) => `${name}.updated`,
  stackValue: (name: string) => `${name}.value`,
  /** Zeros graph: int64 shape of the zero tensor to make. */
  zerosShape: 'shape',
  zeros: 'zeros',
  /** Sampling tail, per logits row (rows of `logits_index`): [R] float32 temperature, 0 = greedy. */
  sampleTemperature: 'sample_temperature',
  /** [R] int64 top-k, 0 = off. */
  sampleTopK: 'sample_top_k',
  /** [R] int64 seed, non-negative. */
  sampleSeed: 'sample_seed',
  /** [R] int64: the position the sampled token takes (keys the random stream with the seed). */
  samplePosition: 'sample_position',
  /** [] bool: some row has temperature > 0; false skips the random stream. */
  sampleAny: 'sample_any',
  /**
   * [1] int64: how many logits rows (and their log-sum-exp) the `logits` / `logits_lse` outputs carry: R on steps
   * sampled on the host, 0 on steps sampled in the graph (the outputs are then empty and nothing is copied back).
   */
  logitsRows: 'logits_rows',
  /** [R] int64: the token sampled from each logits row. */
  sampledTokenIds: 'sampled_token_ids',
  /** [R] float32: its log-probability under the raw logits (logit - logsumexp). */
  sampledLogprobs: 'sampled_logprobs',
} as const;

const ALL_LOGITS = 'dks_logits_all';
const ALL_LSE = 'dks_logits_lse_all';

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
export function deviceKvModel(
  modelDir: string,
  graphFile: string,
  config: ModelConfig,
  blockSizeTokens: number,
  options: { sampling?: boolean } = {},
): { bytes: Uint8Array; outputs: string[] } {
  const path = join(modelDir, graphFile);
  const model = readModelProto(path);
  const { numLayers, numKvHeads, headDim } = config;
  const cacheDims = ['kv_blocks', numKvHeads, blockSizeTokens, headDim];

  const pre = new OnnxGraph('device_kv_read');
  const blockIndex = pre.input(DEVICE_KV_IO.blockIndex, 'int64', ['batch', 'past_blocks']);
  const post = new OnnxGraph('device_kv_write');
  const writeIndex = post.input(DEVICE_KV_IO.writeIndex, 'int64', ['batch', numKvHeads, 'seq', 3]);
  for (let layer = 0; layer < numLayers; layer++) {
    for (const part of KV_PARTS) {
      const [cacheName, presentName] = [DEVICE_KV_IO.cache(part, layer), DEVICE_KV_IO.present(part, layer)];
      const [pastName, newName] = part === 'key' ? [GRAPH_IO.pastKey(layer), GRAPH_IO.newKey(layer)] : [GRAPH_IO.pastValue(layer), GRAPH_IO.newValue(layer)];
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
  if (options.sampling) {
    if (!g.output.some((v) => v.name === GRAPH_IO.logitsLogSumExp)) throw new TesseraError('CHECKPOINT_INVALID', `${path}: in-graph sampling needs the ${GRAPH_IO.logitsLogSumExp} output (reconvert the model)`);
    // The decoder's logits become internal values; the outputs of the same names are their first `logits_rows` rows.
    const internal = new Map<string, string>([[GRAPH_IO.logits, ALL_LOGITS], [GRAPH_IO.logitsLogSumExp, ALL_LSE]]);
    for (const node of g.node) {
      node.input = node.input.map((name) => internal.get(name) ?? name);
      node.output = node.output.map((name) => internal.get(name) ?? name);
    }
    const tail = samplingTail(config.vocabSize);
    g.input = [...g.input, ...tail.input];
    g.output = [...g.output, ...tail.output];
    g.node = [...g.node, ...tail.node];
    g.initializer = [...g.initializer, ...tail.initializer];
  }
  return { bytes: encodeModelProto(model), outputs: g.output.map((v) => v.name) };
}

/**
 * The sampling tail of the device-KV graphs (the same sampler as the k-step loop, kernels/loop-sampling.ts), on the
 * graph's `logits` [R, V] and `logits_lse` [R]:
 *   noise  = If sample_any: gumbelNoise(seed, sample_position, 0..V-1) [R, V]  else [1, 1] zero
 *   token  = sampleTokens(logits, temperature, top-k, noise)                    [R] int64
 *   logprob = logits[token] - logits_lse                                        [R]
 *   logits = logits_all[0 : logits_rows], logits_lse likewise
 * One session, and one copy of the weights on the device, serves both kinds of step: every run returns all outputs (the
 * Node binding cannot fetch a subset of them when some stay on the device), and `logits_rows` = 0 makes the logits
 * outputs empty on steps sampled in the graph.
 */
function samplingTail(vocabSize: number): ProtoGraph {
  const g = new OnnxGraph('device_kv_sampling');
  const column = (name: string, t: 'int64' | 'float32', as: string) => {
    g.input(name, t, ['rows']);
    g.node('Reshape', [name, g.constInt64(`${as}_shape`, [-1, 1])], { outputs: [as], hint: `${as}_r` });
    return as;
  };
  const temperature = column(DEVICE_KV_IO.sampleTemperature, 'float32', 'dks_temperature');
  const topK = column(DEVICE_KV_IO.sampleTopK, 'int64', 'dks_top_k');
  column(DEVICE_KV_IO.sampleSeed, 'int64', 'dks_seed');
  column(DEVICE_KV_IO.samplePosition, 'int64', 'dks_position');
  const any = g.input(DEVICE_KV_IO.sampleAny, 'bool', []);
  const logitsRows = g.input(DEVICE_KV_IO.logitsRows, 'int64', [1]);
  const zero1 = g.constInt64('dks_zero1', [0]);
  g.node('Slice', [ALL_LOGITS, zero1, logitsRows, zero1], { outputs: [GRAPH_IO.logits], hint: 'dks_logits_rows' });
  g.node('Slice', [ALL_LSE, zero1, logitsRows, zero1], { outputs: [GRAPH_IO.logitsLogSumExp], hint: 'dks_lse_rows' });
  const vocab1d = g.op('Range', [g.constInt64('dks_v0', [0], []), g.constInt64('dks_vn', [vocabSize], []), g.constInt64('dks_v1', [1], [])], { hint: 'dks_vocab_1d' });
  g.node('Unsqueeze', [vocab1d, g.constInt64('dks_axis0', [0])], { outputs: ['dks_vocab_index'], hint: 'dks_vocab_index_u' });
  const [noise] = g.node('If', [any], { outputs: ['dks_noise'], hint: 'dks_noise_if' });
  const token = sampleTokens(g, ALL_LOGITS, { temperature, topK, seed: 'dks_seed' }, noise, 'dks_sample');
  const chosen = g.op('GatherElements', [ALL_LOGITS, g.op('Unsqueeze', [token, g.constInt64('dks_axis1', [1])], { hint: 'dks_token2' })], { attrs: { axis: { i: 1 } }, hint: 'dks_chosen' });
  const logprob = g.op('Sub', [g.op('Squeeze', [chosen, g.constInt64('dks_axis1b', [1])], { hint: 'dks_chosen1' }), ALL_LSE], { hint: 'dks_logprob' });
  g.node('Identity', [token], { outputs: [DEVICE_KV_IO.sampledTokenIds], hint: 'dks_ids_out' });
  g.output(DEVICE_KV_IO.sampledTokenIds, 'int64', ['rows']);
  g.node('Identity', [logprob], { outputs: [DEVICE_KV_IO.sampledLogprobs], hint: 'dks_logprobs_out' });
  g.output(DEVICE_KV_IO.sampledLogprobs, 'float32', ['rows']);

  // The random stream only when some row samples.
  const proto = toModelProto(g).graph;
  proto.node.find((n) => n.opType === 'If')!.attribute = noiseIfBranches(
    { seed: 'dks_seed', position: 'dks_position', vocabIndex: 'dks_vocab_index' },
    { graph: 'device_kv_noise', prefix: 'dksn', zeroGraph: 'device_kv_no_noise', zeroPrefix: 'dksz', rowsDim: 'rows' },
    vocabSize,
  );
  return proto;
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
