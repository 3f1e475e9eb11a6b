/**
 * The Adapters service and adapter-aware generation through the whole server (startServer): adapters registered at start
 * from --adapters-dir, LoadAdapter from an allowed root, tenant scoping, the x-tessera-adapter routing header, hostile
 * sources, unload.
 */
import { cpSync, mkdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { beforeAll, describe, expect, it, afterAll } from 'vitest';
import type { RunningServer } from '../../src/cli/serve.ts';
import { generateApiKey, hashApiKey } from '../../src/server/auth.ts';
import { AdaptersClient, bearer, connect, GenerationClient, startTestServer, statusOf, unary, type DynamicClient } from '../helpers/test-server.ts';
import { tempDir, tinyModel } from '../helpers/tiny-model.ts';

const ACME = generateApiKey();
const GLOBEX = generateApiKey();
const prompt = { token_ids: { ids: [5, 9, 33, 7] }, sampling: { temperature: 0 }, stopping: { max_new_tokens: 8, ignore_eos: true } };

let server: RunningServer;
let gen: DynamicClient;
let admin: DynamicClient;
let privateRoot: string;
const clients: grpc.Client[] = [];

function withAdapterHeader(key: string, adapter: string): grpc.Metadata {
  const md = bearer(key);
  md.set('x-tessera-adapter', adapter);
  return md;
}

async function tokens(request: object, md: grpc.Metadata): Promise<number[]> {
  const reply = await unary<{ token_ids: number[] }>(gen, 'Generate', request, md);
  return reply.token_ids;
}

beforeAll(async () => {
  const { hf, convertedDir } = await tinyModel({ quant: 'fp32', numAdapters: 3 });
  const root = tempDir('adapters-api');
  const sharedDir = join(root, 'shared');
  mkdirSync(sharedDir);
  cpSync(hf.adapterDirs[0], join(sharedDir, 'alpha'), { recursive: true });
  cpSync(hf.adapterDirs[1], join(sharedDir, 'beta'), { recursive: true });
  privateRoot = join(root, 'uploads');
  mkdirSync(privateRoot);
  cpSync(hf.adapterDirs[2], join(privateRoot, 'gamma'), { recursive: true });
  symlinkSync('/etc', join(privateRoot, 'escape'));
  const keyFile = join(root, 'keys.json');
  writeFileSync(keyFile, JSON.stringify({ keys: [{ sha256: hashApiKey(ACME), tenant: 'acme' }, { sha256: hashApiKey(GLOBEX), tenant: 'globex' }] }));
  server = await startTestServer({ model: convertedDir, 'api-keys': keyFile, 'adapters-dir': [sharedDir], 'adapter-root': [privateRoot], 'adapter-slots': 2 });
  gen = connect(GenerationClient, server.port, { closeWith: clients });
  admin = connect(AdaptersClient, server.port, { closeWith: clients });
});

afterAll(async () => {
  for (const c of clients) c.close();
  await server?.shutdown();
});

describe('adapters through the gRPC API', () => {
  it('lists the adapters registered at start, shared by every tenant', async () => {
    for (const key of [ACME, GLOBEX]) {
      const list = await unary<{ adapters: Array<{ adapter_id: string; source: string }> }>(admin, 'ListAdapters', {}, bearer(key));
      expect(list.adapters.map((a) => a.adapter_id).sort()).toEqual(['alpha', 'beta']);
      // where the server keeps them is not the client's business: the path below the adapters directory only
      expect(list.adapters.map((a) => a.source).sort()).toEqual(['alpha', 'beta']);
    }
  });

  it('generates with an adapter named in the body or only in the x-tessera-adapter header; a mismatch is INVALID_ARGUMENT', async () => {
    const base = await tokens(prompt, bearer(ACME));
    const alpha = await tokens({ ...prompt, adapter_id: 'alpha' }, bearer(ACME));
    const beta = await tokens({ ...prompt, adapter_id: 'beta' }, bearer(ACME));
    expect(alpha).not.toEqual(base);
    expect(beta).not.toEqual(alpha);
    expect(await tokens(prompt, withAdapterHeader(ACME, 'alpha'))).toEqual(alpha);
    expect(await tokens({ ...prompt, adapter_id: 'alpha' }, withAdapterHeader(ACME, 'alpha'))).toEqual(alpha);
    expect(await statusOf(unary(gen, 'Generate', { ...prompt, adapter_id: 'alpha' }, withAdapterHeader(ACME, 'beta')))).toMatchObject({
      code: grpc.status.INVALID_ARGUMENT,
      details: expect.stringContaining('x-tessera-adapter'),
    });
    const info = await unary<{ adapter: { state: string; tier: string; rank: number } }>(admin, 'GetAdapter', { adapter_id: 'alpha' }, bearer(ACME));
    expect(info.adapter.rank).toBeGreaterThan(0);
  });

  it("loads a tenant's own adapter from an allowed root; other tenants cannot see or use it", async () => {
    const loaded = await unary<{ adapter: { adapter_id: string } }>(admin, 'LoadAdapter', { adapter_id: 'gamma', source: join(privateRoot, 'gamma') }, bearer(ACME));
    expect(loaded.adapter.adapter_id).toBe('gamma');
    const gamma = await tokens({ ...prompt, adapter_id: 'gamma' }, bearer(ACME));
    expect(gamma).toHaveLength(8);
    expect(await statusOf(unary(gen, 'Generate', { ...prompt, adapter_id: 'gamma' }, bearer(GLOBEX)))).toMatchObject({ code: grpc.status.NOT_FOUND });
    expect(await statusOf(unary(admin, 'GetAdapter', { adapter_id: 'gamma' }, bearer(GLOBEX)))).toMatchObject({ code: grpc.status.NOT_FOUND });
    const globexList = await unary<{ adapters: Array<{ adapter_id: string }> }>(admin, 'ListAdapters', {}, bearer(GLOBEX));
    expect(globexList.adapters.map((a) => a.adapter_id)).not.toContain('gamma');
  });

  it('accepts Hugging Face-style org/name ids (LoadAdapter, the request body and the routing header) and refuses malformed ones naming the field', async () => {
    const id = 'acme/support-v2';
    await unary(admin, 'LoadAdapter', { adapter_id: id, source: join(privateRoot, 'gamma') }, bearer(ACME));
    const gamma = await tokens({ ...prompt, adapter_id: 'gamma' }, bearer(ACME));
    expect(await tokens({ ...prompt, adapter_id: id }, bearer(ACME))).toEqual(gamma);
    expect(await tokens(prompt, withAdapterHeader(ACME, id))).toEqual(gamma);
    for (const [rpc, client, request] of [
      ['Generate', gen, { ...prompt, adapter_id: 'acme/support/v2' }],
      ['LoadAdapter', admin, { adapter_id: '/support-v2', source: join(privateRoot, 'gamma') }],
    ] as const) {
      expect(await statusOf(unary(client, rpc, request, bearer(ACME)))).toMatchObject({ code: grpc.status.INVALID_ARGUMENT, details: expect.stringMatching(/^`adapter_id` must be .* Given: "/) });
    }
    await unary(admin, 'UnloadAdapter', { adapter_id: id }, bearer(ACME));
  });

  it('rejects sources outside the allowed roots (traversal, symlink escapes, missing files) and keeps serving', async () => {
    for (const source of ['../../etc/passwd', '/etc/passwd', join(privateRoot, 'escape', 'passwd'), join(privateRoot, 'missing')]) {
      const st = await statusOf(unary(admin, 'LoadAdapter', { adapter_id: 'evil', source }, bearer(ACME)));
      expect([grpc.status.INVALID_ARGUMENT, grpc.status.FAILED_PRECONDITION, grpc.status.NOT_FOUND]).toContain(st.code);
      // The client reads no server path it did not send itself, and not the list of adapter roots.
      expect({ source, details: st.details.replace(JSON.stringify(source), '"<given>"') }).not.toEqual({ source, details: expect.stringContaining(dirname(privateRoot)) });
    }
    expect(await tokens(prompt, bearer(ACME))).toHaveLength(8);
  });

  it('unloading makes the id unknown (NOT_FOUND), never a silent base-model answer', async () => {
    await unary(admin, 'UnloadAdapter', { adapter_id: 'gamma' }, bearer(ACME));
    expect(await statusOf(unary(gen, 'Generate', { ...prompt, adapter_id: 'gamma' }, bearer(ACME)))).toMatchObject({ code: grpc.status.NOT_FOUND, errorCode: 'ADAPTER_NOT_FOUND' });
  });
});
