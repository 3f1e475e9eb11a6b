/**
 * Remote shard workers authenticate their controller and belong to one controller at a time: real shard servers on
 * loopback (the `tessera worker` service, in this process), real controllers, certificates issued by openssl.
 */
import { describe, expect, onTestFinished, test } from 'vitest';
import { isTesseraError } from '../../src/errors.ts';
import { ShardController } from '../../src/parallel/controller.ts';
import type { ShardClientSecurity } from '../../src/parallel/shard-auth.ts';
import { GrpcLink, grpcLinks } from '../../src/parallel/shard-link.ts';
import { startShardServer, type ShardServerOptions } from '../../src/parallel/shard-server.ts';
import { makeTestCerts } from '../helpers/test-certs.ts';
import { tempDir, tinyModel } from '../helpers/tiny-model.ts';
import { driveGreedy } from './shard-driver.ts';

const PROMPTS = [
  [3, 17, 42, 5, 99, 7],
  [5, 6, 7],
];
const SLOTS = [0, 0];
const BLOCK = 8;
const base = { kvCacheBytes: 2 << 20, blockSizeTokens: BLOCK, numAdapterSlots: 1, maxAdapterRank: 16, intraOpThreads: 1 };
const SECRET = Buffer.from('f00dfeedf00dfeedf00dfeedf00dfeed');

async function worker(options: Omit<ShardServerOptions, 'listen'> = {}) {
  const log: string[] = [];
  const server = await startShardServer({ listen: '127.0.0.1:0', log: (l) => log.push(l), ...options });
  onTestFinished(() => server.shutdown());
  return { server, log };
}

function security(controllerId: string, extra: Partial<ShardClientSecurity> = {}): ShardClientSecurity {
  return { tls: null, secret: null, controllerId, ...extra };
}

async function refusal(p: Promise<unknown>): Promise<{ code: string; message: string }> {
  const err = await p.then(
    () => null,
    (e: unknown) => e,
  );
  if (!isTesseraError(err)) throw new Error(`expected a refusal, got ${String(err)}`);
  return { code: err.code, message: err.message };
}

