/**
 * Reference forward pass of a Llama-family decoder (Llama, Mistral, Qwen2 with q/k/v biases, Qwen3 with q/k norms),
 * with a KV cache and an optional LoRA adapter. Written from the math, used by tests as the ground truth that ONNX
 * graphs are compared against. Slow by design: one token row at a time, float64 activations.
 *
 * Per layer, for the new tokens t (absolute position p = cached + t):
 *   a      = rmsNorm(h_t, input_layernorm)
 *   q,k,v  = a Wq^T (+bq), a Wk^T (+bk), a Wv^T (+bv)        (+ LoRA: scale * B (A a))
 *   q,k    = rmsNormPerHead(q, q_norm), rmsNormPerHead(k, k_norm)   if qkNorm
 *   q,k    = rotary(q, p), rotary(k, p);  append k, v to the cache
 *   head h uses kv head g = floor(h / (numHeads / numKvHeads)):
 *   o_h    = sum_{j <= p} softmax_j(q_h . K_g[j] / sqrt(headDim)) V_g[j]          (causal)
 *   h_t   += concat_h(o_h) Wo^T
 *   m      = rmsNorm(h_t, post_attention_layernorm)
 *   h_t   += (silu(m Wgate^T) * (m Wup^T)) Wdown^T
 * logits_t = rmsNorm(h_t, norm) W_lm^T   (W_lm = embed_tokens when tieWordEmbeddings)
 */
import { TesseraError, outOfRange } from '../../src/errors.ts';
import { LORA_TARGETS, loraTargetShape } from '../model-types.ts';
import type { Float32Tensor, LoraTarget, ModelConfig } from '../model-types.ts';
import {
  applyRotary,
  matVec,
  rmsNorm,
  rmsNormPerHead,
  rotaryInverseFrequencies,
  silu,
  softmaxInPlace,
} from './reference-ops.ts';

export interface ReferenceLoraPair {
  a: Float32Array; // [rank, inFeatures]
  b: Float32Array; // [outFeatures, rank]
}

/** One adapter: y += scale * B (A x) on each listed target of each layer. */
export interface ReferenceLora {
  scale: number;
  layers: Array<Partial<Record<LoraTarget, ReferenceLoraPair>>>;
}

const MLP_TARGETS: ReadonlySet<LoraTarget> = new Set<LoraTarget>(['gate_proj', 'up_proj', 'down_proj']);

interface LoraPair {
  a: Float32Array; // [rank, inFeatures]
  b: Float32Array; // [outFeatures, rank]
  rank: number;
  scale: number;
}

interface Linear {
  weight: Float32Array; // [outFeatures, inFeatures]
  bias: Float32Array | null; // [outFeatures]
  inFeatures: number;
  outFeatures: number;
  lora: LoraPair | null;
}

interface LayerWeights {
  inputNorm: Float32Array; // [hiddenSize]
  postAttentionNorm: Float32Array; // [hiddenSize]
  qNorm: Float32Array | null; // [headDim]
  kNorm: Float32Array | null; // [headDim]
  linears: Record<LoraTarget, Linear>;
}

interface LayerCache {
  keys: Float64Array[]; // per position: [numKvHeads * headDim], after rotary
  values: Float64Array[]; // per position: [numKvHeads * headDim]
}

export class ReferenceModel {
  private readonly config: ModelConfig;
  private readonly embedding: Float32Array; // [vocabSize, hiddenSize]
  private readonly lmHead: Float32Array; // [vocabSize, hiddenSize]
  private readonly finalNorm: Float32Array; // [hiddenSize]
  private readonly layers: LayerWeights[];
  private readonly invFreq: Float64Array; // [headDim / 2]
  private cache: LayerCache[] = [];
  private numCachedTokens = 0;

