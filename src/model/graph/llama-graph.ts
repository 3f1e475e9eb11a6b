import { OnnxGraph } from '../../../kernels/onnx-graph.ts';
import { rmsNorm, skipRmsNorm } from '../../../kernels/rms-norm.ts';
import { addRotaryTables, rotary } from '../../../kernels/rotary.ts';
import { linear, type LinearWeight } from '../../../kernels/linear.ts';
import { multiLoraDelta } from '../../../kernels/multi-lora.ts';
import { packedMultiLoraDelta } from '../../../kernels/multi-lora-packed.ts';
import { groupedQueryAttention } from '../../../kernels/attention.ts';
import { logSumExpRows } from '../../../kernels/log-sum-exp.ts';
import { loraTargetShape, type LoraTarget, type ModelConfig } from '../model-config.ts';

/**
 * Version of the graphs this builder writes; part of the conversion cache key, so converted models cached by an older
 * builder are rebuilt instead of being served with stale graphs.
 */
export const GRAPH_VERSION = 6;

/** Graph input/output names shared by the graph builder and the runner. */
export const GRAPH_IO = {
  inputIds: 'input_ids',
  positionIds: 'position_ids',
  attentionBias: 'attention_bias',
  logitsIndex: 'logits_index',
  loraSlot: 'lora_slot',
  loraScale: 'lora_scale',
  /** Packed LoRA graph: [batch, 1, loraColumns] bool, true on the packed columns of each row's adapter. */
  loraSelect: 'lora_select',
  logits: 'logits',
  logitsLogSumExp: 'logits_lse',
  /** Residual stream [B, S, hidden] entering a pipeline stage that does not start at layer 0. */
  hiddenIn: 'hidden_in',
  /** Residual stream [B, S, hidden] leaving a pipeline stage that does not end at the LM head. */
  hiddenOut: 'hidden_out',
  pastKey: (layer: number) => `past_key.${layer}`,
  pastValue: (layer: number) => `past_value.${layer}`,
  newKey: (layer: number) => `new_key.${layer}`,
  newValue: (layer: number) => `new_value.${layer}`,
  loraA: (layer: number, target: LoraTarget) => `lora_a.${layer}.${target}`,
  loraB: (layer: number, target: LoraTarget) => `lora_b.${layer}.${target}`,
} as const;

/** Value added to the attention scores of positions a query must not see. Finite, so fully masked rows stay NaN-free. */
export const MASKED_SCORE = -1e9;

/** Weights for the graph, in the storage form chosen by the converter (memoised: each is computed once). */
export interface GraphWeights {
  /** A linear layer by Hugging Face weight name prefix, e.g. `model.layers.0.self_attn.qkv_proj` for the fused QKV. */
  linear(name: string): LinearWeight;
  /** A 1-D float tensor (norm weights). */
  vector(hfName: string): Float32Array;
  /** [vocab, hidden] */
  embedding(): Float32Array;
}

/**
 * Builds the decoder graph: embeddings, per layer RMSNorm -> fused QKV -> rotary -> GQA over the gathered cache -> O
 * -> residual RMSNorm -> SwiGLU MLP, then the final norm and LM head for the rows in `logits_index` only.
 * With `lora`, every target linear gets a batched multi-LoRA delta from stacked slot inputs whose slot count and
 * (padded) rank are dynamic dimensions, so the runner chooses them at load time.
 */
export interface LlamaGraphOptions {
  lora: boolean;
  /**
   * How a LoRA graph applies adapters (default 'gather'): 'gather' takes rank-padded fp32 slot stacks and per-row slot
   * indices (kernels/multi-lora.ts); 'packed' takes the group's adapters' factors packed side by side at true rank
   * and a per-row column selection (kernels/multi-lora-packed.ts; for quantized models, cheaper on decode batches).
   */
  loraKernel?: 'gather' | 'packed';
  /**
   * Pipeline stage: the layers [start, end) this graph runs (default: all). A stage starting past layer 0 takes the
   * residual stream `hidden_in` instead of `input_ids`; a stage ending before the last layer outputs `hidden_out`
   * instead of logits. The whole range gives the same graph as before.
   */
  layers?: { start: number; end: number };
}

