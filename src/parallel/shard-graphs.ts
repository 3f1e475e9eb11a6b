import { OnnxGraph } from '../../kernels/onnx-graph.ts';
import { rmsNorm } from '../../kernels/rms-norm.ts';
import type { LinearWeight } from '../../kernels/linear.ts';
import { GRAPH_IO } from '../model/graph/graph-io.ts';
import { buildLlamaGraph, type GraphWeights } from '../model/graph/llama-graph.ts';
import { attentionBlock, attentionContext, lmHead, loraRowInputs, mlpBlock, vectorInitializer, type LayerWeights, type LoraKernel } from '../model/graph/llama-layers.ts';
import type { ModelConfig } from '../model/model-config.ts';
import { linearBytes, sliceLinearInputs, sliceLinearOutputs, type ConvertedWeights } from './converted-weights.ts';
import type { TpSlices } from './shard-layout.ts';

/**
 * Graphs of one shard, built at load time from the converted weights with the layer builders of the whole-model graph
 * (src/model/graph/llama-layers.ts).
 *
 * Pipeline stage (tp = 1): one graph per stage, `buildLlamaGraph` over the stage's layers.
 *
 * Tensor parallel (tp > 1): ONNX Runtime cannot all-reduce inside a session, so each layer is cut at its two
 * all-reduce points and every rank runs the pieces over its own weight shard:
 *   embed        partial[b, s] = E_r[ids[b, s] - v0]  if the id is in the rank's vocab slice [v0, v1), else 0
 *   attention l  partial = attentionBlock_r(rmsNorm(h))   QKV column-parallel over whole KV-head groups, O row-parallel
 *   mlp l        partial = mlpBlock_r(rmsNorm(h))         gate/up column-parallel, down row-parallel
 *   head         logits[:, v0:v1], lse_r = lmHead_r(h)    the rank's vocab slice and its log-sum-exp (all-gather)
 * and between pieces the controller sums the partials into the residual stream h (h = sum for embed, h += sum else).
 * The blocks are the whole graph's, given the rank's local config (its heads and MLP columns) and sliced weights.
 * LoRA follows S-LoRA: for column-parallel targets A is replicated and B split by output columns; for row-parallel
 * targets A is split by input rows and B replicated, so the partial deltas sum to the full delta (either LoRA kernel).
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

/** Input features of a linear of the whole model, by name. */
function inFeatures(config: ModelConfig, name: string): number {
  return name.endsWith('o_proj') ? config.numHeads * config.headDim : name.endsWith('down_proj') ? config.intermediateSize : config.hiddenSize;
}

/**
 * Weights read from the converted model once each, with the bytes they hold added to `counter`; a linear goes through
 * `slice` (a TP rank's part of it) before it is kept.
 */
function countedWeights(config: ModelConfig, weights: ConvertedWeights, counter: { bytes: number }, slice: (name: string, w: LinearWeight) => LinearWeight): GraphWeights {
  const linears = new Map<string, LinearWeight>();
  const vectors = new Map<string, Float32Array>();
  const once = (name: string, read: () => Float32Array) => {
    let v = vectors.get(name);
    if (!v) {
      v = read();
      counter.bytes += v.byteLength;
      vectors.set(name, v);
    }
    return v;
  };
  return {
    linear(name) {
      let w = linears.get(name);
      if (!w) {
        w = slice(name, weights.linear(name, inFeatures(config, name)));
        counter.bytes += linearBytes(w);
        linears.set(name, w);
      }
      return w;
    },
    vector: (name) => once(name, () => weights.float32(name)),
    embedding: () => once('model.embed_tokens.weight', () => weights.float32('model.embed_tokens.weight')),
  };
}

/** Memoised GraphWeights for `buildLlamaGraph` over converted weights (a pipeline stage reads only its layers). */
export function stageGraphWeights(config: ModelConfig, weights: ConvertedWeights, counter: { bytes: number }): GraphWeights {
  return countedWeights(config, weights, counter, (_name, w) => w);
}

export function buildStageGraph(config: ModelConfig, weights: GraphWeights, layers: { start: number; end: number }, lora: boolean, loraKernel: LoraKernel = 'gather'): OnnxGraph {
  return buildLlamaGraph(config, weights, { lora, loraKernel, layers });
}

/**
 * One TP rank's weights under the whole model's names: QKV keeps its heads' columns of q, k and v, O its heads' input
 * rows; gate/up keep its MLP columns, down their input rows; the LM head its vocab slice. Row-parallel linears keep
 * their bias on rank 0 only (the partial sums add it once).
 */
