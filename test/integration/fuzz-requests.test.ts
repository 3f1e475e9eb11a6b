/**
 * Hostile input against the running server: a few thousand GenerateRequest bodies sent as raw bytes through a
 * generic grpc-js client (the serializer is the identity, so nothing on our side checks them first):
 * - schema-shaped messages with random and extreme field values (negative, huge, NaN, infinities, lone
 *   surrogates, several `prompt` oneof members at once, long repeated fields),
 * - valid encodings with bytes flipped, cut or duplicated,
 * - random fields with random wire types (wrong types for known field numbers, unknown fields),
 * - random bytes.
 * Every call must end with a proper status (OK, or a client-error status carrying the `tessera-error-code`
 * trailer; never INTERNAL or UNKNOWN, never a deadline, i.e. no hang), and the server must still serve normally
 * afterwards with nothing leaked (no KV block, sequence or call in flight).
 */
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import protobuf from 'protobufjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RunningServer } from '../../src/cli/serve.ts';
import { ERROR_CODE_TRAILER } from '../../src/server/status.ts';
import { connect, GenerationClient, HealthClient, startTestServer, unary } from '../helpers/test-server.ts';
import { seededRandom as prng } from '../helpers/seeded-random.ts';

const SEED = 20240611;
const COUNTS = { schema: 1000, mutated: 600, wireTypes: 500, randomBytes: 400 } as const;
const CONCURRENCY = 32;
const CALL_DEADLINE_MS = 10_000;

const random = prng(SEED);
const int = (n: number): number => Math.floor(random() * n);
const pick = <T>(xs: readonly T[]): T => xs[int(xs.length)];
const chance = (p: number): boolean => random() < p;

const EXTREME_NUMBERS = [0, 1, -1, 2, 0.5, 1.5, 100, 101, -0.0001, 2 ** 31 - 1, 2 ** 31, 2 ** 32 - 1, 2 ** 32, 2 ** 53 - 1, 2 ** 53 + 2, -(2 ** 53), 1e308, -1e308, 5e-324, NaN, Infinity, -Infinity];
const STRING_PIECES = ['', 'a', 'hello world', '\u0000', '\ud800', '\udfff', '🙂', 'é', '\n\t', '<|im_start|>', '{{ 7*7 }}', '{% for %}', 'x'.repeat(300), 'user', 'system', 'assistant'];

function randomNumber(type: string): number | string {
  if (chance(0.5)) return pick(EXTREME_NUMBERS);
  if (type === 'double' || type === 'float') return (random() - 0.3) * 10 ** int(6);
  return int(chance(0.8) ? 64 : 2 ** 32);
}

function randomString(): string {
  let s = '';
  const parts = int(4);
  for (let i = 0; i < parts; i++) s += chance(0.5) ? pick(STRING_PIECES) : String.fromCharCode(...Array.from({ length: int(12) }, () => int(0x10000)));
  return s;
}

function randomValue(field: protobuf.Field, depth: number): unknown {
  const resolved = field.resolve().resolvedType;
  if (resolved instanceof protobuf.Type) return randomMessage(resolved, depth + 1);
  if (resolved instanceof protobuf.Enum) return int(10) - 2;
  switch (field.type) {
    case 'string':
      return randomString();
    case 'bool':
      return chance(0.5);
    case 'bytes':
      return Buffer.from(Array.from({ length: int(8) }, () => int(256)));
    case 'uint64':
    case 'int64':
    case 'fixed64':
      // A decimal string covers the whole 64-bit range (protobufjs parses it into a Long).
      return chance(0.3) ? ((BigInt(int(2 ** 32)) << 32n) | BigInt(int(2 ** 32))).toString() : Math.abs(Number(randomNumber('uint64'))) || 0;
    default:
      return randomNumber(field.type);
  }
}

