import { describe, expect, it } from 'vitest';
import { TesseraError } from '../../src/errors.ts';
import { LORA_TARGETS, loraTargetShape } from '../model-types.ts';
import type { Float32Tensor, LoraTarget, ModelConfig } from '../model-types.ts';
import { ReferenceModel } from './llama-reference.ts';
import type { ReferenceLora } from './llama-reference.ts';
import { applyRotary, rmsNorm, rotaryInverseFrequencies } from './reference-ops.ts';
import { seededRandom } from '../../test/helpers/seeded-random.ts';

function tinyConfig(overrides: Partial<ModelConfig> = {}): ModelConfig {
  return {
    family: 'llama',
    modelType: 'llama',
    vocabSize: 37,
    hiddenSize: 16,
    intermediateSize: 24,
    numLayers: 2,
    numHeads: 4,
    numKvHeads: 2,
    headDim: 8,
    rmsNormEps: 1e-6,
    ropeTheta: 10000,
    maxPositionEmbeddings: 64,
    tieWordEmbeddings: false,
    attentionBias: false,
    qkNorm: false,
    bosTokenId: null,
    eosTokenIds: [0],
    ...overrides,
  };
}

const MLP = new Set<LoraTarget>(['gate_proj', 'up_proj', 'down_proj']);
const linearName = (layer: number, target: LoraTarget): string =>
  `model.layers.${layer}.${MLP.has(target) ? 'mlp' : 'self_attn'}.${target}`;

/** Random weights for every tensor the config needs; norms near 1 so activations stay well scaled. */
function randomWeights(config: ModelConfig, seed: number): Map<string, Float32Tensor> {
  const rand = seededRandom(seed);
  const weights = new Map<string, Float32Tensor>();
  const put = (name: string, shape: number[], make: () => number): void => {
    const data = new Float32Array(shape.reduce((a, b) => a * b, 1));
    for (let i = 0; i < data.length; i++) data[i] = make();
    weights.set(name, { shape, data });
  };
  const normal = (std: number) => () => (rand() + rand() + rand() - 1.5) * 2 * std;
  const nearOne = () => 0.8 + 0.4 * rand();
  const { vocabSize: v, hiddenSize: h, headDim: d } = config;
  put('model.embed_tokens.weight', [v, h], normal(1));
  if (!config.tieWordEmbeddings) put('lm_head.weight', [v, h], normal(0.5));
  put('model.norm.weight', [h], nearOne);
  for (let l = 0; l < config.numLayers; l++) {
    put(`model.layers.${l}.input_layernorm.weight`, [h], nearOne);
    put(`model.layers.${l}.post_attention_layernorm.weight`, [h], nearOne);
    if (config.qkNorm) {
      put(`model.layers.${l}.self_attn.q_norm.weight`, [d], nearOne);
      put(`model.layers.${l}.self_attn.k_norm.weight`, [d], nearOne);
    }
    for (const target of LORA_TARGETS) {
      const [inF, outF] = loraTargetShape(config, target);
      put(`${linearName(l, target)}.weight`, [outF, inF], normal(1 / Math.sqrt(inF)));
      if (config.attentionBias && (target === 'q_proj' || target === 'k_proj' || target === 'v_proj')) {
        put(`${linearName(l, target)}.bias`, [outF], normal(0.1));
      }
    }
  }
  return weights;
}

function lookup(weights: Map<string, Float32Tensor>): (name: string) => Float32Tensor {
  return (name) => {
    const tensor = weights.get(name);
    if (tensor === undefined) throw new Error(`test fixture lacks ${name}`);
    return tensor;
  };
}

function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  expect(a.length).toBe(b.length);
  let max = 0;
  for (let i = 0; i < a.length; i++) max = Math.max(max, Math.abs(a[i] - b[i]));
  return max;
}

function decodeAll(model: ReferenceModel, tokens: number[], vocab: number): Float32Array {
  const out = new Float32Array(tokens.length * vocab);
  tokens.forEach((token, t) => out.set(model.decode(token), t * vocab));
  return out;
}

