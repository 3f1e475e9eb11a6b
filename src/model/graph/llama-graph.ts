import { OnnxGraph } from '../../../kernels/onnx-graph.ts';
import { rmsNorm, skipRmsNorm } from '../../../kernels/rms-norm.ts';
import type { ModelConfig } from '../model-config.ts';
import { GRAPH_IO } from './graph-io.ts';
import { attentionBlock, attentionContext, lmHead, loraRowInputs, mlpBlock, vectorInitializer, type LayerWeights, type LoraKernel } from './llama-layers.ts';

/**
 * Version of the graphs this builder writes; part of the conversion cache key, so converted models cached by an older
 * builder are rebuilt instead of being served with stale graphs.
 */
export const GRAPH_VERSION = 7;

/** Weights for the graph, in the storage form chosen by the converter (memoised: each is computed once). */
export interface GraphWeights extends LayerWeights {
  /** [vocab, hidden] */
  embedding(): Float32Array;
}

export interface LlamaGraphOptions {
  /**
   * Every target linear gets a batched multi-LoRA delta from stacked slot inputs whose slot count and (padded) rank are
   * dynamic dimensions, so the runner chooses them at load time.
   */
  lora: boolean;
  /** How a LoRA graph applies adapters (default 'gather'; see llama-layers.ts LoraRows). */
  loraKernel?: LoraKernel;
  /**
   * Pipeline stage: the layers [start, end) this graph runs (default: all). A stage starting past layer 0 takes the
   * residual stream `hidden_in` instead of `input_ids`; a stage ending before the last layer outputs `hidden_out`
   * instead of logits. The whole range gives the same graph as before.
   */
  layers?: { start: number; end: number };
}

/**
 * Builds the decoder graph of the whole model or of a pipeline stage from the layer builders (llama-layers.ts):
 * embeddings, per layer RMSNorm -> attention block -> residual RMSNorm -> MLP block (residual adds fused into
 * SkipSimplifiedLayerNormalization), then the final norm and LM head for the rows in `logits_index` only.
 */
export function buildLlamaGraph(config: ModelConfig, weights: GraphWeights, options: LlamaGraphOptions): OnnxGraph {
  const lora = options.lora;
  const layerStart = options.layers?.start ?? 0;
  const layerEnd = options.layers?.end ?? config.numLayers;
  const first = layerStart === 0;
  const last = layerEnd === config.numLayers;
  const whole = first && last;
  const g = new OnnxGraph(`${lora ? 'tessera_llama_lora' : 'tessera_llama'}${whole ? '' : `_layers_${layerStart}_${layerEnd}`}`);
  const { hiddenSize, vocabSize, rmsNormEps: eps } = config;

  const inputIds = first ? g.input(GRAPH_IO.inputIds, 'int64', ['batch', 'seq']) : null;
  const hiddenIn = first ? null : g.input(GRAPH_IO.hiddenIn, 'float32', ['batch', 'seq', hiddenSize]);
  const positionIds = g.input(GRAPH_IO.positionIds, 'int64', ['batch', 'seq']);
  const bias = g.input(GRAPH_IO.attentionBias, 'float32', ['batch', 1, 'seq', 'total']);
  const logitsIndex = last ? g.input(GRAPH_IO.logitsIndex, 'int64', ['rows']) : null;
  const loraRows = lora ? loraRowInputs(g, options.loraKernel ?? 'gather') : null;
  const ctx = attentionContext(g, config, positionIds, bias);

  let hidden: string;
  if (inputIds) {
    const embed = g.initializer('model.embed_tokens.weight', 'float32', [vocabSize, hiddenSize], weights.embedding());
    hidden = g.op('Gather', [embed, inputIds], { attrs: { axis: { i: 0 } }, hint: 'embeddings' });
  } else {
    hidden = hiddenIn!;
  }
  const norm = (name: string) => vectorInitializer(g, weights, name);

  let normed = rmsNorm(g, hidden, norm(`model.layers.${layerStart}.input_layernorm.weight`), eps, `l${layerStart}_input_norm`);
  let pendingResidual: string | null = null;
  for (let layer = layerStart; layer < layerEnd; layer++) {
    const p = `model.layers.${layer}`;
    if (pendingResidual) {
      [normed, hidden] = skipRmsNorm(g, pendingResidual, hidden, norm(`${p}.input_layernorm.weight`), eps, `l${layer}_input_norm`);
    }
    const o = attentionBlock(g, config, ctx, loraRows, weights, layer, normed);
    [normed, hidden] = skipRmsNorm(g, o, hidden, norm(`${p}.post_attention_layernorm.weight`), eps, `l${layer}_post_norm`);
    pendingResidual = mlpBlock(g, config, loraRows, weights, layer, normed);
  }

  const finalHidden = g.op('Add', [pendingResidual!, hidden], { hint: 'final_residual' });
  if (logitsIndex) lmHead(g, config, weights, finalHidden, logitsIndex, GRAPH_IO.logits);
  else g.output(g.op('Identity', [finalHidden], { hint: GRAPH_IO.hiddenOut }), 'float32', ['batch', 'seq', hiddenSize]);
  return g;
}
