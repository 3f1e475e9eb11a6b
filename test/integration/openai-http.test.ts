/**
 * The OpenAI-compatible HTTP face through the official `openai` npm client against the real server (startServer on
 * 127.0.0.1:0, tiny model, real engine): completions and chat, whole and streamed, an adapter named by `model`, the
 * model list, errors with their HTTP statuses, and the same tokens as gRPC for the same seeded request.
 */
import { cpSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type * as grpc from '@grpc/grpc-js';
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RunningServer } from '../../src/cli/serve.ts';
import { generateApiKey, hashApiKey } from '../../src/server/auth.ts';
import { bearer, connect, GenerationClient, startTestServer, unary, type DynamicClient } from '../helpers/test-server.ts';
import { tempDir, tinyModel } from '../helpers/tiny-model.ts';

const KEY = generateApiKey();
let server: RunningServer;
let client: OpenAI;
let gen: DynamicClient;
let model: string;
const grpcClients: grpc.Client[] = [];

beforeAll(async () => {
  const { hf, convertedDir } = await tinyModel({ quant: 'fp32', numAdapters: 2 });
  const root = tempDir('openai-http');
  const adaptersDir = join(root, 'adapters');
  mkdirSync(adaptersDir);
  cpSync(hf.adapterDirs[0], join(adaptersDir, 'alpha'), { recursive: true });
  cpSync(hf.adapterDirs[1], join(adaptersDir, 'beta'), { recursive: true });
  const keyFile = join(root, 'keys.json');
  writeFileSync(keyFile, JSON.stringify({ keys: [{ sha256: hashApiKey(KEY), tenant: 'acme' }] }));
  server = await startTestServer({ model: convertedDir, 'http-port': 0, 'api-keys': keyFile, 'adapters-dir': [adaptersDir], 'adapter-slots': 2 });
  client = new OpenAI({ apiKey: KEY, baseURL: `http://127.0.0.1:${server.httpPort}/v1`, maxRetries: 0 });
  gen = connect(GenerationClient, server.port, { closeWith: grpcClients });
  model = (await client.models.list()).data[0].id;
});

afterAll(async () => {
  for (const c of grpcClients) c.close();
  await server?.shutdown();
});

/** A streamed completion's chunks, collected. */
async function collect<T>(stream: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const chunk of stream) out.push(chunk);
  return out;
}