/** A plain object of `type` with a random subset of fields set to random (often extreme) values. */
function randomMessage(type: protobuf.Type, depth = 0): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  if (depth > 3) return out;
  for (const field of type.fieldsArray) {
    if (!chance(field.partOf ? 0.45 : 0.6)) continue; // oneof members: sometimes none, sometimes several at once
    if (field.repeated) out[field.name] = Array.from({ length: chance(0.1) ? int(400) : int(5) }, () => randomValue(field, depth));
    else out[field.name] = randomValue(field, depth);
  }
  return out;
}

function mutate(bytes: Uint8Array): Buffer {
  const b = Buffer.from(bytes);
  switch (int(4)) {
    case 0: // flip bytes
      for (let i = 0; i < 1 + int(4) && b.length > 0; i++) b[int(b.length)] = int(256);
      return b;
    case 1: // cut
      return b.subarray(0, int(b.length + 1));
    case 2: // duplicate a slice somewhere
      return Buffer.concat([b.subarray(0, int(b.length + 1)), b.subarray(int(b.length + 1)), b.subarray(0, int(b.length + 1))]);
    default: // insert garbage
      return Buffer.concat([b.subarray(0, int(b.length + 1)), Buffer.from(Array.from({ length: 1 + int(6) }, () => int(256))), b]);
  }
}

function varint(n: number): number[] {
  const out: number[] = [];
  let v = BigInt.asUintN(64, BigInt(Math.trunc(n)));
  do {
    let byte = Number(v & 0x7fn);
    v >>= 7n;
    if (v > 0n) byte |= 0x80;
    out.push(byte);
  } while (v > 0n);
  return out;
}

/** Fields with random numbers (mostly the known 1..8) and random wire types, well-formed at the wire level or not. */
function randomWireFields(): Buffer {
  const bytes: number[] = [];
  for (let f = 0; f < 1 + int(6); f++) {
    const fieldNumber = chance(0.8) ? 1 + int(8) : 1 + int(2 ** 29 - 1);
    const wireType = pick([0, 1, 2, 5, 3, 4, 6, 7]);
    bytes.push(...varint(fieldNumber * 8 + wireType));
    if (wireType === 0) bytes.push(...varint(chance(0.5) ? int(2 ** 32) : pick(EXTREME_NUMBERS.filter(Number.isFinite))));
    else if (wireType === 1) bytes.push(...Array.from({ length: 8 }, () => int(256)));
    else if (wireType === 5) bytes.push(...Array.from({ length: 4 }, () => int(256)));
    else if (wireType === 2) {
      const len = chance(0.9) ? int(20) : int(2 ** 31);
      bytes.push(...varint(len), ...Array.from({ length: Math.min(len, 20) }, () => int(256)));
    }
  }
  return Buffer.from(bytes);
}

type Method = 'Generate' | 'GenerateStream' | 'Tokenize';
interface Outcome {
  code: grpc.status;
  errorCode: string | undefined;
  details: string;
}

const identity = (b: Buffer): Buffer => b;

function call(client: grpc.Client, method: Method, body: Buffer): Promise<Outcome> {
  const path = `/tessera.v1.Generation/${method}`;
  const options = { deadline: Date.now() + CALL_DEADLINE_MS };
  return new Promise((resolve) => {
    const done = (err: grpc.ServiceError | null): void =>
      resolve({ code: err?.code ?? grpc.status.OK, errorCode: err?.metadata?.get(ERROR_CODE_TRAILER)[0] as string | undefined, details: err?.details ?? '' });
    if (method === 'GenerateStream') {
      const stream = client.makeServerStreamRequest(path, identity, identity, body, new grpc.Metadata(), options);
      stream.on('data', () => {});
      stream.on('error', done);
      stream.on('end', () => done(null));
    } else {
      client.makeUnaryRequest(path, identity, identity, body, new grpc.Metadata(), options, (err) => done(err));
    }
  });
}

let server: RunningServer;
const clients: grpc.Client[] = [];

