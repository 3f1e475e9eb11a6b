import { describe, expect, it } from 'vitest';
import { TesseraError } from '../errors.ts';
import type { PromptEncoder } from './backend.ts';
import { loadPublicApi } from './proto-loader.ts';
import type { GenerateRequest__Output as GenerateRequestMsg } from '../gen/tessera/v1/GenerateRequest.ts';
import { resolveRequestLimits } from './request-limits.ts';
import { DEFAULT_SAMPLING, validateGenerateRequest, type ValidateOptions } from './validate.ts';

// Requests go through real proto encoding and decoding, exactly as the server receives them.
const generate = loadPublicApi().generationService.Generate;
function decode(req: object): GenerateRequestMsg {
  return generate.requestDeserialize(generate.requestSerialize(req)) as GenerateRequestMsg;
}

// A byte-level encoder: one token per UTF-8 byte (vocab 256); chat rendered as "role: content\n" lines. It declares no
// byte bound, so the token count check is what these tests see (the bound has its own test below).
const byteEncoder: PromptEncoder = {
  encode: async (text) => [...Buffer.from(text, 'utf8')],
  encodeChat: async (messages) => [...Buffer.from(messages.map((m) => `${m.role}: ${m.content}\n`).join(''), 'utf8')],
  maxBytesPerToken: null,
};

const limits = resolveRequestLimits({
  vocabSize: 256,
  maxContextTokens: 64,
  maxPromptTokens: 40,
  maxNewTokens: 32,
  defaultMaxNewTokens: 16,
  maxStopSequences: 2,
  maxStopSequenceLength: 4,
  maxStopTokenIds: 3,
  maxTopNLogprobs: 5,
  maxRequestIdLength: 8,
  maxAdapterIdLength: 10,
  maxChatMessages: 3,
});
const base: ValidateOptions = { limits, encoder: byteEncoder, tenantId: 'acme', deadlineMs: 1234, newRequestId: () => 'gen-1' };

function validate(req: object, opts: Partial<ValidateOptions> = {}) {
  return validateGenerateRequest(decode(req), { ...base, ...opts });
}

async function rejects(req: object, code: string, ...fragments: string[]): Promise<void> {
  let caught: unknown;
  try {
    await validate(req);
  } catch (err) {
    caught = err;
  }
  expect(caught).toBeInstanceOf(TesseraError);
  const err = caught as TesseraError;
  expect(err.code).toBe(code);
  for (const f of fragments) expect(err.message).toContain(f);
}

