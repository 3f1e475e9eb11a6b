import { OnnxGraph } from '../../kernels/onnx-graph.ts';
import { rmsNorm } from '../../kernels/rms-norm.ts';
import { addRotaryTables, rotary } from '../../kernels/rotary.ts';
import { linear, type LinearWeight } from '../../kernels/linear.ts';
import { multiLoraDelta } from '../../kernels/multi-lora.ts';
import { groupedQueryAttention } from '../../kernels/attention.ts';
import { buildLlamaGraph, GRAPH_IO, headNorm, type GraphWeights } from '../model/graph/llama-graph.ts';
import type { LoraTarget, ModelConfig } from '../model/model-config.ts';
import { linearBytes, sliceLinearInputs, sliceLinearOutputs, type ConvertedWeights } from './converted-weights.ts';
import type { TpSlices } from './shard-layout.ts';

/**
 * Graphs of one shard, built at load time from the converted weights.
 *
 * Pipeline stage (tp = 1): one graph per stage, `buildLlamaGraph` over the stage's layers.
 *
 * Tensor parallel (tp > 1): ONNX Runtime cannot all-reduce inside a session, so each layer is cut at its two
 * all-reduce points and every rank runs the pieces over its own weight shard:
 *   embed        partial[b, s] = E_r[ids[b, s] - v0]  if the id is in the rank's vocab slice [v0, v1), else 0
 *   attention l  partial = O_r( attn_r( rmsNorm(h) ) )   QKV column-parallel over whole KV-head groups, O row-parallel
 *   mlp l        partial = Down_r( silu(Gate_r x) * Up_r x ),  x = rmsNorm(h)   gate/up column-, down row-parallel
 *   head         logits[:, v0:v1] = rmsNorm(h[rows]) W_lm[v0:v1]^T                  (all-gather, not all-reduce)
 * and between pieces the controller sums the partials into the residual stream h (h = sum for embed, h += sum else).
 * LoRA follows S-LoRA: for column-parallel targets A is replicated and B split by output columns; for row-parallel
 * targets A is split by input rows and B replicated, so the partial deltas sum to the full delta.
 */
export type SegmentKind = 'stage' | 'embed' | 'attention' | 'mlp' | 'head';

export const SEGMENT_IO = {
  partial: 'partial',
  logitsSlice: 'logits_slice',
} as const;

/** The model config as one rank sees it (its heads, MLP columns and layers): shapes of its KV cache and LoRA stacks. */
export function localConfig(config: ModelConfig, slices: TpSlices | null, numLayers: number): ModelConfig {
  if (!slices) return { ...config, numLayers };
  return { ...config, numLayers, numHeads: slices.heads.count, numKvHeads: slices.kvHeads.count, intermediateSize: slices.intermediate.count };
}

/** Memoised GraphWeights for `buildLlamaGraph` over converted weights (a pipeline stage reads only its layers). */
export function stageGraphWeights(config: ModelConfig, weights: ConvertedWeights, counter: { bytes: number }): GraphWeights {
  const memo = new Map<string, LinearWeight>();
  const inFeatures = (name: string) => (name.endsWith('o_proj') ? config.numHeads * config.headDim : name.endsWith('down_proj') ? config.intermediateSize : config.hiddenSize);
  return {
    linear(name) {
      let w = memo.get(name);
      if (!w) {
        w = weights.linear(name, inFeatures(name));
        counter.bytes += linearBytes(w);
        memo.set(name, w);
      }
      return w;
    },
    vector(name) {
      const v = weights.float32(name);
      counter.bytes += v.byteLength;
      return v;
    },
    embedding() {
      const e = weights.float32('model.embed_tokens.weight');
      counter.bytes += e.byteLength;
      return e;
    },
  };
}

export function buildStageGraph(config: ModelConfig, weights: GraphWeights, layers: { start: number; end: number }, lora: boolean): OnnxGraph {
  return buildLlamaGraph(config, weights, { lora, layers });
}

/** Builds the tensor-parallel segment graphs of one rank. Weight bytes held are added to `bytes`. */
export class TpSegmentBuilder {
  bytes = 0;
  private readonly memo = new Map<string, LinearWeight>();