beforeAll(async () => {
  server = await startTestServer({ 'max-new-tokens': 8, 'max-prompt-tokens': 64, 'max-message-bytes': 64 * 1024, 'max-concurrent-requests': 64 });
});

afterAll(async () => {
  for (const c of clients) c.close();
  await server?.shutdown();
});

describe('fuzzed GenerateRequest bytes', () => {
  it('answers every one with a proper status and keeps serving', async () => {
    const root = protobuf.loadSync(join(process.cwd(), 'proto/tessera/v1/generation.proto'));
    const requestType = root.lookupType('tessera.v1.GenerateRequest');
    const valid = [
      { text: 'hello', sampling: { temperature: 0 }, stopping: { max_new_tokens: 4 } },
      { token_ids: { ids: [1, 2, 3] }, sampling: { top_k: 5, seed: 7 }, stopping: { stop_sequences: ['a'], stop_token_ids: [2] }, top_n_logprobs: 2 },
      { chat: { messages: [{ role: 'user', content: 'hi' }] }, request_id: 'r1', adapter_id: '' },
    ].map((o) => requestType.encode(requestType.fromObject(o)).finish());

    const bodies: Buffer[] = [];
    for (let i = 0; i < COUNTS.schema; i++) bodies.push(Buffer.from(requestType.encode(randomMessage(requestType)).finish()));
    for (let i = 0; i < COUNTS.mutated; i++) bodies.push(mutate(chance(0.5) ? pick(valid) : pick(bodies)));
    for (let i = 0; i < COUNTS.wireTypes; i++) bodies.push(randomWireFields());
    for (let i = 0; i < COUNTS.randomBytes; i++) bodies.push(Buffer.from(Array.from({ length: int(200) }, () => int(256))));

    const client = new grpc.Client(`127.0.0.1:${server.port}`, grpc.credentials.createInsecure());
    clients.push(client);
    const outcomes: Array<Outcome & { method: Method; body: Buffer }> = [];
    const started = Date.now();
    let next = 0;
    await Promise.all(
      Array.from({ length: CONCURRENCY }, async () => {
        while (next < bodies.length) {
          const body = bodies[next];
          const method = pick(['Generate', 'GenerateStream', 'Generate', 'GenerateStream', 'Tokenize'] as const);
          next++;
          outcomes.push({ ...(await call(client, method, body)), method, body });
        }
      }),
    );
    const elapsedMs = Date.now() - started;

    const byStatus = new Map<string, number>();
    for (const o of outcomes) {
      const key = `${grpc.status[o.code]}/${o.errorCode ?? '-'}`;
      byStatus.set(key, (byStatus.get(key) ?? 0) + 1);
    }
    console.info(`fuzz: ${outcomes.length} calls in ${elapsedMs} ms (seed ${SEED}):`, Object.fromEntries([...byStatus].sort((a, b) => b[1] - a[1])));

    expect(outcomes).toHaveLength(bodies.length);
    const improper = outcomes.filter(
      (o) =>
        o.code !== grpc.status.OK &&
        !([grpc.status.INVALID_ARGUMENT, grpc.status.NOT_FOUND, grpc.status.RESOURCE_EXHAUSTED].includes(o.code) && o.errorCode !== undefined),
    );
    expect(improper.slice(0, 5).map((o) => ({ status: grpc.status[o.code], errorCode: o.errorCode, details: o.details, method: o.method, body: o.body.toString('base64') }))).toEqual([]);
    // The mix really exercised both sides: some requests generated, many were refused, undecodable ones included.
    expect(outcomes.filter((o) => o.code === grpc.status.OK).length).toBeGreaterThan(40);
    expect(outcomes.filter((o) => o.code === grpc.status.INVALID_ARGUMENT).length).toBeGreaterThan(400);
    expect(outcomes.some((o) => o.details.includes('is not a valid protobuf message'))).toBe(true);

    // Still serving, and nothing leaked.
    const gen = connect(GenerationClient, server.port, { closeWith: clients });
    const reply = await unary(gen, 'Generate', { text: 'after the storm', sampling: { temperature: 0 }, stopping: { max_new_tokens: 5, ignore_eos: true } });
    expect(reply.token_ids).toHaveLength(5);
    expect(await unary(connect(HealthClient, server.port, { closeWith: clients }), 'Check', { service: '' })).toEqual({ status: 'SERVING' });
    const stats = server.engine.stats();
    expect({ running: stats.running, queued: stats.queued, kvBlocksUsed: stats.kvBlocksUsed, inFlight: server.grpc.numInFlight }).toEqual({ running: 0, queued: 0, kvBlocksUsed: 0, inFlight: 0 });
  });

  it('answers bytes that are no protobuf message with INVALID_ARGUMENT naming the method, on every generation RPC', async () => {
    const client = new grpc.Client(`127.0.0.1:${server.port}`, grpc.credentials.createInsecure());
    clients.push(client);
    const garbage = Buffer.from([0x22, 0x05, 0x08]); // field 4 (token_ids), length 5, but 1 byte of payload
    for (const method of ['Generate', 'GenerateStream', 'Tokenize'] as const) {
      expect(await call(client, method, garbage)).toMatchObject({
        code: grpc.status.INVALID_ARGUMENT,
        errorCode: 'INVALID_ARGUMENT',
        details: expect.stringContaining(`/tessera.v1.Generation/${method} is not a valid protobuf message`),
      });
    }
  });

  it('answers truncated strings and fields overrunning their message with INVALID_ARGUMENT (protobufjs alone clamps them)', async () => {
    const client = new grpc.Client(`127.0.0.1:${server.port}`, grpc.credentials.createInsecure());
    clients.push(client);
    const cases: Array<[Method, string, RegExp]> = [
      ['Generate', '1a7f61', /field 3 \(text\) of tessera.v1.GenerateRequest: length 127 runs past the end/],
      ['GenerateStream', '2a060a040a057573120161', /field 1 \(role\) of tessera.v1.ChatMessage: length 5 runs past the end/],
      ['Tokenize', '0a7f61', /length 127 runs past the end/],
      ['Generate', '1a02c328', /not valid UTF-8/],
    ];
    for (const [method, hex, reason] of cases) {
      const outcome = await call(client, method, Buffer.from(hex, 'hex'));
      expect({ hex, ...outcome }).toMatchObject({ hex, code: grpc.status.INVALID_ARGUMENT, errorCode: 'INVALID_ARGUMENT', details: expect.stringMatching(reason) });
    }
    // The well-formed prefix of the first case still works: text "a".
    expect((await call(client, 'Tokenize', Buffer.from('0a0161', 'hex'))).code).toBe(grpc.status.OK);
  });

  it('answers garbage bytes to grpc.health.v1.Health/Check with INVALID_ARGUMENT, not INTERNAL or a clamped service name', async () => {
    const client = new grpc.Client(`127.0.0.1:${server.port}`, grpc.credentials.createInsecure());
    clients.push(client);
    const check = (hex: string) =>
      new Promise<Outcome>((resolve) => {
        client.makeUnaryRequest('/grpc.health.v1.Health/Check', identity, identity, Buffer.from(hex, 'hex'), new grpc.Metadata(), { deadline: Date.now() + CALL_DEADLINE_MS }, (err) =>
          resolve({ code: err?.code ?? grpc.status.OK, errorCode: err?.metadata?.get(ERROR_CODE_TRAILER)[0] as string | undefined, details: err?.details ?? '' }),
        );
      });
    for (const hex of ['ffffff', '0a0561', '0b', '0a02c328']) {
      expect({ hex, ...(await check(hex)) }).toMatchObject({ hex, code: grpc.status.INVALID_ARGUMENT, errorCode: 'INVALID_ARGUMENT', details: expect.stringContaining('/grpc.health.v1.Health/Check is not a valid protobuf message') });
    }
    expect(await check('')).toMatchObject({ code: grpc.status.OK });
  });
});