describe('shard link: authentication, TLS and one controller per worker', async () => {
  const { convertedDir } = await tinyModel({ quant: 'fp32', numAdapters: 0 });
  const one = await ShardController.start({ modelDir: convertedDir, ...base });
  const reference = await driveGreedy(one, PROMPTS, SLOTS, 3, BLOCK);
  await one.shutdown();

  const start = (addresses: string[], sec: ShardClientSecurity, timeoutMs = 1500) =>
    ShardController.start({ modelDir: convertedDir, pp: addresses.length, ...base, openLink: grpcLinks(addresses, { security: sec, timeoutMs }), restartDelayMs: 50 });

  test('a second controller is refused with the holder named, and the first keeps serving undisturbed', async () => {
    const workers = [await worker({ secret: SECRET }), await worker({ secret: SECRET })];
    const addresses = workers.map((w) => w.server.address);
    const health: boolean[] = [];
    const first = await ShardController.start({ modelDir: convertedDir, pp: 2, ...base, openLink: grpcLinks(addresses, { security: security('first', { secret: SECRET }) }), onHealth: (s) => health.push(s) });
    onTestFinished(() => first.shutdown());
    expect((await driveGreedy(first, PROMPTS, SLOTS, 3, BLOCK)).tokens).toEqual(reference.tokens);

    const second = await refusal(start(addresses, security('second', { secret: SECRET })));
    expect(second.code).toBe('WORKER_UNAVAILABLE');
    expect(second.message).toMatch(new RegExp(`^shard worker ${addresses[0]} refused this controller: held by controller "first" \\(connected for [\\d.]+ s\\); a worker serves one controller at a time$`));
    expect(workers[0].log.at(-1)).toMatch(/^refused a controller from .*held by controller "first"/);

    // The first controller never noticed: no health change, same tokens, both workers still its own.
    expect((await driveGreedy(first, PROMPTS, SLOTS, 3, BLOCK)).tokens).toEqual(reference.tokens);
    expect(health).toEqual([]);
    for (const w of workers) expect(w.server.holder()).toEqual({ controllerId: 'first', connected: true });

    // A clean shutdown (goodbye) frees the workers at once for the next controller.
    await first.shutdown();
    const third = await start(addresses, security('third', { secret: SECRET }));
    onTestFinished(() => third.shutdown());
    expect((await driveGreedy(third, PROMPTS, SLOTS, 3, BLOCK)).tokens).toEqual(reference.tokens);
  });

  test('a controller refused by one worker lets go of the others it had claimed (no lease left behind)', async () => {
    const taken = await worker({ leaseMs: 60_000 });
    const free = await worker({ leaseMs: 60_000 });
    const holder = await GrpcLink.connect(taken.server.address, { security: security('holder') });
    onTestFinished(() => holder.close());
    const refused = await refusal(start([free.server.address, taken.server.address], security('latecomer'), 1500));
    expect(refused.message).toMatch(new RegExp(`^shard worker ${taken.server.address} refused this controller: held by controller "holder"`));
    // The worker that had accepted was told goodbye: free as soon as its stream ends, not held for the 60 s lease.
    for (let i = 0; i < 100 && free.server.holder() !== null; i++) await new Promise((r) => setTimeout(r, 20));
    expect(free.server.holder()).toBeNull();
    expect(taken.server.holder()).toEqual({ controllerId: 'holder', connected: true });
  });

  test('a missing or wrong shared secret is refused before the worker does anything', async () => {
    const { server, log } = await worker({ secret: SECRET });
    const missing = await refusal(start([server.address], security('nosecret')));
    expect(missing).toEqual({ code: 'CONFIG_INVALID', message: `shard worker ${server.address} refused this controller: this shard worker needs the shared secret (controller: --worker-secret-file); none was presented` });
    const wrong = await refusal(start([server.address], security('wrong', { secret: Buffer.from('0'.repeat(32)) })));
    expect(wrong).toEqual({ code: 'CONFIG_INVALID', message: `shard worker ${server.address} refused this controller: wrong shared secret (controller: --worker-secret-file must hold the worker's --secret-file)` });
    expect(server.holder()).toBeNull();
    expect(log.some((l) => l.includes('none was presented'))).toBe(true);
    const right = await start([server.address], security('right', { secret: SECRET }));
    onTestFinished(() => right.shutdown());
    expect((await driveGreedy(right, PROMPTS, SLOTS, 3, BLOCK)).tokens).toEqual(reference.tokens);
  });

  test('a controller that vanished keeps its worker for the lease (and gets it back); a new one waits for the lease to end', async () => {
    const { server } = await worker({ leaseMs: 60_000 });
    // A controller's stream dropped without a goodbye, as when its process dies.
    const gone = await GrpcLink.connect(server.address, { security: security('crashed') });
    await gone.close();
    const refused = await refusal(GrpcLink.connect(server.address, { security: security('newcomer'), maxLeaseWaitMs: 0 }));
    expect(refused.message).toMatch(/held by controller "crashed" \((connected for|disconnected) [\d.]+ s/);
    const back = await GrpcLink.connect(server.address, { security: security('crashed') });
    expect(server.holder()).toEqual({ controllerId: 'crashed', connected: true });
    await back.close();

    // Recovery: a controller started to replace a dead one waits out the lease, takes the workers and serves.
    const short = [await worker({ leaseMs: 1500 }), await worker({ leaseMs: 1500 })];
    const addresses = short.map((w) => w.server.address);
    const dead = await Promise.all(addresses.map((a) => GrpcLink.connect(a, { security: security('crashed') })));
    await Promise.all(dead.map((l) => l.close()));
    await new Promise((r) => setTimeout(r, 100)); // the workers see the streams end
    const early = await refusal(GrpcLink.connect(addresses[0], { security: security('newcomer'), maxLeaseWaitMs: 0 }));
    expect(early.message).toMatch(/held by controller "crashed" \(disconnected [\d.]+ s ago; free in [\d.]+ s unless it reconnects\)/);
    const taken = await start(addresses, security('newcomer'));
    onTestFinished(() => taken.shutdown());
    for (const w of short) expect(w.server.holder()).toEqual({ controllerId: 'newcomer', connected: true });
    expect((await driveGreedy(taken, PROMPTS, SLOTS, 3, BLOCK)).tokens).toEqual(reference.tokens);
  });

  test('mutual TLS: the right client certificate serves; no certificate, a rogue one, plaintext or the wrong name are refused', async () => {
    const certs = makeTestCerts(tempDir('shard-tls'));
    const { server } = await worker({ tls: { cert: certs.server.cert, key: certs.server.key, clientCa: certs.ca.cert } });
    const tls = (cert: { cert: Buffer; key: Buffer } | null, serverName: string | null = 'localhost') => ({ ca: certs.ca.cert, cert: cert?.cert ?? null, key: cert?.key ?? null, serverName });

    const good = await start([server.address], security('mtls', { tls: tls(certs.client) }));
    onTestFinished(() => good.shutdown());
    expect((await driveGreedy(good, PROMPTS, SLOTS, 3, BLOCK)).tokens).toEqual(reference.tokens);
    await good.shutdown();

    const refusals = {
      plaintext: await refusal(start([server.address], security('p'))),
      noClientCert: await refusal(start([server.address], security('n', { tls: tls(null) }))),
      rogueClientCert: await refusal(start([server.address], security('r', { tls: tls(certs.rogueClient) }))),
      wrongServerName: await refusal(start([server.address], security('w', { tls: tls(certs.client, 'other.example') }))),
    };
    for (const [what, r] of Object.entries(refusals)) {
      expect(r.code, what).toBe('WORKER_UNAVAILABLE');
      expect(r.message, what).toContain(`shard worker ${server.address} not reachable within 1500 ms`);
    }
    expect(refusals.plaintext.message).toContain('plaintext, no --worker-tls-ca');
    expect(refusals.noClientCert.message).toContain('certificate required');
    expect(refusals.wrongServerName.message).toContain('other.example');
    expect(server.holder()).toBeNull();
  });

  test('`tessera worker` refuses to listen beyond loopback without a way to authenticate controllers', async () => {
    const { main } = await import('../../src/cli/main.ts');
    const err: string[] = [];
    const code = await main(['worker', '--listen', '0.0.0.0:0'], { out: () => {}, err: (s) => err.push(s) });
    expect(code).toBe(2);
    expect(err.join('')).toMatch(/^tessera worker: --listen 0\.0\.0\.0:0 without --secret-file or --tls-client-ca would let anyone who reaches it drive this worker/);
  });
});
