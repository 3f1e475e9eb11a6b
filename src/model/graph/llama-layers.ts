import type { OnnxGraph } from '../../../kernels/onnx-graph.ts';
import { groupedQueryAttention, type AttentionShapes } from '../../../kernels/attention.ts';
import { linear, type LinearWeight } from '../../../kernels/linear.ts';
import { logSumExpRows } from '../../../kernels/log-sum-exp.ts';
import { multiLoraDelta } from '../../../kernels/multi-lora.ts';
import { gatherLoraTokens, loraZeroRow, packedMultiLoraDelta } from '../../../kernels/multi-lora-packed.ts';
import { rmsNorm } from '../../../kernels/rms-norm.ts';
import { addRotaryTables, rotary } from '../../../kernels/rotary.ts';
import { loraTargetShape, type LoraTarget, type ModelConfig } from '../model-config.ts';
import { GRAPH_IO } from './graph-io.ts';

/**
 * The layer builders of the decoder, shared by the whole-model and pipeline-stage graph (llama-graph.ts) and the
 * tensor-parallel segments (src/parallel/shard-graphs.ts). Each takes the model config as the graph's part of the
 * model sees it: a tensor-parallel rank passes its local config (its query and KV heads, its MLP columns), and weights
 * that give its slices under the same names, so TP gets every feature of the whole graph (LoRA kernels, qk-norm,
 * the logits log-sum-exp) by construction. Residual adds and norms between blocks are the caller's: in one graph they
 * fuse into SkipSimplifiedLayerNormalization, across TP ranks they are where the partial sums are reduced.
 */

/** Weights of a graph's layers by Hugging Face name prefix (`model.layers.0.self_attn.qkv_proj` is the fused QKV). */
export interface LayerWeights {
  linear(name: string): LinearWeight;
  /** A 1-D float tensor (norm weights). */
  vector(hfName: string): Float32Array;
}

/** A 1-D weight as an initializer of its own name. */
export function vectorInitializer(g: OnnxGraph, weights: LayerWeights, name: string): string {
  const v = weights.vector(name);
  return g.initializer(name, 'float32', [v.length], v);
}

/** What every attention block of a graph reads, made once per graph from the step inputs. */
export interface AttentionContext {
  positionIds: string;
  /** attention bias [B, 1, 1, S, T] */
  bias5: string;
  shapes: AttentionShapes;
  rotary: { cos: string; sin: string };
  qScale: string;
}

/** Shapes computed once per run from the bias input [B, 1, S, T], the rotary tables and the query scale. */
export function attentionContext(g: OnnxGraph, config: ModelConfig, positionIds: string, bias: string): AttentionContext {
  const { numHeads, numKvHeads, headDim } = config;
  const biasShape = g.op('Shape', [bias], { hint: 'bias_shape' });
  const dimB = g.op('Gather', [biasShape, g.constInt64('idx0', [0])], { attrs: { axis: { i: 0 } }, hint: 'dim_b' });
  const dimST = g.op('Gather', [biasShape, g.constInt64('idx23', [2, 3])], { attrs: { axis: { i: 0 } }, hint: 'dim_st' });
  const dimT = g.op('Gather', [biasShape, g.constInt64('idx3', [3])], { attrs: { axis: { i: 0 } }, hint: 'dim_t' });
  const concat = (parts: string[], hint: string) => g.op('Concat', parts, { attrs: { axis: { i: 0 } }, hint });
  const groups = numHeads / numKvHeads;
  const shapes = {
    scores5: concat([dimB, g.constInt64('kv_groups', [numKvHeads, groups]), dimST], 'shape_scores5'),
    scores4: concat([dimB, g.constInt64('kv_minus1', [numKvHeads, -1]), dimT], 'shape_scores4'),
  };
  const bias5 = g.op('Unsqueeze', [bias, g.constInt64('axis1', [1])], { hint: 'bias5' });
  const tables = addRotaryTables(g, config.ropeTheta, config.maxPositionEmbeddings, headDim);
  const qScale = g.constFloat('q_scale', [1 / Math.sqrt(headDim)], []);
  return { positionIds, bias5, shapes, rotary: tables, qScale };
}

export type LoraKernel = 'gather' | 'packed';

/**
 * The per-row adapter inputs of a LoRA graph: 'gather' takes rank-padded fp32 slot stacks and per-row slot indices
 * (kernels/multi-lora.ts); 'packed' takes the batch's adapters' factors packed by adapter and the batch's tokens grouped
 * by adapter (kernels/multi-lora-packed.ts; for quantized models: each token meets only its own adapter, bit-identical
 * in any batch). The packed form memoises what its modules share: the grouped tokens per input, a zero row per width.
 */