describe('reference ops', () => {
  it('rmsNorm divides by the root mean square and scales by the weight', () => {
    const y = rmsNorm(Float64Array.of(3, 4), Float32Array.of(1, 2), 0);
    const rms = Math.sqrt((9 + 16) / 2);
    expect(y[0]).toBeCloseTo(3 / rms, 12);
    expect(y[1]).toBeCloseTo((4 / rms) * 2, 12);
  });

  it('rotary at position 0 is the identity', () => {
    const x = Float64Array.of(0.3, -1.2, 2.5, 0.7, 1.1, -0.4, 0.9, 2.2);
    const y = Float64Array.from(x);
    applyRotary(y, 2, 0, rotaryInverseFrequencies(4, 10000));
    expect(Array.from(y)).toEqual(Array.from(x));
  });

  it('rotary pairs element i with element i + headDim/2 (rotate-half layout)', () => {
    const theta = 100;
    const invFreq = rotaryInverseFrequencies(4, theta); // [1, theta^-0.5]
    const x = Float64Array.of(1, 0, 0, 0);
    applyRotary(x, 1, 3, invFreq);
    // x1 = [1, 0], x2 = [0, 0]: x1' = x1 cos - x2 sin = [cos 3, 0]; x2' = x2 cos + x1 sin = [sin 3, 0]
    expect(x[0]).toBeCloseTo(Math.cos(3), 12);
    expect(x[1]).toBeCloseTo(0, 12);
    expect(x[2]).toBeCloseTo(Math.sin(3), 12);
    expect(x[3]).toBeCloseTo(0, 12);
    const y = Float64Array.of(0, 1, 0, 0);
    applyRotary(y, 1, 3, invFreq);
    const angle = 3 / Math.sqrt(theta);
    expect(y[1]).toBeCloseTo(Math.cos(angle), 12);
    expect(y[3]).toBeCloseTo(Math.sin(angle), 12);
  });

  it('rotary preserves norms and q(m).k(n) depends only on m - n', () => {
    const rand = seededRandom(7);
    const headDim = 16;
    const invFreq = rotaryInverseFrequencies(headDim, 10000);
    const q = Float64Array.from({ length: headDim }, () => rand() - 0.5);
    const k = Float64Array.from({ length: headDim }, () => rand() - 0.5);
    const rotated = (x: Float64Array, pos: number): Float64Array => {
      const y = Float64Array.from(x);
      applyRotary(y, 1, pos, invFreq);
      return y;
    };
    const dot = (a: Float64Array, b: Float64Array): number => a.reduce((s, v, i) => s + v * b[i], 0);
    expect(dot(rotated(q, 37), rotated(q, 37))).toBeCloseTo(dot(q, q), 12);
    const reference = dot(rotated(q, 5), rotated(k, 2));
    expect(dot(rotated(q, 105), rotated(k, 102))).toBeCloseTo(reference, 10);
    expect(dot(rotated(q, 3), rotated(k, 0))).toBeCloseTo(reference, 10);
    expect(Math.abs(dot(rotated(q, 6), rotated(k, 2)) - reference)).toBeGreaterThan(1e-4);
  });
});

describe('ReferenceModel on hand-checkable weights', () => {
  /** hidden 2, one head of dim 2, vocab 3; every weight zero unless set. */
  function handModel(set: Record<string, number[]>, overrides: Partial<ModelConfig> = {}): ReferenceModel {
    const config = tinyConfig({
      vocabSize: 3, hiddenSize: 2, intermediateSize: 2, numLayers: 1, numHeads: 1, numKvHeads: 1, headDim: 2, rmsNormEps: 0,
      ...overrides,
    });
    return new ReferenceModel(config, (name) => {
      const proj = /\.(\w+_proj)\.weight$/.exec(name);
      const [inF, outF] = proj === null ? [0, 0] : loraTargetShape(config, proj[1] as LoraTarget);
      const shape = proj !== null ? [outF, inF] : name.includes('embed') || name.includes('lm_head') ? [3, 2] : [2];
      const data = new Float32Array(shape.reduce((a, b) => a * b, 1));
      if (name.endsWith('norm.weight') || name.endsWith('layernorm.weight')) data.fill(1);
      if (set[name] !== undefined) data.set(set[name]);
      return { shape, data };
    });
  }

  it('with zero layer weights the logits are E . rmsNorm(E[token]) (tied embeddings)', () => {
    const model = handModel({ 'model.embed_tokens.weight': [1, 0, 0, 2, 3, 4] }, { tieWordEmbeddings: true });
    const logits = model.prefill([2, 1]);
    // token 2: [3, 4] / sqrt(12.5) = [0.8485, 1.1314] -> [0.8485, 2.2627, 5 sqrt(2)]
    const r = Math.sqrt(12.5);
    expect(logits[0]).toBeCloseTo(3 / r, 6);
    expect(logits[1]).toBeCloseTo(8 / r, 6);
    expect(logits[2]).toBeCloseTo(5 * Math.SQRT2, 5);
    // token 1: [0, 2] / sqrt(2) = [0, sqrt 2] -> [0, 2 sqrt 2, 4 sqrt 2]
    expect(logits[3]).toBeCloseTo(0, 6);
    expect(logits[4]).toBeCloseTo(2 * Math.SQRT2, 5);
    expect(logits[5]).toBeCloseTo(4 * Math.SQRT2, 5);
  });

  it('with q = 0 attention averages the values of positions 0..t (causal)', () => {
    const identity = [1, 0, 0, 1];
    const model = handModel({
      'model.embed_tokens.weight': [1, 0, 0, 2, 5, 5],
      'model.layers.0.self_attn.v_proj.weight': identity,
      'model.layers.0.self_attn.o_proj.weight': identity,
      'lm_head.weight': [1, 0, 0, 1, 0, 0],
    });
    const logits = model.prefill([0, 1]);
    // normed inputs: [1,0] -> [sqrt2, 0]; [0,2] -> [0, sqrt2]
    // position 0: h = [1, 0] + [sqrt2, 0];  position 1: h = [0, 2] + ([sqrt2, 0] + [0, sqrt2]) / 2
    const h0 = [1 + Math.SQRT2, 0];
    const h1 = [Math.SQRT2 / 2, 2 + Math.SQRT2 / 2];
    const norm = (h: number[]): number[] => {
      const rms = Math.sqrt((h[0] ** 2 + h[1] ** 2) / 2);
      return [h[0] / rms, h[1] / rms];
    };
    const [a0, a1] = norm(h0);
    const [b0, b1] = norm(h1);
    expect(Array.from(logits.subarray(0, 2))).toEqual([expect.closeTo(a0, 6), expect.closeTo(a1, 6)]);
    expect(Array.from(logits.subarray(3, 5))).toEqual([expect.closeTo(b0, 6), expect.closeTo(b1, 6)]);
  });
});

