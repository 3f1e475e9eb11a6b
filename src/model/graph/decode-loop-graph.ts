import { join } from 'node:path';
import { OnnxGraph } from '../../../kernels/onnx-graph.ts';
import { sampleTokens } from '../../../kernels/loop-sampling.ts';
import { TesseraError } from '../../errors.ts';
import { noiseIfBranches } from './graph-sampling.ts';
import { GRAPH_IO, MASKED_SCORE } from './graph-io.ts';
import { encodeModelProto, readModelProto, toModelProto, type ProtoGraph } from './onnx-proto.ts';
import type { ModelConfig } from '../model-config.ts';

/** Inputs and outputs of the k-steps-per-run decode graph (the converted graph's LoRA inputs pass through unchanged). */
export const DECODE_LOOP_IO = {
  /** [] int64: decode steps in this run (the Loop trip count), >= 1. */
  steps: 'loop_steps',
  /** [] bool: true when some row samples (temperature > 0); false skips the random stream. */
  anySampled: 'loop_any_sampled',
  /** [B] int64: the token each row feeds first (sampled by the previous step). */
  inputIds: 'loop_input_ids',
  /** [B] int64: position of that token = the row's cached positions. */
  startPositions: 'loop_start_positions',
  /** [B] float32, 0 = greedy. */
  temperature: 'loop_temperature',
  /** [B] int64, 0 = off. */
  topK: 'loop_top_k',
  /** [B] int64, non-negative. */
  seed: 'loop_seed',
  /** [B, kvHeads, P, headDim] the decoder's past of the rows, host-gathered (P >= every row's start; later positions masked). */
  pastKey: (layer: number) => `loop_${GRAPH_IO.pastKey(layer)}`,
  pastValue: (layer: number) => `loop_${GRAPH_IO.pastValue(layer)}`,
  /** [k, B] int64: the token each row sampled at each step. */
  tokenIds: 'loop_token_ids',
  /** [k, B] float32: its log-probability under the raw logits (logit - logsumexp). */
  logprobs: 'loop_logprobs',
  /** [B, kvHeads, k, headDim]: the decoder's new keys / values of the k positions each row wrote (start .. start + k - 1). */
  newKey: (layer: number) => `loop_${GRAPH_IO.newKey(layer)}`,
  newValue: (layer: number) => `loop_${GRAPH_IO.newValue(layer)}`,
} as const;

const GRAPH_ATTRIBUTE = 5;

/**
 * Rewrites a converted decoder graph (base or LoRA; llama-graph.ts) into one that runs k decode steps per session.run:
 *
 *   inputs:  loop_steps k, the rows' first token, start position and sampling parameters, and the host-gathered
 *            loop_past_key.l / loop_past_value.l [B, kvHeads, P, D] (P >= every row's start; positions past a row's start masked)
 *   window.l = past.l ++ zeros [B, kvHeads, k, D]                       per-run KV of the rows, carried by the Loop
 *   Loop i = 0 .. k-1, carried (token [B], window.l ...):
 *     position = start + i; bias[b, j] = 0 for j < position_b (and the step's own column), MASKED_SCORE otherwise
 *     decoder(token, position, bias, past = window) -> logits [B, V], logits_lse [B], new_key.l [B, kvHeads, 1, D]
 *     window.l[b, h, position_b] = new_key.l[b, h, 0]                   ScatterND at in-graph computed indices
 *     token = sample(logits) (kernels/loop-sampling.ts; the random stream keyed by (seed, position + 1, vocab index))
 *     scan outputs: token, logits[token] - logits_lse, new_key.l, new_value.l
 *   outputs: loop_token_ids [k, B], loop_logprobs [k, B], loop_new_key.l / loop_new_value.l [B, kvHeads, k, D]
 *
 * The host keeps the paged KV cache (it scatters the k new positions back after the run), so on CUDA the past crosses
 * PCIe once per k tokens and only the new keys/values, ids and logprobs come back (docs/gpu.md, transfer-bytes.ts).
 * The decoder's weights stay initializers of the outer graph; the Loop body reads them from the outer scope.
 */