describe('validateGenerateRequest', () => {
  it('fills defaults for every unset field', async () => {
    const v = await validate({ text: 'hi' });
    expect(v).toEqual({
      requestId: 'gen-1',
      promptTokenIds: [104, 105],
      adapterId: null,
      tenantId: 'acme',
      sampling: DEFAULT_SAMPLING,
      stopping: { maxNewTokens: 16, stopSequences: [], stopTokenIds: [], ignoreEos: false },
      topNLogprobs: 0,
      deadlineMs: 1234,
    });
  });

  it('keeps explicit zeros distinct from unset (temperature 0 = greedy)', async () => {
    const v = await validate({ text: 'a', sampling: { temperature: 0, top_p: 0.5, min_p: 0, seed: '0', presence_penalty: 0 } });
    expect(v.sampling.temperature).toBe(0);
    expect(v.sampling.topP).toBe(0.5);
    expect(v.sampling.seed).toBe(0);
    expect((await validate({ text: 'a', sampling: {} })).sampling).toEqual(DEFAULT_SAMPLING);
  });

  it('passes every sampling and stopping field through', async () => {
    const v = await validate({
      request_id: 'r-7',
      adapter_id: 'math_v2',
      token_ids: { ids: [1, 2, 255] },
      sampling: { temperature: 0.7, top_k: 40, top_p: 0.9, min_p: 0.05, seed: '9007199254740991', repetition_penalty: 1.1, presence_penalty: -0.5, frequency_penalty: 2 },
      stopping: { max_new_tokens: 32, stop_sequences: ['\n', 'ab'], stop_token_ids: [0, 7], ignore_eos: true },
      top_n_logprobs: 5,
    });
    expect(v.requestId).toBe('r-7');
    expect(v.adapterId).toBe('math_v2');
    expect(v.promptTokenIds).toEqual([1, 2, 255]);
    expect(v.sampling).toEqual({ temperature: 0.7, topK: 40, topP: 0.9, minP: 0.05, seed: Number.MAX_SAFE_INTEGER, repetitionPenalty: 1.1, presencePenalty: -0.5, frequencyPenalty: 2 });
    expect(v.stopping).toEqual({ maxNewTokens: 32, stopSequences: ['\n', 'ab'], stopTokenIds: [0, 7], ignoreEos: true });
    expect(v.topNLogprobs).toBe(5);
  });

  it('renders chat prompts with the encoder', async () => {
    const v = await validate({ chat: { messages: [{ role: 'user', content: 'yo' }] } });
    expect(Buffer.from(v.promptTokenIds).toString()).toBe('user: yo\n');
  });

  it('requires a prompt and rejects empty ones', async () => {
    await rejects({}, 'INVALID_ARGUMENT', '`prompt` is required');
    await rejects({ text: '' }, 'INVALID_ARGUMENT', '`text`', 'Given: ""');
    await rejects({ token_ids: { ids: [] } }, 'INVALID_ARGUMENT', '`token_ids.ids`', 'at least 1 token', 'Given: 0');
    await rejects({ chat: { messages: [] } }, 'INVALID_ARGUMENT', '`chat.messages`', 'Given: 0');
  });

  it('bounds the prompt length and token ids', async () => {
    await rejects({ text: 'x'.repeat(41) }, 'PROMPT_TOO_LONG', '`text`', 'at most 40 tokens', 'Given: 41 tokens');
    expect((await validate({ text: 'x'.repeat(40) })).promptTokenIds).toHaveLength(40);
    await rejects({ token_ids: { ids: [3, 256] } }, 'INVALID_ARGUMENT', '`token_ids.ids[1]`', '< 256', 'Given: 256');
  });

  it('checks chat messages and needs a chat template', async () => {
    await rejects({ chat: { messages: [{ role: '', content: 'x' }] } }, 'INVALID_ARGUMENT', '`chat.messages[0].role`');
    await rejects({ chat: { messages: Array(4).fill({ role: 'user', content: 'x' }) } }, 'INVALID_ARGUMENT', 'at most 3 messages', 'Given: 4');
    await expect(validate({ chat: { messages: [{ role: 'user', content: 'x' }] } }, { encoder: { ...byteEncoder, encodeChat: null } })).rejects.toThrow(/chat template/);
  });

  it('rejects text prompts without a tokenizer', async () => {
    await expect(validate({ text: 'hi' }, { encoder: null })).rejects.toThrow(/needs a tokenizer/);
    expect((await validate({ token_ids: { ids: [5] } }, { encoder: null })).promptTokenIds).toEqual([5]);
  });

  it('checks request ids', async () => {
    await rejects({ text: 'a', request_id: '123456789' }, 'INVALID_ARGUMENT', '`request_id`', 'at most 8 characters');
    await rejects({ text: 'a', request_id: 'a b' }, 'INVALID_ARGUMENT', '`request_id`', 'printable ASCII');
    expect((await validate({ text: 'a', request_id: '12345678' })).requestId).toBe('12345678');
    expect((await validateGenerateRequest(decode({ text: 'a' }), { ...base, newRequestId: undefined })).requestId).toMatch(/^[0-9a-f-]{36}$/);
  });

  it('checks adapter ids', async () => {
    expect((await validate({ text: 'a', adapter_id: 'acme/v2' })).adapterId).toBe('acme/v2');
    await rejects({ text: 'a', adapter_id: 'a/b/c' }, 'INVALID_ARGUMENT', '`adapter_id`', 'Given: "a/b/c"');
    await rejects({ text: 'a', adapter_id: 'abcdefghijk' }, 'INVALID_ARGUMENT', '`adapter_id`', 'at most 10 characters');
  });

  it.each([
    ['temperature', -0.1, '>= 0 and <= 100'],
    ['temperature', 101, '>= 0 and <= 100'],
    ['temperature', Number.NaN, '>= 0 and <= 100'],
    ['top_k', 257, '<= 256'],
    ['top_p', 0, '> 0 and <= 1'],
    ['top_p', 1.5, '> 0 and <= 1'],
    ['min_p', 1.01, '>= 0 and <= 1'],
    ['repetition_penalty', 0, '> 0 and <= 10'],
    ['repetition_penalty', 11, '> 0 and <= 10'],
    ['presence_penalty', -2.5, '>= -2 and <= 2'],
    ['frequency_penalty', 3, '>= -2 and <= 2'],
  ])('rejects sampling.%s = %s', async (field, value, bound) => {
    await rejects({ text: 'a', sampling: { [field]: value } }, 'INVALID_ARGUMENT', `\`sampling.${field}\``, bound, 'Given:');
  });

  it('rejects seeds above 2^53 - 1 without rounding them', async () => {
    await rejects({ text: 'a', sampling: { seed: '18446744073709551615' } }, 'INVALID_ARGUMENT', '`sampling.seed`', 'Given: "18446744073709551615"');
  });

  it('checks stopping criteria', async () => {
    await rejects({ text: 'a', stopping: { max_new_tokens: 0 } }, 'INVALID_ARGUMENT', '`stopping.max_new_tokens`', '>= 1 and <= 32', 'Given: 0');
    await rejects({ text: 'a', stopping: { max_new_tokens: 33 } }, 'INVALID_ARGUMENT', '`stopping.max_new_tokens`', 'Given: 33');
    await rejects({ text: 'x'.repeat(40), stopping: { max_new_tokens: 25 } }, 'PROMPT_TOO_LONG', '<= 24', 'Given: 25');
    expect((await validate({ text: 'x'.repeat(40) })).stopping.maxNewTokens).toBe(16);
    await rejects({ text: 'a', stopping: { stop_sequences: ['a', 'b', 'c'] } }, 'INVALID_ARGUMENT', '`stopping.stop_sequences`', 'at most 2', 'Given: 3');
    await rejects({ text: 'a', stopping: { stop_sequences: [''] } }, 'INVALID_ARGUMENT', '`stopping.stop_sequences[0]`');
    await rejects({ text: 'a', stopping: { stop_sequences: ['ok', 'abcde'] } }, 'INVALID_ARGUMENT', '`stopping.stop_sequences[1]`', '1 to 4 UTF-16 code units');
    // UTF-16 code units, as the engine counts them: an emoji is two.
    expect((await validate({ text: 'a', stopping: { stop_sequences: ['😀😀'] } })).stopping.stopSequences).toEqual(['😀😀']);
    await rejects({ text: 'a', stopping: { stop_sequences: ['😀😀😀'] } }, 'INVALID_ARGUMENT', '`stopping.stop_sequences[0]`');
    await rejects({ text: 'a', stopping: { stop_token_ids: [1, 2, 3, 4] } }, 'INVALID_ARGUMENT', '`stopping.stop_token_ids`', 'Given: 4');
    await rejects({ text: 'a', stopping: { stop_token_ids: [300] } }, 'INVALID_ARGUMENT', '`stopping.stop_token_ids[0]`', 'Given: 300');
  });

  it('lowers the default max_new_tokens to fit the context', async () => {
    const tight = resolveRequestLimits({ vocabSize: 256, maxContextTokens: 10, maxPromptTokens: 10, defaultMaxNewTokens: 8 });
    expect((await validate({ text: 'abcdef' }, { limits: tight })).stopping.maxNewTokens).toBe(4);
    await expect(validate({ text: 'abcdefghij' }, { limits: tight })).rejects.toThrow(/room for 1 new token/);
  });

  it('refuses text longer than max_prompt_tokens x the bytes one token can hold before tokenizing it', async () => {
    let encoded = 0;
    const bounded: PromptEncoder = {
      encode: async (text) => (encoded++, [...Buffer.from(text, 'utf8')]),
      encodeChat: async (messages) => (encoded++, [...Buffer.from(messages.map((m) => `${m.role}: ${m.content}\n`).join(''), 'utf8')]),
      maxBytesPerToken: 4,
    };
    // 40 tokens x 4 bytes: 160 bytes may need tokenizing (41 bytes here: the token count refuses it), 161 may not.
    await expect(validate({ text: 'x'.repeat(41) }, { encoder: bounded })).rejects.toThrow(/Given: 41 tokens/);
    expect(encoded).toBe(1);
    const huge = 'é'.repeat(81); // 162 bytes
    await expect(validate({ text: huge }, { encoder: bounded })).rejects.toMatchObject({
      code: 'PROMPT_TOO_LONG',
      message: '`text` must be at most 40 tokens. Given: 162 bytes of text, more than 40 tokens of at most 4 bytes each can hold',
    });
    await expect(validate({ chat: { messages: [{ role: 'user', content: 'y'.repeat(157) }] } }, { encoder: bounded })).rejects.toMatchObject({
      code: 'PROMPT_TOO_LONG',
      message: expect.stringContaining('`chat.messages` must be at most 40 tokens. Given: 161 bytes'),
    });
    expect(encoded).toBe(1); // neither was tokenized
  });

  it('passes parse_special_tokens (default false) to the encoder', async () => {
    const seen: boolean[] = [];
    const spy: PromptEncoder = {
      encode: async (_text, opts) => (seen.push(opts.parseSpecialTokens), [1]),
      encodeChat: async (_m, opts) => (seen.push(opts.parseSpecialTokens), [1]),
      maxBytesPerToken: null,
    };
    await validate({ text: 'a' }, { encoder: spy });
    await validate({ text: 'a', parse_special_tokens: true }, { encoder: spy });
    await validate({ chat: { messages: [{ role: 'user', content: 'x' }] } }, { encoder: spy });
    await validate({ chat: { messages: [{ role: 'user', content: 'x' }] }, parse_special_tokens: true }, { encoder: spy });
    expect(seen).toEqual([false, true, false, true]);
  });

  it('bounds top_n_logprobs', async () => {
    await rejects({ text: 'a', top_n_logprobs: 6 }, 'INVALID_ARGUMENT', '`top_n_logprobs`', '<= 5', 'Given: 6');
  });
});

describe('resolveRequestLimits', () => {
  it('derives defaults from the context and rejects bad values', async () => {
    const l = resolveRequestLimits({ vocabSize: 10, maxContextTokens: 100 });
    expect(l.maxPromptTokens).toBe(99);
    expect(l.defaultMaxNewTokens).toBe(100);
    expect(() => resolveRequestLimits({ vocabSize: 10, maxContextTokens: 100, maxTopNLogprobs: -1 })).toThrow(/`maxTopNLogprobs`/);
    expect(() => resolveRequestLimits({ vocabSize: 0, maxContextTokens: 100 })).toThrow(/vocabSize/);
  });
});
