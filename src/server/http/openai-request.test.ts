import { describe, expect, it } from 'vitest';
import { isTesseraError } from '../../errors.ts';
import { parseChatRequest, parseCompletionRequest } from './openai-request.ts';

function errorOf(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    expect(isTesseraError(err) && err.code).toBe('INVALID_ARGUMENT');
    return (err as Error).message;
  }
  throw new Error('expected an error');
}

describe('OpenAI request bodies -> GenerateRequestMsg', () => {
  it('maps completion parameters onto the engine names, prompts as text or token ids (a batch of one)', () => {
    const r = parseCompletionRequest({ model: 'm', prompt: ['hi'], max_tokens: 5, temperature: 0.5, top_p: 0.9, stop: 'x', seed: 3, presence_penalty: 0.1, frequency_penalty: 0.2, top_k: 4, ignore_eos: true, logprobs: 2, user: 'u' });
    expect(r.msg).toEqual({
      request_id: '',
      adapter_id: '',
      parse_special_tokens: false,
      prompt: 'text',
      text: 'hi',
      sampling: { temperature: 0.5, top_p: 0.9, seed: '3', presence_penalty: 0.1, frequency_penalty: 0.2, top_k: 4 },
      stopping: { max_new_tokens: 5, stop_sequences: ['x'], stop_token_ids: [], ignore_eos: true },
      top_n_logprobs: 2,
    });
    expect(r.logprobs).toBe(true);
    expect(parseCompletionRequest({ model: 'm', prompt: [[1, 2, 3]] }).msg).toMatchObject({ prompt: 'token_ids', token_ids: { ids: [1, 2, 3] } });
    expect(parseCompletionRequest({ model: 'm', prompt: 'x', temperature: null, stop: null }).msg.sampling).toEqual({});
  });

  it('maps chat messages: text parts joined, developer -> system, max_completion_tokens', () => {
    const r = parseChatRequest({
      model: 'm',
      messages: [
        { role: 'developer', content: 'rules' },
        { role: 'user', content: [{ type: 'text', text: 'a' }, { type: 'text', text: 'b' }] },
      ],
      max_completion_tokens: 7,
      logprobs: true,
      top_logprobs: 3,
      stream: true,
      stream_options: { include_usage: true },
    });
    expect(r.msg.chat!.messages).toEqual([
      { role: 'system', content: 'rules' },
      { role: 'user', content: 'ab' },
    ]);
    expect(r.msg.stopping!.max_new_tokens).toBe(7);
    expect(r.msg.top_n_logprobs).toBe(3);
    expect(r).toMatchObject({ stream: true, includeUsage: true, logprobs: true });
  });

  it('rejects what it cannot honour, naming the field', () => {
    expect(errorOf(() => parseCompletionRequest({ prompt: 'x' }))).toContain('`model`');
    expect(errorOf(() => parseCompletionRequest({ model: 'm', prompt: 'x', n: 3 }))).toContain('`n`');
    expect(errorOf(() => parseCompletionRequest({ model: 'm', prompt: 'x', best_of: 2 }))).toContain('`best_of`');
    expect(errorOf(() => parseCompletionRequest({ model: 'm', prompt: 'x', suffix: 'y' }))).toContain('`suffix`');
    expect(errorOf(() => parseCompletionRequest({ model: 'm', prompt: 'x', stream_options: { include_usage: true } }))).toContain('`stream_options`');
    expect(errorOf(() => parseCompletionRequest({ model: 'm', prompt: 'x', temperature: '1' }))).toContain('`temperature` must be a number');
    expect(errorOf(() => parseCompletionRequest({ model: 'm', prompt: [1.5] }))).toContain('`prompt[0]`');
    expect(errorOf(() => parseCompletionRequest({ model: 'm', prompt: { a: 1 } }))).toContain('`prompt`');
    expect(errorOf(() => parseChatRequest({ model: 'm', messages: [{ role: 'user', content: [{ type: 'image_url' }] }] }))).toContain('`messages[0].content[0]`');
    expect(errorOf(() => parseChatRequest({ model: 'm', messages: [{ role: 'user', content: 'x', name: 'bob' }] }))).toContain('`messages[0].name`');
    expect(errorOf(() => parseChatRequest({ model: 'm', messages: [], top_logprobs: 2 }))).toContain('`top_logprobs`');
    expect(errorOf(() => parseChatRequest({ model: 'm', messages: [], max_tokens: 3, max_completion_tokens: 4 }))).toContain('`max_completion_tokens`');
    expect(errorOf(() => parseChatRequest({ model: 'm', messages: [], response_format: { type: 'json_object' } }))).toContain('`response_format`');
    expect(errorOf(() => parseChatRequest({ model: 'm', messages: [], tools: [] }))).toContain('`tools`');
  });
});