export type LoraRows =
  | { kernel: 'gather'; slot: string; scale: string }
  | { kernel: 'packed'; tokenIndex: string; rowIndex: string; gathered: Map<string, string>; zeroRows: Map<number, string> };

export function loraRowInputs(g: OnnxGraph, kernel: LoraKernel): LoraRows {
  if (kernel === 'packed') {
    return {
      kernel,
      tokenIndex: g.input(GRAPH_IO.loraTokenIndex, 'int64', ['lora_adapters', 'lora_tokens', 2]),
      rowIndex: g.input(GRAPH_IO.loraRowIndex, 'int64', ['batch', 'seq', 2]),
      gathered: new Map(),
      zeroRows: new Map(),
    };
  }
  return { kernel, slot: g.input(GRAPH_IO.loraSlot, 'int64', ['batch']), scale: g.input(GRAPH_IO.loraScale, 'float32', ['batch', 1, 1]) };
}

/** `base` plus each row's adapter delta on input `x` for one target linear (its stacks become graph inputs); `base` without LoRA. */
export function withLora(g: OnnxGraph, config: ModelConfig, lora: LoraRows | null, x: string, base: string, layer: number, target: LoraTarget): string {
  if (!lora) return base;
  const [inF, outF] = loraTargetShape(config, target);
  const hint = `l${layer}_${target}`;
  let delta: string;
  if (lora.kernel === 'packed') {
    const factors = {
      a: g.input(GRAPH_IO.loraA(layer, target), 'float32', ['lora_adapters', inF, 'rank']),
      b: g.input(GRAPH_IO.loraB(layer, target), 'float32', ['lora_adapters', 'rank', outF]),
    };
    let gathered = lora.gathered.get(x);
    if (!gathered) lora.gathered.set(x, (gathered = gatherLoraTokens(g, x, lora.tokenIndex, hint)));
    let zeroRow = lora.zeroRows.get(outF);
    if (!zeroRow) lora.zeroRows.set(outF, (zeroRow = loraZeroRow(g, lora.tokenIndex, outF, `lora_out${outF}`)));
    delta = packedMultiLoraDelta(g, gathered, factors, lora.rowIndex, zeroRow, `${hint}_lora`);
  } else {
    const a = g.input(GRAPH_IO.loraA(layer, target), 'float32', ['slots', inF, 'rank']);
    const b = g.input(GRAPH_IO.loraB(layer, target), 'float32', ['slots', 'rank', outF]);
    delta = multiLoraDelta(g, x, { a, b }, lora, `${hint}_lora`);
  }
  return g.op('Add', [base, delta], { hint: `${hint}_adapted` });
}

/**
 * Attention of one layer on the normed residual stream [B, S, hidden]: fused QKV -> (LoRA) -> (qk-norm) -> rotary ->
 * grouped-query attention over past_key.l / past_value.l (inputs) -> O -> (LoRA). Adds the new_key.l / new_value.l
 * outputs; returns the O projection [B, S, hidden] (a TP rank's partial sum).
 */
export function attentionBlock(g: OnnxGraph, config: ModelConfig, ctx: AttentionContext, lora: LoraRows | null, weights: LayerWeights, layer: number, normed: string): string {
  const { numHeads, numKvHeads, headDim, rmsNormEps: eps } = config;
  const p = `model.layers.${layer}`;
  const qSize = numHeads * headDim;
  const kvSize = numKvHeads * headDim;
  const qkv = linear(g, normed, `${p}.self_attn.qkv_proj`, weights.linear(`${p}.self_attn.qkv_proj`));
  let [q, k, v] = g.node('Split', [qkv, g.constInt64('qkv_split', [qSize, kvSize, kvSize])], {
    attrs: { axis: { i: -1 } },
    outputs: 3,
    hint: `l${layer}_qkv`,
  });
  q = withLora(g, config, lora, normed, q, layer, 'q_proj');
  k = withLora(g, config, lora, normed, k, layer, 'k_proj');
  v = withLora(g, config, lora, normed, v, layer, 'v_proj');
  if (config.qkNorm) {
    q = headNorm(g, q, vectorInitializer(g, weights, `${p}.self_attn.q_norm.weight`), numHeads, headDim, eps, `l${layer}_q_norm`);
    k = headNorm(g, k, vectorInitializer(g, weights, `${p}.self_attn.k_norm.weight`), numKvHeads, headDim, eps, `l${layer}_k_norm`);
  }
  q = g.op('Mul', [rotary(g, q, ctx.positionIds, ctx.rotary, numHeads, headDim, `l${layer}_q_rot`), ctx.qScale], { hint: `l${layer}_q_scaled` });
  k = rotary(g, k, ctx.positionIds, ctx.rotary, numKvHeads, headDim, `l${layer}_k_rot`);

  const pastK = g.input(GRAPH_IO.pastKey(layer), 'float32', ['batch', numKvHeads, 'past', headDim]);
  const pastV = g.input(GRAPH_IO.pastValue(layer), 'float32', ['batch', numKvHeads, 'past', headDim]);
  const attn = groupedQueryAttention(g, { q, k, v, pastK, pastV, bias5: ctx.bias5 }, { numHeads, numKvHeads, headDim }, ctx.shapes, `l${layer}_attn`);
  g.output(g.op('Identity', [attn.newK], { hint: GRAPH_IO.newKey(layer) }), 'float32', ['batch', numKvHeads, 'seq', headDim]);
  g.output(g.op('Identity', [attn.newV], { hint: GRAPH_IO.newValue(layer) }), 'float32', ['batch', numKvHeads, 'seq', headDim]);
  return withLora(g, config, lora, attn.out, linear(g, attn.out, `${p}.self_attn.o_proj`, weights.linear(`${p}.self_attn.o_proj`)), layer, 'o_proj');
}