export function decodeLoopModel(modelDir: string, graphFile: string, config: ModelConfig): Uint8Array {
  const path = join(modelDir, graphFile);
  const model = readModelProto(path);
  const { numLayers, numKvHeads, headDim, vocabSize } = config;
  const decoder = model.graph;
  const replacedInputs = new Set<string>([GRAPH_IO.inputIds, GRAPH_IO.positionIds, GRAPH_IO.attentionBias, GRAPH_IO.logitsIndex]);
  for (let layer = 0; layer < numLayers; layer++) replacedInputs.add(GRAPH_IO.pastKey(layer)).add(GRAPH_IO.pastValue(layer));
  const needed = [...replacedInputs, GRAPH_IO.logits, GRAPH_IO.logitsLogSumExp, GRAPH_IO.newKey(0)];
  const missing = needed.filter((name) => !decoder.input.some((v) => v.name === name) && !decoder.output.some((v) => v.name === name));
  if (missing.length > 0) throw new TesseraError('CHECKPOINT_INVALID', `${path}: not a decoder graph with a KV cache and logits_lse: no ${missing.slice(0, 2).join(', ')}`);
  const decode = (g: OnnxGraph) => toModelProto(g).graph;
  const kvNames = Array.from({ length: numLayers }, (_, l) => [GRAPH_IO.pastKey(l), GRAPH_IO.pastValue(l)]).flat();
  const newKvNames = Array.from({ length: numLayers }, (_, l) => [GRAPH_IO.newKey(l), GRAPH_IO.newValue(l)]).flat();
  const windowDims = ['batch', numKvHeads, 'window', headDim];

  // Loop body, part 1: the decoder's inputs from the carried state and the iteration number.
  const pre = new OnnxGraph('loop_body_in');
  const iter = pre.input('lb_iter', 'int64', []);
  const condIn = pre.input('lb_cond_in', 'bool', []);
  const idsIn = pre.input('lb_ids_in', 'int64', ['batch']);
  const windowsIn = kvNames.map((name) => pre.input(`lb_${name}_in`, 'float32', windowDims));
  const position = pre.op('Add', ['lp_start', iter], { hint: 'lb_position' }); // [B, 1]
  pre.node('Identity', [position], { outputs: [GRAPH_IO.positionIds], hint: 'lb_position_ids' });
  pre.node('Unsqueeze', [idsIn, pre.constInt64('lb_axis1', [1])], { outputs: [GRAPH_IO.inputIds], hint: 'lb_input_ids' });
  windowsIn.forEach((w, i) => pre.node('Identity', [w], { outputs: [kvNames[i]], hint: `lb_${kvNames[i]}_past` }));
  const windowLength = pre.op('Gather', [pre.op('Shape', [windowsIn[0]], { hint: 'lb_window_shape' }), pre.constInt64('lb_idx2', [2], [])], { attrs: { axis: { i: 0 } }, hint: 'lb_window_length' });
  const batch = pre.op('Gather', [pre.op('Shape', [idsIn], { hint: 'lb_ids_shape' }), pre.constInt64('lb_idx0', [0], [])], { attrs: { axis: { i: 0 } }, hint: 'lb_batch' });
  const zeroI = pre.constInt64('lb_zero', [0], []);
  const oneI = pre.constInt64('lb_one', [1], []);
  const columns = pre.op('Unsqueeze', [pre.op('Range', [zeroI, windowLength, oneI], { hint: 'lb_columns_1d' }), pre.constInt64('lb_axis0', [0])], { hint: 'lb_columns' }); // [1, W]
  const visible = pre.op('Less', [columns, position], { hint: 'lb_visible' }); // [B, W]
  const pastBias = pre.op('Where', [visible, pre.constFloat('lb_open', [0], []), pre.constFloat('lb_masked', [MASKED_SCORE], [])], { hint: 'lb_past_bias' });
  const selfColumn = pre.op('Mul', [pre.op('Cast', [position], { attrs: { to: { i: 1 } }, hint: 'lb_position_f' }), pre.constFloat('lb_zero_f', [0], [])], { hint: 'lb_self_column' }); // [B, 1] zeros
  const bias = pre.op('Concat', [pastBias, selfColumn], { attrs: { axis: { i: 1 } }, hint: 'lb_bias2' }); // [B, W + 1]
  pre.node('Unsqueeze', [bias, pre.constInt64('lb_axes12', [1, 2])], { outputs: [GRAPH_IO.attentionBias], hint: 'lb_bias' });
  const rows = pre.op('Range', [zeroI, batch, oneI], { hint: 'lb_rows' }); // [B]
  pre.node('Identity', [rows], { outputs: [GRAPH_IO.logitsIndex], hint: 'lb_logits_index' });

  // Loop body, part 2: write the step's keys/values into the windows, sample, emit.
  const post = new OnnxGraph('loop_body_out');
  const shape4 = post.op('Concat', [post.op('Reshape', [batch, post.constInt64('lc_shape1', [1])], { hint: 'lc_batch1' }), post.constInt64('lc_heads_11', [numKvHeads, 1, 1])], { attrs: { axis: { i: 0 } }, hint: 'lc_index_shape' });
  const expand = (v: string, hint: string) => post.op('Expand', [v, shape4], { hint });
  const rowIndex = expand(post.op('Reshape', [rows, post.constInt64('lc_shape_b111', [-1, 1, 1, 1])], { hint: 'lc_rows4' }), 'lc_row_index');
  const headIndex = expand(post.constInt64('lc_heads', Array.from({ length: numKvHeads }, (_, h) => h), [1, numKvHeads, 1, 1]), 'lc_head_index');
  const positionIndex = expand(post.op('Reshape', [position, post.constInt64('lc_shape_p111', [-1, 1, 1, 1])], { hint: 'lc_position4' }), 'lc_position_index');
  const writeIndex = post.op('Concat', [rowIndex, headIndex, positionIndex], { attrs: { axis: { i: 3 } }, hint: 'lc_write_index' }); // [B, kvHeads, 1, 3]
  const windowsOut = kvNames.map((name, i) => post.op('ScatterND', [windowsIn[i], writeIndex, newKvNames[i]], { hint: `lc_${name}_out` }));
  post.node('Identity', [post.op('Add', [position, oneI], { hint: 'lc_next_position_v' })], { outputs: ['lb_next_position'], hint: 'lc_next_position_id' });
  post.node('Reshape', ['lp_seed', post.constInt64('lc_shape_b1', [-1, 1])], { outputs: ['lb_seed'], hint: 'lc_seed_r' });
  const [noiseOut] = post.node('If', ['lp_any_sampled'], { outputs: ['lb_noise'], hint: 'lc_noise_if' });
  const token = sampleTokens(post, GRAPH_IO.logits, { temperature: 'lp_temperature', topK: 'lp_top_k', seed: 'lb_seed' }, noiseOut, 'lc_sample');
  const chosen = post.op('GatherElements', [GRAPH_IO.logits, post.op('Unsqueeze', [token, post.constInt64('lc_axis1b', [1])], { hint: 'lc_token2' })], { attrs: { axis: { i: 1 } }, hint: 'lc_chosen' });
  const logprob = post.op('Sub', [post.op('Squeeze', [chosen, post.constInt64('lc_axis1c', [1])], { hint: 'lc_chosen1' }), GRAPH_IO.logitsLogSumExp], { hint: 'lc_logprob' });
  const bodyOutputs: Array<[string, string, 'float32' | 'int64' | 'bool', Array<number | string>]> = [
    [condIn, 'lb_cond_out', 'bool', []],
    [token, 'lb_ids_out', 'int64', ['batch']],
    ...windowsOut.map((w, i): [string, string, 'float32', Array<number | string>] => [w, `lb_${kvNames[i]}_next`, 'float32', windowDims]),
    [token, 'lb_scan_token', 'int64', ['batch']],
    [logprob, 'lb_scan_logprob', 'float32', ['batch']],
    ...newKvNames.map((name): [string, string, 'float32', Array<number | string>] => [name, `lb_scan_${name}`, 'float32', ['batch', numKvHeads, 1, headDim]]),
  ];
  for (const [value, name, t, dims] of bodyOutputs) {
    post.node('Identity', [value], { outputs: [name], hint: `lc_${name}_id` });
    post.output(name, t, dims);
  }

  // The outer graph: per-row parameters as [B, 1], the windows, the Loop and the reshaped outputs.
  const outer = new OnnxGraph('decode_loop');
  const steps = outer.input(DECODE_LOOP_IO.steps, 'int64', []);
  outer.input(DECODE_LOOP_IO.anySampled, 'bool', []);
  outer.node('Identity', [DECODE_LOOP_IO.anySampled], { outputs: ['lp_any_sampled'], hint: 'lp_any_sampled_id' });
  const inputIds = outer.input(DECODE_LOOP_IO.inputIds, 'int64', ['batch']);
  const column = (name: string, t: 'int64' | 'float32', as: string) => {
    outer.input(name, t, ['batch']);
    outer.node('Reshape', [name, outer.constInt64(`${as}_shape`, [-1, 1])], { outputs: [as], hint: `${as}_r` });
  };
  column(DECODE_LOOP_IO.startPositions, 'int64', 'lp_start');
  column(DECODE_LOOP_IO.temperature, 'float32', 'lp_temperature');
  column(DECODE_LOOP_IO.topK, 'int64', 'lp_top_k');
  outer.input(DECODE_LOOP_IO.seed, 'int64', ['batch']);
  outer.node('Identity', [DECODE_LOOP_IO.seed], { outputs: ['lp_seed'], hint: 'lp_seed_id' });
  outer.node('Unsqueeze', [outer.op('Range', [outer.constInt64('lp_v0', [0], []), outer.constInt64('lp_vn', [vocabSize], []), outer.constInt64('lp_v1', [1], [])], { hint: 'lp_vocab_1d' }), outer.constInt64('lp_axis0', [0])], { outputs: ['lp_vocab_index'], hint: 'lp_vocab_index_u' });
  const pastInputs = Array.from({ length: numLayers }, (_, l) => [DECODE_LOOP_IO.pastKey(l), DECODE_LOOP_IO.pastValue(l)]).flat();
  for (const name of pastInputs) outer.input(name, 'float32', ['batch', numKvHeads, 'past', headDim]);
  const pastShape = outer.op('Shape', [pastInputs[0]], { hint: 'lp_past_shape' });
  const slice = (from: number, to: number) => outer.op('Slice', [pastShape, outer.constInt64('lp_from', [from]), outer.constInt64('lp_to', [to])], { hint: 'lp_dims' });
  const extShape = outer.op('Concat', [slice(0, 2), outer.op('Reshape', [steps, outer.constInt64('lp_shape1', [1])], { hint: 'lp_steps1' }), slice(3, 4)], { attrs: { axis: { i: 0 } }, hint: 'lp_ext_shape' });
  const extension = outer.op('ConstantOfShape', [extShape], { hint: 'lp_extension' }); // float 0 by default
  const windows = pastInputs.map((name) => outer.op('Concat', [name, extension], { attrs: { axis: { i: 2 } }, hint: `lp_window_${name}` }));
  const loopOutputs = [
    'lp_final_ids',
    ...kvNames.map((name) => `lp_final_${name}`),
    'lp_tokens',
    'lp_logprobs',
    ...newKvNames.map((name) => `lp_scan_${name}`),
  ];
  outer.node('Loop', [steps, outer.initializer('lp_cond', 'bool', [], Uint8Array.of(1)), inputIds, ...windows], { outputs: loopOutputs, hint: 'lp_loop' });
  outer.node('Identity', ['lp_tokens'], { outputs: [DECODE_LOOP_IO.tokenIds], hint: 'lp_tokens_out' });
  outer.output(DECODE_LOOP_IO.tokenIds, 'int64', ['steps', 'batch']);
  outer.node('Identity', ['lp_logprobs'], { outputs: [DECODE_LOOP_IO.logprobs], hint: 'lp_logprobs_out' });
  outer.output(DECODE_LOOP_IO.logprobs, 'float32', ['steps', 'batch']);
  for (let layer = 0; layer < numLayers; layer++) {
    for (const [scan, out] of [
      [`lp_scan_${GRAPH_IO.newKey(layer)}`, DECODE_LOOP_IO.newKey(layer)],
      [`lp_scan_${GRAPH_IO.newValue(layer)}`, DECODE_LOOP_IO.newValue(layer)],
    ]) {
      const squeezed = outer.op('Squeeze', [scan, outer.constInt64('lp_axis3', [3])], { hint: `${out}_squeezed` }); // [k, B, H, D]
      outer.node('Transpose', [squeezed], { outputs: [out], attrs: { perm: { ints: [1, 2, 0, 3] } }, hint: `${out}_t` });
      outer.output(out, 'float32', ['batch', numKvHeads, 'steps', headDim]);
    }
  }

  // Assemble at the protobuf level: body = pre + decoder nodes + post; If and Loop get their subgraphs.
  const preProto = decode(pre);
  const postProto = decode(post);
  // The random stream, computed only when some row samples.
  postProto.node.find((n) => n.opType === 'If')!.attribute = noiseIfBranches(
    { seed: 'lb_seed', position: 'lb_next_position', vocabIndex: 'lp_vocab_index' },
    { graph: 'loop_noise', prefix: 'ln', zeroGraph: 'loop_no_noise', zeroPrefix: 'lz', rowsDim: 'batch' },
    vocabSize,
  );
  const body: ProtoGraph = {
    ...postProto,
    node: [...preProto.node, ...decoder.node, ...postProto.node],
    initializer: [...preProto.initializer, ...postProto.initializer],
    input: preProto.input,
    output: postProto.output,
  };
  (body as unknown as { name: string }).name = 'decode_loop_body';
  const outerProto = decode(outer);
  const loopNode = outerProto.node.find((n) => n.opType === 'Loop')!;
  loopNode.attribute = [{ name: 'body', type: GRAPH_ATTRIBUTE, g: body }];
  const passThrough = decoder.input.filter((v) => !replacedInputs.has(v.name));
  model.graph = {
    ...outerProto,
    node: outerProto.node,
    initializer: [...decoder.initializer, ...outerProto.initializer],
    input: [...outerProto.input, ...passThrough],
    output: outerProto.output,
  };
  return encodeModelProto(model);
}
