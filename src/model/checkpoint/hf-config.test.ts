import { describe, expect, test } from 'vitest';
import { TesseraError } from '../../errors.ts';
import { parseHfConfig } from './hf-config.ts';

const FILE = '/models/x/config.json';

// Shapes and keys as in the families' published config.json files (values shortened).
const llama = {
  architectures: ['LlamaForCausalLM'],
  model_type: 'llama',
  vocab_size: 32000,
  hidden_size: 2048,
  intermediate_size: 5632,
  num_hidden_layers: 22,
  num_attention_heads: 32,
  num_key_value_heads: 4,
  max_position_embeddings: 2048,
  rms_norm_eps: 1e-5,
  rope_theta: 10000.0,
  rope_scaling: null,
  hidden_act: 'silu',
  tie_word_embeddings: false,
  attention_bias: false,
  bos_token_id: 1,
  eos_token_id: 2,
};
const qwen2 = {
  architectures: ['Qwen2ForCausalLM'],
  model_type: 'qwen2',
  vocab_size: 151936,
  hidden_size: 896,
  intermediate_size: 4864,
  num_hidden_layers: 24,
  num_attention_heads: 14,
  num_key_value_heads: 2,
  max_position_embeddings: 32768,
  rms_norm_eps: 1e-6,
  rope_theta: 1000000.0,
  sliding_window: 32768,
  use_sliding_window: false,
  tie_word_embeddings: true,
  bos_token_id: 151643,
  eos_token_id: 151645,
};
const qwen3 = {
  model_type: 'qwen3',
  vocab_size: 151936,
  hidden_size: 1024,
  head_dim: 128,
  intermediate_size: 3072,
  num_hidden_layers: 28,
  num_attention_heads: 16,
  num_key_value_heads: 8,
  max_position_embeddings: 40960,
  rms_norm_eps: 1e-6,
  rope_theta: 1000000,
  rope_scaling: null,
  attention_bias: false,
  tie_word_embeddings: true,
  bos_token_id: 151643,
  eos_token_id: [151645, 151643],
};
const mistral = {
  model_type: 'mistral',
  vocab_size: 32768,
  hidden_size: 4096,
  intermediate_size: 14336,
  num_hidden_layers: 32,
  num_attention_heads: 32,
  num_key_value_heads: 8,
  head_dim: null,
  max_position_embeddings: 32768,
  sliding_window: 4096,
  rms_norm_eps: 1e-5,
  rope_theta: 1000000.0,
  bos_token_id: 1,
  eos_token_id: 2,
};

function expectError(json: unknown, ...fragments: string[]): void {
  let caught: unknown;
  try {
    parseHfConfig(json, FILE);
  } catch (err) {
    caught = err;
  }
  expect(caught).toBeInstanceOf(TesseraError);
  expect((caught as TesseraError).code).toBe('CHECKPOINT_INVALID');
  expect((caught as Error).message).toContain(FILE);
  for (const f of fragments) expect((caught as Error).message).toContain(f);
}