function tpLayerWeights(config: ModelConfig, weights: ConvertedWeights, slices: TpSlices, rank: number, counter: { bytes: number }): LayerWeights {
  const d = config.headDim;
  const qSize = config.numHeads * d;
  const kvSize = config.numKvHeads * d;
  const { heads, kvHeads, intermediate: cols, vocab } = slices;
  return countedWeights(config, weights, counter, (name, w) => {
    if (name.endsWith('.self_attn.qkv_proj')) {
      return sliceLinearOutputs(w, [
        { start: heads.start * d, count: heads.count * d },
        { start: qSize + kvHeads.start * d, count: kvHeads.count * d },
        { start: qSize + kvSize + kvHeads.start * d, count: kvHeads.count * d },
      ]);
    }
    if (name.endsWith('.self_attn.o_proj')) return sliceLinearInputs(w, heads.start * d, heads.count * d, rank === 0);
    if (name.endsWith('.mlp.gate_up_proj')) return sliceLinearOutputs(w, [cols, { start: config.intermediateSize + cols.start, count: cols.count }]);
    if (name.endsWith('.mlp.down_proj')) return sliceLinearInputs(w, cols.start, cols.count, rank === 0);
    if (name === 'lm_head') return sliceLinearOutputs(w, [vocab]);
    return w;
  });
}

/** Builds the tensor-parallel segment graphs of one rank. Weight bytes held are counted in `bytes`. */
export class TpSegmentBuilder {
  private readonly counter = { bytes: 0 };
  private readonly local: ModelConfig;
  private readonly layerWeights: LayerWeights;

  constructor(
    private readonly config: ModelConfig,
    private readonly weights: ConvertedWeights,
    private readonly slices: TpSlices,
    private readonly rank: number,
    private readonly loraKernel: LoraKernel,
  ) {
    this.local = localConfig(config, slices, config.numLayers);
    this.layerWeights = tpLayerWeights(config, weights, slices, rank, this.counter);
  }

  get bytes(): number {
    return this.counter.bytes;
  }

  embed(): OnnxGraph {
    const { hiddenSize } = this.config;
    const { start, count } = this.slices.vocab;
    const g = new OnnxGraph(`tessera_tp${this.rank}_embed`);
    const ids = g.input(GRAPH_IO.inputIds, 'int64', ['batch', 'seq']);
    const full = this.weights.float32('model.embed_tokens.weight');
    const table = g.initializer('embed_slice', 'float32', [count, hiddenSize], full.slice(start * hiddenSize, (start + count) * hiddenSize));
    this.counter.bytes += count * hiddenSize * 4;
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
    const g = new OnnxGraph(`tessera_tp${this.rank}_l${layer}_attention${lora ? '_lora' : ''}`);
    const hidden = this.hiddenIn(g);
    const positionIds = g.input(GRAPH_IO.positionIds, 'int64', ['batch', 'seq']);
    const bias = g.input(GRAPH_IO.attentionBias, 'float32', ['batch', 1, 'seq', 'total']);
    const rows = lora ? loraRowInputs(g, this.loraKernel) : null;
    const ctx = attentionContext(g, this.local, positionIds, bias);
    const normed = this.norm(g, hidden, `model.layers.${layer}.input_layernorm.weight`, 'input_norm');
    return this.partial(g, attentionBlock(g, this.local, ctx, rows, this.layerWeights, layer, normed));
  }

  mlp(layer: number, lora: boolean): OnnxGraph {
    const g = new OnnxGraph(`tessera_tp${this.rank}_l${layer}_mlp${lora ? '_lora' : ''}`);
    const hidden = this.hiddenIn(g);
    const rows = lora ? loraRowInputs(g, this.loraKernel) : null;
    const normed = this.norm(g, hidden, `model.layers.${layer}.post_attention_layernorm.weight`, 'post_norm');
    return this.partial(g, mlpBlock(g, this.local, rows, this.layerWeights, layer, normed));
  }

  head(): OnnxGraph {
    const g = new OnnxGraph(`tessera_tp${this.rank}_head`);
    const hidden = this.hiddenIn(g);
    const logitsIndex = g.input(GRAPH_IO.logitsIndex, 'int64', ['rows']);
    lmHead(g, this.local, this.layerWeights, hidden, logitsIndex, SEGMENT_IO.logitsSlice);
    return g;
  }

  private hiddenIn(g: OnnxGraph): string {
    return g.input(GRAPH_IO.hiddenIn, 'float32', ['batch', 'seq', this.config.hiddenSize]);
  }

  private norm(g: OnnxGraph, x: string, name: string, hint: string): string {
    return rmsNorm(g, x, vectorInitializer(g, this.layerWeights, name), this.config.rmsNormEps, hint);
  }

  private partial(g: OnnxGraph, value: string): OnnxGraph {
    g.output(g.op('Identity', [value], { hint: SEGMENT_IO.partial }), 'float32', ['batch', 'seq', this.config.hiddenSize]);
    return g;
  }
}
