import type protobuf from 'protobufjs';
import { describe, expect, it } from 'vitest';
import { loadPublicApi } from './proto-loader.ts';
import { checkWireFormat, rootFromFileDescriptors, wireSchemaOf } from './wire-check.ts';

const files = (loadPublicApi().packageDefinition['tessera.v1.GenerateRequest'] as { fileDescriptorProtos: Buffer[] }).fileDescriptorProtos;
const root = rootFromFileDescriptors(files);
const generateRequest = root.lookupType('tessera.v1.GenerateRequest');
const schema = wireSchemaOf(generateRequest);
const check = (hex: string) => checkWireFormat(Buffer.from(hex.replace(/\s+/g, ''), 'hex'), schema);
const encode = (type: protobuf.Type, obj: object) => Buffer.from(type.encode(type.fromObject(obj)).finish());

describe('protobuf wire check', () => {
  it('accepts what protobufjs encodes, including every field kind of GenerateRequest', () => {
    const bodies = [
      {},
      { text: 'hello', request_id: 'r1', adapter_id: 'a' },
      { token_ids: { ids: [0, 1, 300, 2 ** 32 - 1] }, top_n_logprobs: 3 },
      { chat: { messages: [{ role: 'user', content: 'hi 🙂' }, { role: 'assistant', content: '' }] } },
      { text: 'x', sampling: { temperature: 0.5, top_k: 4, top_p: 0.9, min_p: 0.1, seed: '18446744073709551615', repetition_penalty: 1.1, presence_penalty: -2, frequency_penalty: 2 } },
      { text: 'x', stopping: { max_new_tokens: 9, stop_sequences: ['a', 'é'], stop_token_ids: [5, 6], ignore_eos: true } },
    ];
    for (const body of bodies) expect({ body, problem: checkWireFormat(encode(generateRequest, body), schema) }).toEqual({ body, problem: null });
    // Unpacked encoding of a repeated scalar (older writers) is accepted too: token_ids { ids: 5, ids: 6 }.
    expect(check('22 04 08 05 08 06')).toBeNull();
    // Unknown fields of every wire type are skipped.
    expect(check('f8 01 05  f9 01 0102030405060708  fa 01 02 6869  fd 01 01020304  1a 01 61')).toBeNull();
  });

  it('rejects a string whose length runs past the end (protobufjs clamps it: `1a 7f 61` decodes as "a")', () => {
    expect(check('1a 01 61')).toBeNull();
    expect(check('1a 7f 61')).toMatch(/field 3 \(text\) of tessera.v1.GenerateRequest: length 127 runs past the end \(1 bytes left\)/);
    expect(check('0a 7f 61')).toMatch(/field 1 \(request_id\)/);
  });

  it('rejects a field that overruns its enclosing message even when the buffer continues', () => {
    // chat { messages { role: length 5 but the message holds 2 bytes } } followed by more bytes of the outer message.
    expect(check('2a 06 0a 04 0a 05 75 73  12 01 61')).toMatch(/field 1 \(role\) of tessera.v1.ChatMessage: length 5 runs past the end \(2 bytes left\)/);
    // token_ids { packed ids whose last varint continues past the packed region }.
    expect(check('22 04 0a 02 05 85  08 01')).toMatch(/field 1 \(ids\) of tessera.v1.TokenIds: packed varint truncated/);
  });

  it('rejects truncated varints and fixed-width values, field number 0, groups and mismatched wire types', () => {
    expect(check('40 ff')).toMatch(/field 8 \(top_n_logprobs\).*truncated varint/);
    expect(check('40 ff ff ff ff ff ff ff ff ff ff 01')).toMatch(/truncated varint/); // 11-byte varint
    expect(check('32 03 09 00 00')).toMatch(/field 1 \(temperature\) of tessera.v1.SamplingParameters: 8-byte value runs past the end/);
    expect(check('02 00')).toMatch(/invalid field number 0/);
    expect(check('1b 1c')).toMatch(/wire type 3/);
    expect(check('18 05')).toMatch(/field 3 \(text\) of tessera.v1.GenerateRequest has wire type 0, expected 2/);
    expect(check('2d 00 00 00 00')).toMatch(/field 5 \(chat\).*wire type 5, expected 2/);
    expect(check('9a')).toMatch(/truncated field tag/);
  });

  it('rejects invalid UTF-8 in string fields, not in bytes-like unknown fields', () => {
    expect(check('1a 02 c3 28')).toMatch(/field 3 \(text\) of tessera.v1.GenerateRequest is not valid UTF-8/);
    expect(check('1a 03 ed a0 80')).toMatch(/not valid UTF-8/); // an encoded lone surrogate
    expect(check('fa 01 02 c3 28')).toBeNull();
  });
});
