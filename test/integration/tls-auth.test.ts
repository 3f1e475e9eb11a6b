/**
 * TLS and mutual TLS from certificate files (--tls-cert, --tls-key, --tls-client-ca), and API keys of two
 * tenants from a key file (--api-keys), on the real server.
 */
import { X509Certificate } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from 'vitest';
import { generateApiKey, hashApiKey } from '../../src/server/auth.ts';
import { makeTestCerts, type TestCerts } from '../helpers/test-certs.ts';
import { bearer, connect, GenerationClient, HealthClient, startTestServer, statusOf, unary, type DynamicClient } from '../helpers/test-server.ts';
import { tempDir } from '../helpers/tiny-model.ts';

const ACME_KEY = generateApiKey();
const GLOBEX_KEY = generateApiKey();
const req = { text: 'tls', sampling: { temperature: 0 }, stopping: { max_new_tokens: 3, ignore_eos: true } };
const soon = (): grpc.CallOptions => ({ deadline: Date.now() + 5000 });

let certs: TestCerts;
let keyFile: string;
const clients: grpc.Client[] = [];

beforeAll(() => {
  const dir = tempDir('certs');
  certs = makeTestCerts(dir);
  keyFile = join(dir, 'keys.json');
  writeFileSync(keyFile, JSON.stringify({ keys: [{ sha256: hashApiKey(ACME_KEY), tenant: 'acme' }, { sha256: hashApiKey(GLOBEX_KEY), tenant: 'globex' }] }));
});

afterAll(() => {
  for (const c of clients) c.close();
});

// Verify the server as `localhost` (its certificate names both): Node deprecates IP addresses as TLS server names.
const TLS_NAME = { 'grpc.ssl_target_name_override': 'localhost' };

function gen(port: number, creds: grpc.ChannelCredentials): DynamicClient {
  return connect(GenerationClient, port, { creds, options: TLS_NAME, closeWith: clients });
}

describe('TLS and API keys', () => {
  it('issues a server certificate for 127.0.0.1 signed by the test CA', () => {
    const server = new X509Certificate(certs.server.cert);
    expect(server.checkIssued(new X509Certificate(certs.ca.cert))).toBe(true);
    expect(server.checkIP('127.0.0.1')).toBe('127.0.0.1');
    expect(new X509Certificate(certs.rogueClient.cert).checkIssued(new X509Certificate(certs.ca.cert))).toBe(false);
  });

  it('serves over TLS, maps both tenants keys, rejects missing and wrong keys, and refuses plaintext and untrusted clients', async () => {
    const server = await startTestServer({ 'tls-cert': certs.server.certPath, 'tls-key': certs.server.keyPath, 'api-keys': keyFile });
    onTestFinished(() => server.shutdown());
    const tls = grpc.credentials.createSsl(certs.ca.cert);
    const g = gen(server.port, tls);

    const acme = await unary(g, 'Generate', req, bearer(ACME_KEY), soon());
    const globex = await unary(g, 'Generate', req, bearer(GLOBEX_KEY), soon());
    expect(acme.token_ids).toHaveLength(3);
    expect(globex.token_ids).toEqual(acme.token_ids);
    expect(await statusOf(unary(g, 'Generate', req, bearer(), soon()))).toMatchObject({
      code: grpc.status.UNAUTHENTICATED,
      errorCode: 'UNAUTHENTICATED',
      details: expect.stringContaining('`authorization` metadata is required'),
    });
    expect(await statusOf(unary(g, 'Generate', req, bearer(generateApiKey()), soon()))).toMatchObject({
      code: grpc.status.UNAUTHENTICATED,
      errorCode: 'UNAUTHENTICATED',
      details: 'API key not recognised',
    });
    // Health needs no key, over the same TLS channel.
    expect(await unary(connect(HealthClient, server.port, { creds: tls, options: TLS_NAME, closeWith: clients }), 'Check', { service: '' }, new grpc.Metadata(), soon())).toEqual({ status: 'SERVING' });

    const plaintext = gen(server.port, grpc.credentials.createInsecure());
    expect((await statusOf(unary(plaintext, 'Generate', req, bearer(ACME_KEY), soon()))).code).toBe(grpc.status.UNAVAILABLE);
    const untrusting = gen(server.port, grpc.credentials.createSsl(certs.rogueCa.cert));
    expect((await statusOf(unary(untrusting, 'Generate', req, bearer(ACME_KEY), soon()))).code).toBe(grpc.status.UNAVAILABLE);
  });

  it('under mutual TLS accepts only clients with a certificate from the client CA', async () => {
    const server = await startTestServer({ 'tls-cert': certs.server.certPath, 'tls-key': certs.server.keyPath, 'tls-client-ca': certs.ca.certPath });
    onTestFinished(() => server.shutdown());

    const withCert = gen(server.port, grpc.credentials.createSsl(certs.ca.cert, certs.client.key, certs.client.cert));
    expect((await unary(withCert, 'Generate', req, new grpc.Metadata(), soon())).token_ids).toHaveLength(3);

    const noCert = gen(server.port, grpc.credentials.createSsl(certs.ca.cert));
    expect((await statusOf(unary(noCert, 'Generate', req, new grpc.Metadata(), soon()))).code).toBe(grpc.status.UNAVAILABLE);
    const rogue = gen(server.port, grpc.credentials.createSsl(certs.ca.cert, certs.rogueClient.key, certs.rogueClient.cert));
    expect((await statusOf(unary(rogue, 'Generate', req, new grpc.Metadata(), soon()))).code).toBe(grpc.status.UNAVAILABLE);
    // The trusted client still works after the refusals.
    expect((await unary(withCert, 'Generate', req, new grpc.Metadata(), soon())).token_ids).toHaveLength(3);
  });
});