  constructor(
    private readonly config: ModelConfig,
    private readonly weights: ConvertedWeights,
    private readonly slices: TpSlices,
    private readonly rank: number,
  ) {}

  embed(): OnnxGraph {
    const { hiddenSize } = this.config;
    const { start, count } = this.slices.vocab;
    const g = new OnnxGraph(`tessera_tp${this.rank}_embed`);
    const ids = g.input(GRAPH_IO.inputIds, 'int64', ['batch', 'seq']);
    const full = this.weights.float32('model.embed_tokens.weight');
    const table = g.initializer('embed_slice', 'float32', [count, hiddenSize], full.slice(start * hiddenSize, (start + count) * hiddenSize));
    this.bytes += count * hiddenSize * 4;
    const local = g.op('Sub', [ids, g.constInt64('vocab_start', [start], [])], { hint: 'local_ids' });
    const inRange = g.op('And', [
      g.op('GreaterOrEqual', [local, g.constInt64('zero', [0], [])], { hint: 'ge0' }),
      g.op('Less', [local, g.constInt64('vocab_count', [count], [])], { hint: 'lt_count' }),
    ], { hint: 'in_range' });
    const clamped = g.op('Where', [inRange, local, g.constInt64('zero_id', [0], [])], { hint: 'clamped_ids' });
    const rows = g.op('Gather', [table, clamped], { attrs: { axis: { i: 0 } }, hint: 'rows' });
    const mask = g.op('Unsqueeze', [g.op('Cast', [inRange], { attrs: { to: { i: 1 } }, hint: 'mask' }), g.constInt64('last_axis', [-1])], { hint: 'mask3' });
    g.output(g.op('Mul', [rows, mask], { hint: SEGMENT_IO.partial }), 'float32', ['batch', 'seq', hiddenSize]);
    return g;
  }