  constructor(config: ModelConfig, weight: (hfName: string) => Float32Tensor, adapter?: ReferenceLora) {
    checkConfig(config);
    this.config = config;
    const { vocabSize: vocab, hiddenSize: hidden, headDim } = config;
    const read = (name: string, shape: number[]): Float32Array => readChecked(weight, name, shape);

    this.embedding = read('model.embed_tokens.weight', [vocab, hidden]);
    this.lmHead = config.tieWordEmbeddings ? this.embedding : read('lm_head.weight', [vocab, hidden]);
    this.finalNorm = read('model.norm.weight', [hidden]);
    this.invFreq = rotaryInverseFrequencies(headDim, config.ropeTheta);

    if (adapter !== undefined && adapter.layers.length > config.numLayers) {
      throw new TesseraError(
        'ADAPTER_INCOMPATIBLE',
        `\`adapter.layers.length\` must be <= numLayers (${config.numLayers}). Given: ${adapter.layers.length}`,
      );
    }
    this.layers = [];
    for (let i = 0; i < config.numLayers; i++) {
      const prefix = `model.layers.${i}`;
      const linears = {} as Record<LoraTarget, Linear>;
      for (const target of LORA_TARGETS) {
        const [inFeatures, outFeatures] = loraTargetShape(config, target);
        const module = MLP_TARGETS.has(target) ? 'mlp' : 'self_attn';
        const name = `${prefix}.${module}.${target}`;
        const hasBias = config.attentionBias && (target === 'q_proj' || target === 'k_proj' || target === 'v_proj');
        linears[target] = {
          weight: read(`${name}.weight`, [outFeatures, inFeatures]),
          bias: hasBias ? read(`${name}.bias`, [outFeatures]) : null,
          inFeatures,
          outFeatures,
          lora: checkLora(adapter, i, target, inFeatures, outFeatures),
        };
      }
      this.layers.push({
        inputNorm: read(`${prefix}.input_layernorm.weight`, [hidden]),
        postAttentionNorm: read(`${prefix}.post_attention_layernorm.weight`, [hidden]),
        qNorm: config.qkNorm ? read(`${prefix}.self_attn.q_norm.weight`, [headDim]) : null,
        kNorm: config.qkNorm ? read(`${prefix}.self_attn.k_norm.weight`, [headDim]) : null,
        linears,
      });
    }
    this.reset();
  }

  /** Number of tokens held in the KV cache (the position of the next token). */
  get numTokens(): number {
    return this.numCachedTokens;
  }

  /** Appends `tokens` after the cached ones; returns logits for every new position. */
  prefill(tokens: number[]): Float32Array /* [tokens.length, vocabSize] */ {
    return this.forward(tokens);
  }

  /** Appends one token; returns its next-token logits. */
  decode(token: number): Float32Array /* [vocabSize] */ {
    return this.forward([token]);
  }

  /** Empties the KV cache. */
  reset(): void {
    this.cache = this.layers.map(() => ({ keys: [], values: [] }));
    this.numCachedTokens = 0;
  }

  private forward(tokens: number[]): Float32Array {
    const { vocabSize, hiddenSize, maxPositionEmbeddings, rmsNormEps } = this.config;
    if (tokens.length === 0) throw outOfRange('tokens.length', '>= 1', tokens.length);
    for (const token of tokens) {
      if (!Number.isInteger(token) || token < 0 || token >= vocabSize) {
        throw outOfRange('token', `an integer >= 0 and < vocabSize (${vocabSize})`, token);
      }
    }
    const total = this.numCachedTokens + tokens.length;
    if (total > maxPositionEmbeddings) {
      throw new TesseraError(
        'PROMPT_TOO_LONG',
        `\`cached + new tokens\` must be <= maxPositionEmbeddings (${maxPositionEmbeddings}). Given: ${total}`,
      );
    }

    const start = this.numCachedTokens;
    const hidden = tokens.map((token) => Float64Array.from(this.embedding.subarray(token * hiddenSize, (token + 1) * hiddenSize)));
    for (let l = 0; l < this.layers.length; l++) this.layerForward(l, hidden, start);
    this.numCachedTokens = total;

    const logits = new Float32Array(tokens.length * vocabSize);
    const row = new Float64Array(vocabSize);
    for (let t = 0; t < tokens.length; t++) {
      const normed = rmsNorm(hidden[t], this.finalNorm, rmsNormEps);
      matVec(this.lmHead, vocabSize, hiddenSize, normed, row);
      logits.set(row, t * vocabSize);
    }
    return logits;
  }