describe('each family parses', () => {
  test('llama: GQA, head_dim from hidden/heads, no bias, no qk norm', () => {
    expect(parseHfConfig(llama, FILE)).toEqual({
      family: 'llama',
      modelType: 'llama',
      vocabSize: 32000,
      hiddenSize: 2048,
      intermediateSize: 5632,
      numLayers: 22,
      numHeads: 32,
      numKvHeads: 4,
      headDim: 64,
      rmsNormEps: 1e-5,
      ropeTheta: 10000,
      maxPositionEmbeddings: 2048,
      tieWordEmbeddings: false,
      attentionBias: false,
      qkNorm: false,
      bosTokenId: 1,
      eosTokenIds: [2],
    });
  });

  test('qwen2: q/k/v biases, tied embeddings, sliding window off', () => {
    const c = parseHfConfig(qwen2, FILE);
    expect(c).toMatchObject({ family: 'qwen2', attentionBias: true, qkNorm: false, headDim: 64, tieWordEmbeddings: true, ropeTheta: 1e6 });
    expect(c.maxPositionEmbeddings).toBe(32768);
  });

  test('qwen3: q/k norm, head_dim independent of hidden/heads, eos list', () => {
    const c = parseHfConfig(qwen3, FILE);
    expect(c).toMatchObject({ family: 'qwen3', qkNorm: true, attentionBias: false, headDim: 128, numHeads: 16, hiddenSize: 1024 });
    expect(c.eosTokenIds).toEqual([151645, 151643]);
  });

  test('mistral: null head_dim means hidden/heads; sliding_window caps the context', () => {
    const c = parseHfConfig(mistral, FILE);
    expect(c).toMatchObject({ family: 'mistral', headDim: 128, numKvHeads: 8, maxPositionEmbeddings: 4096 });
    expect(parseHfConfig({ ...mistral, sliding_window: null }, FILE).maxPositionEmbeddings).toBe(32768);
  });

  test('optional keys take the HF defaults', () => {
    const { num_key_value_heads: _kv, rms_norm_eps: _eps, rope_theta: _theta, tie_word_embeddings: _tie, bos_token_id: _b, eos_token_id: _e, ...minimal } = llama;
    const c = parseHfConfig(minimal, FILE);
    expect(c).toMatchObject({ numKvHeads: 32, rmsNormEps: 1e-6, ropeTheta: 10000, tieWordEmbeddings: false, bosTokenId: null, eosTokenIds: [] });
  });

  test('rope_parameters (newer transformers) with default rotary gives rope_theta', () => {
    const { rope_theta: _t, ...rest } = llama;
    expect(parseHfConfig({ ...rest, rope_parameters: { rope_type: 'default', rope_theta: 500000 } }, FILE).ropeTheta).toBe(500000);
    expectError({ ...rest, rope_parameters: { rope_type: 'yarn', rope_theta: 1 } }, 'rope_parameters.rope_type', 'not supported');
  });
});

describe('errors name the file and the key', () => {
  test('not an object', () => {
    expectError([], 'JSON object');
    expectError(null, 'JSON object');
  });

  test('unsupported model_type lists the supported ones', () => {
    expectError({ ...llama, model_type: 'gpt2' }, '`model_type`', 'llama, qwen2, qwen3, mistral', '"gpt2"');
    expectError({ ...llama, model_type: undefined }, '`model_type`');
  });

  test('missing and invalid required integers', () => {
    const { hidden_size: _h, ...noHidden } = llama;
    expectError(noHidden, '`hidden_size`', 'required');
    expectError({ ...llama, vocab_size: 0 }, '`vocab_size`', 'positive integer', '0');
    expectError({ ...llama, num_hidden_layers: 2.5 }, '`num_hidden_layers`', '2.5');
    expectError({ ...llama, intermediate_size: '5632' }, '`intermediate_size`', '"5632"');
    expectError({ ...llama, max_position_embeddings: -1 }, '`max_position_embeddings`');
  });

  test('inconsistent head counts and odd head_dim', () => {
    expectError({ ...llama, num_key_value_heads: 5 }, '`num_key_value_heads`', 'divide', '5');
    expectError({ ...llama, hidden_size: 2050 }, '`hidden_size`', 'multiple of num_attention_heads');
    expectError({ ...llama, head_dim: 63 }, '`head_dim`', 'even');
  });

  test('rope_scaling other than null is not supported yet', () => {
    expectError({ ...llama, rope_scaling: { rope_type: 'llama3', factor: 8 } }, '`rope_scaling`', 'not supported yet');
  });

  test('unsupported architecture switches', () => {
    expectError({ ...llama, hidden_act: 'gelu' }, '`hidden_act`', '"gelu"');
    expectError({ ...llama, attention_bias: true }, '`attention_bias`');
    expectError({ ...llama, mlp_bias: true }, '`mlp_bias`');
    expectError({ ...qwen2, use_sliding_window: true }, '`use_sliding_window`');
    expectError({ ...llama, tie_word_embeddings: 'yes' }, '`tie_word_embeddings`');
  });

  test('bad token ids and eps', () => {
    expectError({ ...llama, eos_token_id: [2, -1] }, '`eos_token_id`');
    expectError({ ...llama, eos_token_id: 'x' }, '`eos_token_id`');
    expectError({ ...llama, bos_token_id: 1.5 }, '`bos_token_id`');
    expectError({ ...llama, rms_norm_eps: 0 }, '`rms_norm_eps`');
    expectError({ ...llama, rope_theta: -5 }, '`rope_theta`');
  });
});