  attention(layer: number, lora: boolean): OnnxGraph {
    const c = this.config;
    const { headDim, hiddenSize, rmsNormEps: eps } = c;
    const heads = this.slices.heads;
    const kvHeads = this.slices.kvHeads;
    const p = `model.layers.${layer}`;
    const g = new OnnxGraph(`tessera_tp${this.rank}_l${layer}_attention${lora ? '_lora' : ''}`);
    const hidden = g.input(GRAPH_IO.hiddenIn, 'float32', ['batch', 'seq', hiddenSize]);
    const positionIds = g.input(GRAPH_IO.positionIds, 'int64', ['batch', 'seq']);
    const bias = g.input(GRAPH_IO.attentionBias, 'float32', ['batch', 1, 'seq', 'total']);
    const rows = lora ? loraRowInputs(g) : null;
    const normed = rmsNorm(g, hidden, this.vector(g, `${p}.input_layernorm.weight`), eps, 'input_norm');

    const qSize = c.numHeads * headDim;
    const kvSize = c.numKvHeads * headDim;
    const qkv = this.linearOnce(`${p}.self_attn.qkv_proj`, () =>
      sliceLinearOutputs(this.weights.linear(`${p}.self_attn.qkv_proj`, hiddenSize), [
        { start: heads.start * headDim, count: heads.count * headDim },
        { start: qSize + kvHeads.start * headDim, count: kvHeads.count * headDim },
        { start: qSize + kvSize + kvHeads.start * headDim, count: kvHeads.count * headDim },
      ]),
    );
    const localQ = heads.count * headDim;
    const localKv = kvHeads.count * headDim;
    let [q, k, v] = g.node('Split', [linear(g, normed, 'qkv', qkv), g.constInt64('qkv_split', [localQ, localKv, localKv])], { attrs: { axis: { i: -1 } }, outputs: 3, hint: 'qkv' });
    const withLora = (x: string, base: string, target: LoraTarget, inF: number | string, outF: number | string) => {
      if (!rows) return base;
      const a = g.input(GRAPH_IO.loraA(layer, target), 'float32', ['slots', inF, 'rank']);
      const b = g.input(GRAPH_IO.loraB(layer, target), 'float32', ['slots', 'rank', outF]);
      return g.op('Add', [base, multiLoraDelta(g, x, { a, b }, rows, `${target}_lora`)], { hint: `${target}_adapted` });
    };
    q = withLora(normed, q, 'q_proj', hiddenSize, localQ);
    k = withLora(normed, k, 'k_proj', hiddenSize, localKv);
    v = withLora(normed, v, 'v_proj', hiddenSize, localKv);
    if (c.qkNorm) {
      q = headNorm(g, q, this.vector(g, `${p}.self_attn.q_norm.weight`), heads.count, headDim, eps, 'q_norm');
      k = headNorm(g, k, this.vector(g, `${p}.self_attn.k_norm.weight`), kvHeads.count, headDim, eps, 'k_norm');
    }
    const tables = addRotaryTables(g, c.ropeTheta, c.maxPositionEmbeddings, headDim);
    const qScale = g.constFloat('q_scale', [1 / Math.sqrt(headDim)], []);
    q = g.op('Mul', [rotary(g, q, positionIds, tables, heads.count, headDim, 'q_rot'), qScale], { hint: 'q_scaled' });
    k = rotary(g, k, positionIds, tables, kvHeads.count, headDim, 'k_rot');

    const biasShape = g.op('Shape', [bias], { hint: 'bias_shape' });
    const dimB = g.op('Gather', [biasShape, g.constInt64('idx0', [0])], { attrs: { axis: { i: 0 } }, hint: 'dim_b' });
    const dimST = g.op('Gather', [biasShape, g.constInt64('idx23', [2, 3])], { attrs: { axis: { i: 0 } }, hint: 'dim_st' });
    const dimT = g.op('Gather', [biasShape, g.constInt64('idx3', [3])], { attrs: { axis: { i: 0 } }, hint: 'dim_t' });
    const groups = c.numHeads / c.numKvHeads;
    const concat = (parts: string[], hint: string) => g.op('Concat', parts, { attrs: { axis: { i: 0 } }, hint });
    const shapes = {
      scores5: concat([dimB, g.constInt64('kv_groups', [kvHeads.count, groups]), dimST], 'shape_scores5'),
      scores4: concat([dimB, g.constInt64('kv_minus1', [kvHeads.count, -1]), dimT], 'shape_scores4'),
    };
    const bias5 = g.op('Unsqueeze', [bias, g.constInt64('axis1', [1])], { hint: 'bias5' });
    const pastK = g.input(GRAPH_IO.pastKey(layer), 'float32', ['batch', kvHeads.count, 'past', headDim]);
    const pastV = g.input(GRAPH_IO.pastValue(layer), 'float32', ['batch', kvHeads.count, 'past', headDim]);
    const attn = groupedQueryAttention(g, { q, k, v, pastK, pastV, bias5 }, { numHeads: heads.count, numKvHeads: kvHeads.count, headDim }, shapes, 'attn');
    g.output(g.op('Identity', [attn.newK], { hint: GRAPH_IO.newKey(layer) }), 'float32', ['batch', kvHeads.count, 'seq', headDim]);
    g.output(g.op('Identity', [attn.newV], { hint: GRAPH_IO.newValue(layer) }), 'float32', ['batch', kvHeads.count, 'seq', headDim]);

    const oWeight = this.linearOnce(`${p}.self_attn.o_proj`, () =>
      sliceLinearInputs(this.weights.linear(`${p}.self_attn.o_proj`, qSize), heads.start * headDim, localQ, this.rank === 0),
    );
    const o = withLora(attn.out, linear(g, attn.out, 'o_proj', oWeight), 'o_proj', localQ, hiddenSize);
    g.output(g.op('Identity', [o], { hint: SEGMENT_IO.partial }), 'float32', ['batch', 'seq', hiddenSize]);
    return g;
  }