describe('ReferenceModel equivalences on random weights', () => {
  const tokens = [3, 17, 0, 36, 9, 9, 22, 5];
  const variants: Array<[string, Partial<ModelConfig>]> = [
    ['llama', {}],
    ['qwen2 (bias)', { family: 'qwen2', attentionBias: true }],
    ['qwen3 (qk norm, tied)', { family: 'qwen3', qkNorm: true, tieWordEmbeddings: true }],
  ];

  it.each(variants)('%s: prefill logits equal token-by-token decode logits', (_name, overrides) => {
    const config = tinyConfig(overrides);
    const weights = lookup(randomWeights(config, 11));
    const prefilled = new ReferenceModel(config, weights).prefill(tokens);
    const decoded = decodeAll(new ReferenceModel(config, weights), tokens, config.vocabSize);
    expect(maxAbsDiff(prefilled, decoded)).toBeLessThan(1e-5);
    // and a later token really depends on earlier ones
    const alone = new ReferenceModel(config, weights).prefill([tokens[3]]);
    expect(maxAbsDiff(alone, prefilled.subarray(3 * config.vocabSize, 4 * config.vocabSize))).toBeGreaterThan(1e-3);
  });

  it('prefill in chunks continues the cache; reset starts over', () => {
    const config = tinyConfig();
    const model = new ReferenceModel(config, lookup(randomWeights(config, 3)));
    const whole = model.prefill(tokens);
    model.reset();
    expect(model.numTokens).toBe(0);
    const first = model.prefill(tokens.slice(0, 5));
    const rest = model.prefill(tokens.slice(5));
    expect(model.numTokens).toBe(tokens.length);
    const chunked = new Float32Array(whole.length);
    chunked.set(first);
    chunked.set(rest, first.length);
    expect(maxAbsDiff(whole, chunked)).toBeLessThan(1e-5);
  });

  it('GQA equals MHA whose kv heads repeat the grouped ones', () => {
    const gqa = tinyConfig({ numKvHeads: 2, attentionBias: true, qkNorm: true });
    const mha = { ...gqa, numKvHeads: 4 };
    const gqaWeights = randomWeights(gqa, 5);
    const mhaWeights = new Map(gqaWeights);
    const group = gqa.numHeads / gqa.numKvHeads;
    const d = gqa.headDim;
    const repeatHeads = (t: Float32Tensor): Float32Tensor => {
      const rowWidth = t.shape.length === 2 ? t.shape[1] : 1;
      const data = new Float32Array(mha.numKvHeads * d * rowWidth);
      for (let h = 0; h < mha.numKvHeads; h++) {
        const src = Math.floor(h / group);
        data.set(t.data.subarray(src * d * rowWidth, (src + 1) * d * rowWidth), h * d * rowWidth);
      }
      return { shape: t.shape.length === 2 ? [mha.numKvHeads * d, rowWidth] : [mha.numKvHeads * d], data };
    };
    for (let l = 0; l < gqa.numLayers; l++) {
      for (const suffix of ['k_proj.weight', 'v_proj.weight', 'k_proj.bias', 'v_proj.bias']) {
        const name = `model.layers.${l}.self_attn.${suffix}`;
        mhaWeights.set(name, repeatHeads(gqaWeights.get(name)!));
      }
    }
    const a = new ReferenceModel(gqa, lookup(gqaWeights)).prefill(tokens);
    const b = new ReferenceModel(mha, lookup(mhaWeights)).prefill(tokens);
    expect(maxAbsDiff(a, b)).toBeLessThan(1e-6);
  });
});