describe('OpenAI-compatible HTTP face with the openai client', () => {
  it('lists the base model and the adapters as models, and retrieves one', async () => {
    const list = await client.models.list();
    expect(list.data.map((m) => m.id)).toEqual([server.executor.modelId, 'alpha', 'beta']);
    expect((await client.models.retrieve('alpha')).id).toBe('alpha');
    await expect(client.models.retrieve('nope')).rejects.toMatchObject({ status: 404 });
  });

  it('completes a prompt, whole and streamed with usage in the last chunk; the streamed text equals the whole one', async () => {
    const params = { model, prompt: 'hello world', max_tokens: 12, temperature: 0 };
    const whole = await client.completions.create(params);
    expect(whole.object).toBe('text_completion');
    expect(whole.choices).toHaveLength(1);
    expect(whole.usage).toMatchObject({ completion_tokens: expect.any(Number), prompt_tokens: expect.any(Number) });
    expect(whole.usage!.total_tokens).toBe(whole.usage!.prompt_tokens + whole.usage!.completion_tokens);
    expect(['stop', 'length']).toContain(whole.choices[0].finish_reason);

    const chunks = await collect(await client.completions.create({ ...params, stream: true, stream_options: { include_usage: true } }));
    const last = chunks.at(-1)!;
    expect(last.choices).toEqual([]);
    expect(last.usage).toEqual(whole.usage);
    expect(chunks.slice(0, -1).every((c) => c.usage === null)).toBe(true);
    expect(chunks.map((c) => c.choices[0]?.text ?? '').join('')).toBe(whole.choices[0].text);
    expect(chunks.at(-2)!.choices[0].finish_reason).toBe(whole.choices[0].finish_reason);
    expect(new Set(chunks.map((c) => c.id)).size).toBe(1);
  });

  it('chats, whole and streamed: the role comes first, the streamed content equals the whole message', async () => {
    const messages = [
      { role: 'system' as const, content: 'be brief' },
      { role: 'user' as const, content: 'hi there' },
    ];
    const whole = await client.chat.completions.create({ model, messages, max_tokens: 10, temperature: 0 });
    expect(whole.object).toBe('chat.completion');
    expect(whole.choices[0].message.role).toBe('assistant');
    const chunks = await collect(await client.chat.completions.create({ model, messages, max_tokens: 10, temperature: 0, stream: true }));
    expect(chunks[0].choices[0].delta.role).toBe('assistant');
    expect(chunks.map((c) => c.choices[0]?.delta.content ?? '').join('')).toBe(whole.choices[0].message.content);
    expect(chunks.at(-1)!.choices[0].finish_reason).toBe(whole.choices[0].finish_reason);
  });

  it('serves an adapter named by `model`: other tokens than the base, the same as gRPC with adapter_id', async () => {
    const prompt = [5, 9, 33, 7];
    const body = { prompt, max_tokens: 8, temperature: 0, logprobs: 0 };
    const base = await client.completions.create({ model, ...body });
    const byName = await client.completions.create({ model: model.split('@')[0], ...body });
    expect(byName.choices[0].text).toBe(base.choices[0].text);
    const alpha = await client.completions.create({ model: 'alpha', ...body });
    expect(alpha.choices[0].logprobs!.tokens).not.toEqual(base.choices[0].logprobs!.tokens);
    const viaGrpc = await unary<{ text: string }>(gen, 'Generate', { adapter_id: 'alpha', token_ids: { ids: prompt }, sampling: { temperature: 0 }, stopping: { max_new_tokens: 8 } }, bearer(KEY));
    expect(alpha.choices[0].text).toBe(viaGrpc.text);
  });

  it('gives the gRPC tokens, text and logprobs for the same seeded request (completions and chat)', async () => {
    const sampling = { temperature: 0.9, top_p: 0.95, seed: 1234 };
    const http = await client.completions.create({ model, prompt: 'the quick brown', max_tokens: 16, ...sampling, logprobs: 2 });
    const viaGrpc = await unary<{ text: string; token_ids: number[]; logprobs: Array<{ logprob: number; top: unknown[] }> }>(
      gen,
      'Generate',
      { text: 'the quick brown', sampling, stopping: { max_new_tokens: 16 }, top_n_logprobs: 2 },
      bearer(KEY),
    );
    expect(http.choices[0].text).toBe(viaGrpc.text);
    const lp = http.choices[0].logprobs!;
    expect(lp.token_logprobs).toHaveLength(viaGrpc.token_ids.length);
    lp.token_logprobs!.forEach((v, i) => expect(v).toBeCloseTo(viaGrpc.logprobs[i].logprob, 5));
    expect(lp.top_logprobs!.every((t) => Object.keys(t!).length >= 1 && Object.keys(t!).length <= 2)).toBe(true);

    const messages = [{ role: 'user' as const, content: 'tell me' }];
    const chat = await client.chat.completions.create({ model, messages, max_tokens: 12, ...sampling, logprobs: true, top_logprobs: 1 });
    const chatGrpc = await unary<{ text: string; token_ids: number[] }>(gen, 'Generate', { chat: { messages }, sampling, stopping: { max_new_tokens: 12 }, top_n_logprobs: 1 }, bearer(KEY));
    expect(chat.choices[0].message.content).toBe(chatGrpc.text);
    expect(chat.choices[0].logprobs!.content!.map((c) => c.top_logprobs.length)).toEqual(chatGrpc.token_ids.map(() => 1));
  });

  it('answers an unknown model with 404 (whole and streamed), a bad or missing key with 401', async () => {
    await expect(client.completions.create({ model: 'nope', prompt: 'x', max_tokens: 2 })).rejects.toMatchObject({ status: 404, code: 'ADAPTER_NOT_FOUND' });
    await expect(client.completions.create({ model: 'not/a model', prompt: 'x', max_tokens: 2 })).rejects.toMatchObject({ status: 404, code: 'MODEL_NOT_FOUND' });
    await expect(client.chat.completions.create({ model: 'nope', messages: [{ role: 'user', content: 'x' }], stream: true })).rejects.toMatchObject({ status: 404 });
    const stranger = new OpenAI({ apiKey: 'tsk_not-a-key', baseURL: client.baseURL, maxRetries: 0 });
    await expect(stranger.completions.create({ model, prompt: 'x', max_tokens: 2 })).rejects.toMatchObject({ status: 401, code: 'UNAUTHENTICATED' });
    await expect(stranger.models.list()).rejects.toBeInstanceOf(OpenAI.AuthenticationError);
  });

  it('answers unsupported and out-of-range parameters with 400 naming the OpenAI field', async () => {
    const bad = async (extra: Record<string, unknown>, param: string) => {
      const err = await client.completions.create({ model, prompt: 'x', max_tokens: 2, ...extra } as never).then(
        () => null,
        (e: unknown) => e,
      );
      expect(err, JSON.stringify(extra)).toBeInstanceOf(OpenAI.BadRequestError);
      expect((err as InstanceType<typeof OpenAI.BadRequestError>).param, JSON.stringify(extra)).toBe(param);
      expect((err as Error).message).toContain(`\`${param}\``);
    };
    await bad({ n: 2 }, 'n');
    await bad({ temperature: 500 }, 'temperature');
    await bad({ top_p: 0 }, 'top_p');
    await bad({ max_tokens: 100_000 }, 'max_tokens');
    await bad({ echo: true }, 'echo');
    await bad({ logit_bias: { '5': 1 } }, 'logit_bias');
    await bad({ made_up_field: 1 }, 'made_up_field');
    await bad({ stop: [1, 2] }, 'stop[0]');
    await bad({ seed: -1 }, 'seed');
    await bad({ prompt: ['a', 'b'] }, 'prompt');
    const chatErr = await client.chat.completions.create({ model, messages: [{ role: 'user', content: 'x' }], tools: [{ type: 'function', function: { name: 'f' } }] }).catch((e: unknown) => e);
    expect(chatErr).toMatchObject({ status: 400, param: 'tools' });
  });
});