  mlp(layer: number, lora: boolean): OnnxGraph {
    const c = this.config;
    const { hiddenSize, intermediateSize, rmsNormEps: eps } = c;
    const cols = this.slices.intermediate;
    const p = `model.layers.${layer}`;
    const g = new OnnxGraph(`tessera_tp${this.rank}_l${layer}_mlp${lora ? '_lora' : ''}`);
    const hidden = g.input(GRAPH_IO.hiddenIn, 'float32', ['batch', 'seq', hiddenSize]);
    const rows = lora ? loraRowInputs(g) : null;
    const normed = rmsNorm(g, hidden, this.vector(g, `${p}.post_attention_layernorm.weight`), eps, 'post_norm');
    const gateUp = this.linearOnce(`${p}.mlp.gate_up_proj`, () =>
      sliceLinearOutputs(this.weights.linear(`${p}.mlp.gate_up_proj`, hiddenSize), [
        { start: cols.start, count: cols.count },
        { start: intermediateSize + cols.start, count: cols.count },
      ]),
    );
    let [gate, up] = g.node('Split', [linear(g, normed, 'gate_up', gateUp), g.constInt64('gate_up_split', [cols.count, cols.count])], { attrs: { axis: { i: -1 } }, outputs: 2, hint: 'gate_up' });
    const withLora = (x: string, base: string, target: LoraTarget, inF: number, outF: number) => {
      if (!rows) return base;
      const a = g.input(GRAPH_IO.loraA(layer, target), 'float32', ['slots', inF, 'rank']);
      const b = g.input(GRAPH_IO.loraB(layer, target), 'float32', ['slots', 'rank', outF]);
      return g.op('Add', [base, multiLoraDelta(g, x, { a, b }, rows, `${target}_lora`)], { hint: `${target}_adapted` });
    };
    gate = withLora(normed, gate, 'gate_proj', hiddenSize, cols.count);
    up = withLora(normed, up, 'up_proj', hiddenSize, cols.count);
    const act = g.op('Mul', [g.op('Mul', [gate, g.op('Sigmoid', [gate], { hint: 'sigmoid' })], { hint: 'silu' }), up], { hint: 'swiglu' });
    const down = this.linearOnce(`${p}.mlp.down_proj`, () =>
      sliceLinearInputs(this.weights.linear(`${p}.mlp.down_proj`, intermediateSize), cols.start, cols.count, this.rank === 0),
    );
    const out = withLora(act, linear(g, act, 'down_proj', down), 'down_proj', cols.count, hiddenSize);
    g.output(g.op('Identity', [out], { hint: SEGMENT_IO.partial }), 'float32', ['batch', 'seq', hiddenSize]);
    return g;
  }

  head(): OnnxGraph {
    const { hiddenSize, rmsNormEps: eps } = this.config;
    const vocab = this.slices.vocab;
    const g = new OnnxGraph(`tessera_tp${this.rank}_head`);
    const hidden = g.input(GRAPH_IO.hiddenIn, 'float32', ['batch', 'seq', hiddenSize]);
    const logitsIndex = g.input(GRAPH_IO.logitsIndex, 'int64', ['rows']);
    const flat = g.op('Reshape', [hidden, g.constInt64('shape_flat', [-1, hiddenSize])], { hint: 'flat' });
    const rows = g.op('Gather', [flat, logitsIndex], { attrs: { axis: { i: 0 } }, hint: 'rows' });
    const normed = rmsNorm(g, rows, this.vector(g, 'model.norm.weight'), eps, 'final_norm');
    const w = this.linearOnce('lm_head', () => sliceLinearOutputs(this.weights.linear('lm_head', hiddenSize), [vocab]));
    g.output(g.op('Identity', [linear(g, normed, 'lm_head', w)], { hint: SEGMENT_IO.logitsSlice }), 'float32', ['rows', vocab.count]);
    return g;
  }

  private vector(g: OnnxGraph, name: string): string {
    const v = this.weights.float32(name);
    if (!this.memo.has(name)) {
      this.bytes += v.byteLength;
      this.memo.set(name, { kind: 'fp32', inFeatures: 0, outFeatures: 0, weightInOut: new Float32Array(0) });
    }
    return g.initializer(name, 'float32', [v.length], v);
  }

  /** A sliced linear, computed and counted once (the base and LoRA variants of a segment share it). */
  private linearOnce(name: string, make: () => LinearWeight): LinearWeight {
    let w = this.memo.get(name);
    if (!w) {
      w = make();
      this.bytes += linearBytes(w);
      this.memo.set(name, w);
    }
    return w;
  }
}

function loraRowInputs(g: OnnxGraph): { slot: string; scale: string } {
  return { slot: g.input(GRAPH_IO.loraSlot, 'int64', ['batch']), scale: g.input(GRAPH_IO.loraScale, 'float32', ['batch', 1, 1]) };
}
