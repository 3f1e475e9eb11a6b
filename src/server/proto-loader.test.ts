import * as grpc from '@grpc/grpc-js';
import type { Type } from 'protobufjs';
import descriptorExt from 'protobufjs/ext/descriptor/index.js';
import { describe, expect, it } from 'vitest';
import { ADAPTERS_SERVICE_NAME, GENERATION_SERVICE_NAME, loadPublicApi } from './proto-loader.ts';

// protobufjs's descriptor extension: its .d.ts does not declare the message types it exports.
const descriptor = descriptorExt as unknown as { FileDescriptorProto: Type };

/** Decodes the FileDescriptorProtos that reflection serves and returns message -> field names. */
function reflectedFields(): Map<string, string[]> {
  const { packageDefinition } = loadPublicApi();
  const fields = new Map<string, string[]>();
  const files = (packageDefinition[`tessera.v1.GenerateRequest`] as { fileDescriptorProtos: Buffer[] }).fileDescriptorProtos;
  for (const bytes of files) {
    const file = descriptor.FileDescriptorProto.toObject(descriptor.FileDescriptorProto.decode(bytes)) as { messageType?: { name: string; field?: { name: string }[] }[] };
    for (const m of file.messageType ?? []) fields.set(m.name, (m.field ?? []).map((f) => f.name));
  }
  return fields;
}

describe('public API protos', () => {
  it('defines both services with the contract RPCs', () => {
    const api = loadPublicApi();
    expect(Object.keys(api.generationService).sort()).toEqual(['Generate', 'GenerateStream', 'GetModelInfo', 'Tokenize']);
    expect(Object.keys(api.adaptersService).sort()).toEqual(['GetAdapter', 'ListAdapters', 'LoadAdapter', 'UnloadAdapter']);
    expect(api.generationService.GenerateStream.responseStream).toBe(true);
    expect(api.generationService.Generate.responseStream).toBe(false);
    expect(api.generationService.Generate.path).toBe(`/${GENERATION_SERVICE_NAME}/Generate`);
    expect(api.adaptersService.LoadAdapter.path).toBe(`/${ADAPTERS_SERVICE_NAME}/LoadAdapter`);
    const pkg = grpc.loadPackageDefinition(api.packageDefinition) as unknown as { tessera: { v1: Record<string, unknown> } };
    expect(typeof pkg.tessera.v1.Generation).toBe('function');
  });

  it('keeps snake_case field names in the descriptors served by reflection', () => {
    const fields = reflectedFields();
    expect(fields.get('GenerateRequest')).toEqual(['request_id', 'adapter_id', 'text', 'token_ids', 'chat', 'sampling', 'stopping', 'top_n_logprobs', 'parse_special_tokens']);
    expect(fields.get('SamplingParameters')).toEqual(['temperature', 'top_k', 'top_p', 'min_p', 'seed', 'repetition_penalty', 'presence_penalty', 'frequency_penalty']);
    expect(fields.get('StoppingCriteria')).toEqual(['max_new_tokens', 'stop_sequences', 'stop_token_ids', 'ignore_eos']);
    expect(fields.get('GenerateResponse')).toEqual(['request_id', 'token_ids', 'text', 'finish_reason', 'usage', 'logprobs']);
    expect(fields.get('TokenLogprob')).toEqual(['token_id', 'logprob', 'top']);
    expect(fields.get('Usage')).toEqual(['prompt_tokens', 'generated_tokens']);
    expect(fields.get('LoadAdapterRequest')).toEqual(['adapter_id', 'source', 'pin']);
    expect(fields.get('ListAdaptersResponse')).toEqual(['adapters']);
    expect(fields.get('AdapterInfo')!.slice(0, 6)).toEqual(['adapter_id', 'state', 'tier', 'rank', 'size_bytes', 'version']);
  });

  it('gives GenerateStreamRequest exactly the fields of GenerateRequest, and the stream reply those of the unary reply', () => {
    const fields = reflectedFields();
    expect(fields.get('GenerateStreamRequest')).toEqual(fields.get('GenerateRequest'));
    expect(fields.get('GenerateStreamResponse')).toEqual(fields.get('GenerateResponse'));
    // Same numbers too: a GenerateRequest's bytes decode as the same GenerateStreamRequest.
    const api = loadPublicApi();
    const req = { request_id: 'x', token_ids: { ids: [1, 2] }, sampling: { temperature: 0 }, stopping: { stop_sequences: ['.'] }, top_n_logprobs: 2 };
    const bytes = api.generationService.Generate.requestSerialize(req);
    expect(api.generationService.GenerateStream.requestDeserialize(bytes)).toEqual(api.generationService.Generate.requestDeserialize(bytes));
  });

  it('tells an unset optional field from an explicit zero, and keeps uint64 seeds exact', () => {
    const m = loadPublicApi().generationService.Generate;
    const unset = m.requestDeserialize(m.requestSerialize({ text: 'a', sampling: {} }));
    expect(unset.sampling.temperature).toBeUndefined();
    const zero = m.requestDeserialize(m.requestSerialize({ text: 'a', sampling: { temperature: 0, seed: '18446744073709551615' } }));
    expect(zero.sampling.temperature).toBe(0);
    expect(zero.sampling.seed).toBe('18446744073709551615');
    expect(zero.prompt).toBe('text');
  });
});