describe('ReferenceModel with a LoRA adapter', () => {
  const config = tinyConfig();
  const tokens = [1, 2, 3, 30, 4];
  const rank = 3;

  function randomAdapter(seed: number, zeroB: boolean): ReferenceLora {
    const rand = seededRandom(seed);
    const layers: ReferenceLora['layers'] = [];
    for (let l = 0; l < config.numLayers; l++) {
      const layer: ReferenceLora['layers'][number] = {};
      for (const target of LORA_TARGETS) {
        const [inF, outF] = loraTargetShape(config, target);
        layer[target] = {
          a: Float32Array.from({ length: rank * inF }, () => rand() - 0.5),
          b: Float32Array.from({ length: outF * rank }, () => (zeroB ? 0 : rand() - 0.5)),
        };
      }
      layers.push(layer);
    }
    return { scale: 0.75, layers };
  }

  it('an adapter with B = 0 changes nothing', () => {
    const weights = lookup(randomWeights(config, 21));
    const base = new ReferenceModel(config, weights).prefill(tokens);
    const adapted = new ReferenceModel(config, weights, randomAdapter(1, true)).prefill(tokens);
    expect(maxAbsDiff(base, adapted)).toBe(0);
  });

  it('an adapter equals the base model with merged weights W + scale * B A', () => {
    const base = randomWeights(config, 21);
    const adapter = randomAdapter(2, false);
    const merged = new Map(base);
    for (let l = 0; l < config.numLayers; l++) {
      for (const target of LORA_TARGETS) {
        const [inF, outF] = loraTargetShape(config, target);
        const { a, b } = adapter.layers[l][target]!;
        const name = `${linearName(l, target)}.weight`;
        const w = Float32Array.from(base.get(name)!.data);
        for (let o = 0; o < outF; o++) {
          for (let i = 0; i < inF; i++) {
            let ba = 0;
            for (let r = 0; r < rank; r++) ba += b[o * rank + r] * a[r * inF + i];
            w[o * inF + i] += adapter.scale * ba;
          }
        }
        merged.set(name, { shape: [outF, inF], data: w });
      }
    }
    const adapted = new ReferenceModel(config, lookup(base), adapter).prefill(tokens);
    const mergedLogits = new ReferenceModel(config, lookup(merged)).prefill(tokens);
    const plain = new ReferenceModel(config, lookup(base)).prefill(tokens);
    expect(maxAbsDiff(adapted, mergedLogits)).toBeLessThan(1e-4);
    expect(maxAbsDiff(adapted, plain)).toBeGreaterThan(1e-2);
  });

  it('rejects an adapter whose B does not match A rank', () => {
    const adapter = randomAdapter(3, false);
    adapter.layers[1].o_proj = { a: new Float32Array(rank * 32), b: new Float32Array(16 * (rank + 1)) };
    expect(() => new ReferenceModel(config, lookup(randomWeights(config, 1)), adapter)).toThrowError(
      expect.objectContaining({ code: 'ADAPTER_INCOMPATIBLE', message: expect.stringContaining('adapter.layers[1].o_proj.b') }),
    );
  });
});

describe('ReferenceModel input checks', () => {
  const config = tinyConfig({ maxPositionEmbeddings: 6 });
  const weights = randomWeights(config, 9);

  it('names the tensor and both shapes on a shape mismatch', () => {
    const bad = new Map(weights);
    bad.set('model.layers.1.mlp.up_proj.weight', { shape: [16, 24], data: new Float32Array(16 * 24) });
    const create = () => new ReferenceModel(config, lookup(bad));
    expect(create).toThrowError(TesseraError);
    expect(create).toThrowError(/model\.layers\.1\.mlp\.up_proj\.weight.*\[24, 16\].*Given: \[16, 24\]/);
  });

  it('rejects tokens outside the vocabulary without touching the cache', () => {
    const model = new ReferenceModel(config, lookup(weights));
    expect(() => model.prefill([1, 37])).toThrowError(/`token` must be an integer >= 0 and < vocabSize \(37\). Given: 37/);
    expect(model.numTokens).toBe(0);
  });

  it('rejects sequences longer than maxPositionEmbeddings', () => {
    const model = new ReferenceModel(config, lookup(weights));
    model.prefill([1, 2, 3, 4, 5]);
    expect(() => model.prefill([6, 7])).toThrowError(expect.objectContaining({ code: 'PROMPT_TOO_LONG' }));
    expect(model.decode(6).length).toBe(config.vocabSize);
  });
});