export function buildLlamaGraph(config: ModelConfig, weights: GraphWeights, options: LlamaGraphOptions): OnnxGraph {
  const lora = options.lora;
  const layerStart = options.layers?.start ?? 0;
  const layerEnd = options.layers?.end ?? config.numLayers;
  const first = layerStart === 0;
  const last = layerEnd === config.numLayers;
  const whole = first && last;
  const g = new OnnxGraph(`${lora ? 'tessera_llama_lora' : 'tessera_llama'}${whole ? '' : `_layers_${layerStart}_${layerEnd}`}`);
  const { numHeads, numKvHeads, headDim, hiddenSize, vocabSize, rmsNormEps: eps } = config;
  const qSize = numHeads * headDim;
  const kvSize = numKvHeads * headDim;

  const inputIds = first ? g.input(GRAPH_IO.inputIds, 'int64', ['batch', 'seq']) : null;
  const hiddenIn = first ? null : g.input(GRAPH_IO.hiddenIn, 'float32', ['batch', 'seq', hiddenSize]);
  const positionIds = g.input(GRAPH_IO.positionIds, 'int64', ['batch', 'seq']);
  const bias = g.input(GRAPH_IO.attentionBias, 'float32', ['batch', 1, 'seq', 'total']);
  const logitsIndex = last ? g.input(GRAPH_IO.logitsIndex, 'int64', ['rows']) : null;
  const packedLora = lora && options.loraKernel === 'packed';
  const loraRows = lora && !packedLora
    ? { slot: g.input(GRAPH_IO.loraSlot, 'int64', ['batch']), scale: g.input(GRAPH_IO.loraScale, 'float32', ['batch', 1, 1]) }
    : null;
  const loraSelect = packedLora ? g.input(GRAPH_IO.loraSelect, 'bool', ['batch', 1, 'lora_columns']) : null;

  // Shapes computed once per run from the bias input [B, 1, S, T].
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

  const rotaryTables = addRotaryTables(g, config.ropeTheta, config.maxPositionEmbeddings, headDim);
  const qScale = g.constFloat('q_scale', [1 / Math.sqrt(headDim)], []);
  let hidden: string;
  if (inputIds) {
    const embed = g.initializer('model.embed_tokens.weight', 'float32', [vocabSize, hiddenSize], weights.embedding());
    hidden = g.op('Gather', [embed, inputIds], { attrs: { axis: { i: 0 } }, hint: 'embeddings' });
  } else {
    hidden = hiddenIn!;
  }
  const norm = (name: string) => g.initializer(name, 'float32', [config.hiddenSize], weights.vector(name));

  const withLora = (x: string, base: string, layer: number, target: LoraTarget): string => {
    if (!loraRows && !loraSelect) return base;
    const [inF, outF] = loraTargetShape(config, target);
    if (loraSelect) {
      const factors = {
        a: g.input(GRAPH_IO.loraA(layer, target), 'float32', [inF, 'lora_columns']),
        b: g.input(GRAPH_IO.loraB(layer, target), 'float32', ['lora_columns', outF]),
      };
      const packedDelta = packedMultiLoraDelta(g, x, factors, loraSelect, `l${layer}_${target}_lora`);
      return g.op('Add', [base, packedDelta], { hint: `l${layer}_${target}_adapted` });
    }
    const a = g.input(GRAPH_IO.loraA(layer, target), 'float32', ['slots', inF, 'rank']);
    const b = g.input(GRAPH_IO.loraB(layer, target), 'float32', ['slots', 'rank', outF]);
    const delta = multiLoraDelta(g, x, { a, b }, loraRows!, `l${layer}_${target}_lora`);
    return g.op('Add', [base, delta], { hint: `l${layer}_${target}_adapted` });
  };

  let normed = rmsNorm(g, hidden, norm(`model.layers.${layerStart}.input_layernorm.weight`), eps, `l${layerStart}_input_norm`);
  let pendingResidual: string | null = null;
  for (let layer = layerStart; layer < layerEnd; layer++) {
    const p = `model.layers.${layer}`;
    if (pendingResidual) {
      [normed, hidden] = skipRmsNorm(g, pendingResidual, hidden, norm(`${p}.input_layernorm.weight`), eps, `l${layer}_input_norm`);
    }
    const qkv = linear(g, normed, `${p}.self_attn.qkv_proj`, weights.linear(`${p}.self_attn.qkv_proj`));
    let [q, k, v] = g.node('Split', [qkv, g.constInt64('qkv_split', [qSize, kvSize, kvSize])], {
      attrs: { axis: { i: -1 } },
      outputs: 3,
      hint: `l${layer}_qkv`,
    });
    q = withLora(normed, q, layer, 'q_proj');
    k = withLora(normed, k, layer, 'k_proj');
    v = withLora(normed, v, layer, 'v_proj');
    if (config.qkNorm) {
      q = headNorm(g, q, g.initializer(`${p}.self_attn.q_norm.weight`, 'float32', [headDim], weights.vector(`${p}.self_attn.q_norm.weight`)), numHeads, headDim, eps, `l${layer}_q_norm`);
      k = headNorm(g, k, g.initializer(`${p}.self_attn.k_norm.weight`, 'float32', [headDim], weights.vector(`${p}.self_attn.k_norm.weight`)), numKvHeads, headDim, eps, `l${layer}_k_norm`);
    }
    q = g.op('Mul', [rotary(g, q, positionIds, rotaryTables, numHeads, headDim, `l${layer}_q_rot`), qScale], { hint: `l${layer}_q_scaled` });
    k = rotary(g, k, positionIds, rotaryTables, numKvHeads, headDim, `l${layer}_k_rot`);

    const pastK = g.input(GRAPH_IO.pastKey(layer), 'float32', ['batch', numKvHeads, 'past', headDim]);
    const pastV = g.input(GRAPH_IO.pastValue(layer), 'float32', ['batch', numKvHeads, 'past', headDim]);
    const attn = groupedQueryAttention(g, { q, k, v, pastK, pastV, bias5 }, { numHeads, numKvHeads, headDim }, shapes, `l${layer}_attn`);
    g.output(g.op('Identity', [attn.newK], { hint: GRAPH_IO.newKey(layer) }), 'float32', ['batch', numKvHeads, 'seq', headDim]);
    g.output(g.op('Identity', [attn.newV], { hint: GRAPH_IO.newValue(layer) }), 'float32', ['batch', numKvHeads, 'seq', headDim]);

    const o = withLora(attn.out, linear(g, attn.out, `${p}.self_attn.o_proj`, weights.linear(`${p}.self_attn.o_proj`)), layer, 'o_proj');
    [normed, hidden] = skipRmsNorm(g, o, hidden, norm(`${p}.post_attention_layernorm.weight`), eps, `l${layer}_post_norm`);

    const gateUp = linear(g, normed, `${p}.mlp.gate_up_proj`, weights.linear(`${p}.mlp.gate_up_proj`));
    let [gate, up] = g.node('Split', [gateUp, g.constInt64('gate_up_split', [config.intermediateSize, config.intermediateSize])], {
      attrs: { axis: { i: -1 } },
      outputs: 2,
      hint: `l${layer}_gate_up`,
    });
    gate = withLora(normed, gate, layer, 'gate_proj');
    up = withLora(normed, up, layer, 'up_proj');
    const act = g.op('Mul', [g.op('Mul', [gate, g.op('Sigmoid', [gate], { hint: `l${layer}_sigmoid` })], { hint: `l${layer}_silu` }), up], { hint: `l${layer}_swiglu` });
    pendingResidual = withLora(act, linear(g, act, `${p}.mlp.down_proj`, weights.linear(`${p}.mlp.down_proj`)), layer, 'down_proj');
  }

  const finalHidden = g.op('Add', [pendingResidual!, hidden], { hint: 'final_residual' });
  if (!logitsIndex) {
    g.output(g.op('Identity', [finalHidden], { hint: GRAPH_IO.hiddenOut }), 'float32', ['batch', 'seq', hiddenSize]);
    return g;
  }
  const flat = g.op('Reshape', [finalHidden, g.constInt64('shape_flat', [-1, hiddenSize])], { hint: 'final_flat' });
  const rows = g.op('Gather', [flat, logitsIndex], { attrs: { axis: { i: 0 } }, hint: 'final_rows' });
  const finalNormed = rmsNorm(g, rows, norm('model.norm.weight'), eps, 'final_norm');
  const logits = linear(g, finalNormed, 'lm_head', weights.linear('lm_head'));
  g.output(g.op('Identity', [logits], { hint: GRAPH_IO.logits }), 'float32', ['rows', vocabSize]);
  // The sampler needs log-softmax normalisers for logprobs; one vectorised reduction here beats a JS pass over the vocab.
  g.output(logSumExpRows(g, logits, GRAPH_IO.logitsLogSumExp), 'float32', ['rows']);
  return g;
}

/** RMSNorm over each head of a [B, S, heads*D] tensor (Qwen3 q/k norm). */
export function headNorm(g: OnnxGraph, x: string, weight: string, heads: number, headDim: number, eps: number, hint: string): string {
  const perHead = g.op('Reshape', [x, g.constInt64('shape_heads', [0, 0, heads, headDim])], { hint: `${hint}_heads` });
  const normed = rmsNorm(g, perHead, weight, eps, hint);
  return g.op('Reshape', [normed, g.constInt64('shape_merge', [0, 0, heads * headDim])], { hint: `${hint}_merged` });
}