  /** Runs one decoder layer over all new positions; updates `hidden` in place and appends to the layer's cache. */
  private layerForward(layerIndex: number, hidden: Float64Array[], start: number): void {
    const { numHeads, numKvHeads, headDim, rmsNormEps: eps } = this.config;
    const layer = this.layers[layerIndex];
    const cache = this.cache[layerIndex];
    const { linears } = layer;

    const queries: Float64Array[] = [];
    for (let t = 0; t < hidden.length; t++) {
      const a = rmsNorm(hidden[t], layer.inputNorm, eps);
      const q = applyLinear(linears.q_proj, a);
      const k = applyLinear(linears.k_proj, a);
      const v = applyLinear(linears.v_proj, a);
      if (layer.qNorm !== null && layer.kNorm !== null) {
        rmsNormPerHead(q, layer.qNorm, numHeads, headDim, eps);
        rmsNormPerHead(k, layer.kNorm, numKvHeads, headDim, eps);
      }
      applyRotary(q, numHeads, start + t, this.invFreq);
      applyRotary(k, numKvHeads, start + t, this.invFreq);
      queries.push(q);
      cache.keys.push(k);
      cache.values.push(v);
    }

    const groupSize = numHeads / numKvHeads;
    const scale = 1 / Math.sqrt(headDim);
    for (let t = 0; t < hidden.length; t++) {
      const numVisible = start + t + 1; // causal: positions 0..start+t
      const attended = new Float64Array(numHeads * headDim);
      const probs = new Float64Array(numVisible);
      for (let h = 0; h < numHeads; h++) {
        const qOff = h * headDim;
        const kvOff = Math.floor(h / groupSize) * headDim;
        const q = queries[t];
        for (let j = 0; j < numVisible; j++) {
          const key = cache.keys[j];
          let dot = 0;
          for (let d = 0; d < headDim; d++) dot += q[qOff + d] * key[kvOff + d];
          probs[j] = dot * scale;
        }
        softmaxInPlace(probs);
        for (let j = 0; j < numVisible; j++) {
          const value = cache.values[j];
          const p = probs[j];
          for (let d = 0; d < headDim; d++) attended[qOff + d] += p * value[kvOff + d];
        }
      }
      addInPlace(hidden[t], applyLinear(linears.o_proj, attended));

      const m = rmsNorm(hidden[t], layer.postAttentionNorm, eps);
      const gate = applyLinear(linears.gate_proj, m);
      const up = applyLinear(linears.up_proj, m);
      for (let i = 0; i < gate.length; i++) gate[i] = silu(gate[i]) * up[i];
      addInPlace(hidden[t], applyLinear(linears.down_proj, gate));
    }
  }
}

function applyLinear(linear: Linear, x: Float64Array): Float64Array {
  const y = matVec(linear.weight, linear.outFeatures, linear.inFeatures, x);
  if (linear.bias !== null) for (let o = 0; o < y.length; o++) y[o] += linear.bias[o];
  const lora = linear.lora;
  if (lora !== null) {
    const ax = matVec(lora.a, lora.rank, linear.inFeatures, x);
    const bax = matVec(lora.b, linear.outFeatures, lora.rank, ax);
    for (let o = 0; o < y.length; o++) y[o] += lora.scale * bax[o];
  }
  return y;
}

function addInPlace(target: Float64Array, delta: Float64Array): void {
  for (let i = 0; i < target.length; i++) target[i] += delta[i];
}

function checkConfig(config: ModelConfig): void {
  const positive: Array<keyof ModelConfig> = ['vocabSize', 'hiddenSize', 'intermediateSize', 'numHeads', 'numKvHeads', 'headDim'];
  for (const field of positive) {
    const value = config[field];
    if (typeof value !== 'number' || !Number.isInteger(value) || value < 1) throw outOfRange(field, 'an integer >= 1', value);
  }
  if (!Number.isInteger(config.numLayers) || config.numLayers < 0) throw outOfRange('numLayers', 'an integer >= 0', config.numLayers);
  if (config.headDim % 2 !== 0) throw outOfRange('headDim', 'even (rotary rotates pairs)', config.headDim);
  if (config.numHeads % config.numKvHeads !== 0) {
    throw outOfRange('numKvHeads', `a divisor of numHeads (${config.numHeads})`, config.numKvHeads);
  }
}

function readChecked(weight: (hfName: string) => Float32Tensor, name: string, shape: number[]): Float32Array {
  const tensor = weight(name);
  const size = shape.reduce((a, b) => a * b, 1);
  if (tensor.shape.length !== shape.length || tensor.shape.some((d, i) => d !== shape[i]) || tensor.data.length !== size) {
    throw new TesseraError(
      'CHECKPOINT_INVALID',
      `tensor \`${name}\` must have shape [${shape.join(', ')}]. Given: [${tensor.shape.join(', ')}] with ${tensor.data.length} values`,
    );
  }
  return tensor.data;
}

function checkLora(
  adapter: ReferenceLora | undefined,
  layerIndex: number,
  target: LoraTarget,
  inFeatures: number,
  outFeatures: number,
): LoraPair | null {
  const pair = adapter?.layers[layerIndex]?.[target];
  if (adapter === undefined || pair === undefined) return null;
  const field = `adapter.layers[${layerIndex}].${target}`;
  const rank = pair.a.length / inFeatures;
  if (!Number.isInteger(rank) || rank < 1) {
    throw new TesseraError(
      'ADAPTER_INCOMPATIBLE',
      `\`${field}.a\` must hold rank x ${inFeatures} values (rank >= 1). Given: ${pair.a.length} values`,
    );
  }
  if (pair.b.length !== outFeatures * rank) {
    throw new TesseraError(
      'ADAPTER_INCOMPATIBLE',
      `\`${field}.b\` must hold ${outFeatures} x ${rank} values. Given: ${pair.b.length} values`,
    );
  }
  return { a: pair.a, b: pair.b, rank, scale: adapter.scale };
}