/** SwiGLU MLP of one layer on the normed residual stream: fused gate/up -> (LoRA) -> silu(gate) * up -> down -> (LoRA). */
export function mlpBlock(g: OnnxGraph, config: ModelConfig, lora: LoraRows | null, weights: LayerWeights, layer: number, normed: string): string {
  const p = `model.layers.${layer}`;
  const gateUp = linear(g, normed, `${p}.mlp.gate_up_proj`, weights.linear(`${p}.mlp.gate_up_proj`));
  let [gate, up] = g.node('Split', [gateUp, g.constInt64('gate_up_split', [config.intermediateSize, config.intermediateSize])], {
    attrs: { axis: { i: -1 } },
    outputs: 2,
    hint: `l${layer}_gate_up`,
  });
  gate = withLora(g, config, lora, normed, gate, layer, 'gate_proj');
  up = withLora(g, config, lora, normed, up, layer, 'up_proj');
  const act = g.op('Mul', [g.op('Mul', [gate, g.op('Sigmoid', [gate], { hint: `l${layer}_sigmoid` })], { hint: `l${layer}_silu` }), up], { hint: `l${layer}_swiglu` });
  return withLora(g, config, lora, act, linear(g, act, `${p}.mlp.down_proj`, weights.linear(`${p}.mlp.down_proj`)), layer, 'down_proj');
}

/**
 * The LM head on the rows in `logits_index` only: final norm -> lm_head (a TP rank's weights give its vocab slice).
 * Outputs `logitsName` [rows, vocab (slice)] and its log-sum-exp `logits_lse` [rows], which spares the sampler a pass
 * over the vocabulary (a TP controller combines the slices' log-sum-exps).
 */
export function lmHead(g: OnnxGraph, config: ModelConfig, weights: LayerWeights, hidden: string, logitsIndex: string, logitsName: string): void {
  const flat = g.op('Reshape', [hidden, g.constInt64('shape_flat', [-1, config.hiddenSize])], { hint: 'final_flat' });
  const rows = g.op('Gather', [flat, logitsIndex], { attrs: { axis: { i: 0 } }, hint: 'final_rows' });
  const normed = rmsNorm(g, rows, vectorInitializer(g, weights, 'model.norm.weight'), config.rmsNormEps, 'final_norm');
  const head = weights.linear('lm_head');
  const logits = linear(g, normed, 'lm_head', head);
  g.output(g.op('Identity', [logits], { hint: logitsName }), 'float32', ['rows', head.outFeatures]);
  // One vectorised reduction here beats a JS pass over the vocabulary.
  g.output(logSumExpRows(g, logits, GRAPH_IO.logitsLogSumExp), 'float32', ['rows']);
}

/** RMSNorm over each head of a [B, S, heads*D] tensor (Qwen3 q/k norm). */
export function headNorm(g: OnnxGraph, x: string, weight: string, heads: number, headDim: number, eps: number, hint: string): string {
  const perHead = g.op('Reshape', [x, g.constInt64('shape_heads', [0, 0, heads, headDim])], { hint: `${hint}_heads` });
  const normed = rmsNorm(g, perHead, weight, eps, hint);
  return g.op('Reshape', [normed, g.constInt64('shape_merge', [0, 0, heads * headDim])], { hint: `${hint}_merged` });
}
