/**
 * Adapter manager on real parts without ORT: real generated PEFT adapters and .cpeft files on disk, real slot stacks
 * (the same class the model worker writes), a loopback http server for URL sources, a manual clock.
 */
import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { createAdapterManager, defaultMaxPinnedPerTenant, type AdapterManagerOptions, type DeviceSlotWriter } from '../../src/adapters/adapter-manager.ts';
import { compressAdapterDir } from '../../src/adapters/compeft/compress-command.ts';
import { readPeftAdapter } from '../../src/adapters/peft/peft-adapter.ts';
import { decodeCompeftIntoSlot } from '../../src/adapters/slot-decode-compeft.ts';
import { TesseraError } from '../../src/errors.ts';
import { makeModel, modelName, type MadeModel } from '../../src/model/checkpoint/make-model.ts';
import { AdapterSlotStacks } from '../../src/model/runner/adapter-slot-stacks.ts';
import { createManualClock } from '../../src/engine/testing/index.ts';
import { seededRandom } from '../helpers/seeded-random.ts';
import { tempDir } from '../helpers/tiny-model.ts';

const MAX_RANK = 8;

/** Real slot stacks behind the manager's writer seam, counting writes. */
function stackWriter(hf: MadeModel, numSlots: number, opts: { compressed?: boolean } = {}) {
  const stacks = new AdapterSlotStacks(hf.config, numSlots, MAX_RANK);
  const counts = { dense: 0, compressed: 0, cleared: 0 };
  const writer: DeviceSlotWriter = {
    loadAdapterSlot: async (slot, weights) => {
      counts.dense++;
      stacks.write(slot, weights);
    },
    clearAdapterSlot: async (slot) => {
      counts.cleared++;
      stacks.clear(slot);
    },
  };
  if (opts.compressed ?? true) {
    writer.loadCompressedSlot = async (slot, bytes) => {
      counts.compressed++;
      decodeCompeftIntoSlot(bytes, hf.config, slot, (rank, scale, fill) => stacks.writeWith(slot, rank, scale, fill));
    };
  }
  return { stacks, counts, writer };
}

/** First value of q_proj A of layer 0 in `slot` (rank index 0, input 0): identifies which adapter is there. */
const slotFingerprint = (stacks: AdapterSlotStacks, slot: number) => stacks.stackA(0, 'q_proj')[slot * hf.config.hiddenSize * MAX_RANK];
const adapterFingerprint = (dir: string) => readPeftAdapter(dir, hf.config).layers[0].q_proj!.a[0];

async function errorOf(p: Promise<unknown> | (() => unknown)): Promise<TesseraError> {
  try {
    await (typeof p === 'function' ? p() : p);
  } catch (err) {
    expect(err).toBeInstanceOf(TesseraError);
    return err as TesseraError;
  }
  throw new Error('expected an error');
}

/** Polls acquire the way the engine does (each step) until it is not 'pending'. */
async function acquireSettled(m: { acquire(id: string, t: string | null): number | 'pending' | TesseraError }, id: string, tenant: string | null = null) {
  for (let i = 0; i < 2000; i++) {
    const r = m.acquire(id, tenant);
    if (r !== 'pending') return r;
    await new Promise((resolve) => setTimeout(resolve, 1));
  }
  throw new Error(`adapter ${id} still pending`);
}

let hf: MadeModel;
let root: string;
let outside: string;
let modelId: string;
let server: http.Server;
let baseUrl: string;
const served = new Map<string, Buffer | 'chunked-huge'>();

function options(over: Partial<AdapterManagerOptions> & Pick<AdapterManagerOptions, 'slots'>): AdapterManagerOptions {
  return { config: hf.config, modelId, numSlots: 4, maxRank: MAX_RANK, hostCacheBytes: 64 << 20, allowedRoots: [root], allowedUrlPrefixes: [`${baseUrl}/ok/`], ...over };
}

beforeAll(async () => {
  const dir = tempDir('adapters');
  hf = await makeModel({ preset: 'tiny', outDir: path.join(dir, 'hf'), numAdapters: 4, seed: 0 });
  modelId = `${modelName('tiny', 0)}@0123456789ab`;
  root = path.join(dir, 'root');
  outside = path.join(dir, 'outside');
  fs.mkdirSync(root);
  fs.mkdirSync(outside);
  for (let i = 0; i < 4; i++) fs.cpSync(hf.adapterDirs[i], path.join(root, `a${i}`), { recursive: true });
  await compressAdapterDir({ adapterDir: hf.adapterDirs[0], config: hf.config, density: 0.3, alpha: 'auto', outFile: path.join(root, 'c0.cpeft') });
  served.set('/ok/c0.cpeft', fs.readFileSync(path.join(root, 'c0.cpeft')));
  served.set('/ok/huge.cpeft', 'chunked-huge');
  server = http.createServer((req, res) => {
    const body = served.get(req.url ?? '');
    if (body === undefined) {
      res.statusCode = 404;
      res.end('no');
    } else if (body === 'chunked-huge') {
      res.write(Buffer.alloc(1 << 20));
      res.end(Buffer.alloc(1 << 20));
    } else res.end(body);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  baseUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}, 60_000);

afterAll(async () => {
  await new Promise<void>((resolve) => server.close(() => resolve()));
});

describe('adapter manager: registry, tiers and slots', () => {
  test('registerDirectory names adapters after subdirectories and .cpeft files; unknown ids are NOT_FOUND, never base', async () => {
    const { writer } = stackWriter(hf, 4);
    const m = createAdapterManager(options({ slots: writer }));
    expect(m.registerDirectory(root, { tenantId: null }).sort()).toEqual(['a0', 'a1', 'a2', 'a3', 'c0']);
    const st = await m.get({ adapterId: 'a1', tenantId: null });
    expect(st).toMatchObject({ state: 'registered', tier: 'source', version: 1, tenantId: null });
    const err = m.acquire('nope', null);
    expect(err).toBeInstanceOf(TesseraError);
    expect((err as TesseraError).code).toBe('ADAPTER_NOT_FOUND');
    await m.shutdown();
  });

  test('one load however many requests wait; the slot holds that adapter; hits afterwards', async () => {
    const { stacks, counts, writer } = stackWriter(hf, 4);
    const m = createAdapterManager(options({ slots: writer }));
    m.registerDirectory(root, { tenantId: null });
    const first = [m.acquire('a2', null), m.acquire('a2', null), m.acquire('a2', null)];
    expect(first).toEqual(['pending', 'pending', 'pending']);
    const slots = await Promise.all(Array.from({ length: 5 }, () => acquireSettled(m, 'a2')));
    expect(new Set(slots).size).toBe(1);
    expect(counts.dense).toBe(1);
    const slot = slots[0] as number;
    expect(slotFingerprint(stacks, slot)).toBe(adapterFingerprint(hf.adapterDirs[2]));
    expect(await m.get({ adapterId: 'a2', tenantId: null })).toMatchObject({ state: 'resident', tier: 'device', rank: 4 });
    for (const s of slots) m.release('a2', s as number);
    await m.shutdown();
  });

  test('.cpeft decodes into the slot: same slot contents as decoding to dense and writing those', async () => {
    const direct = stackWriter(hf, 3);
    const dense = stackWriter(hf, 3, { compressed: false });
    const m1 = createAdapterManager(options({ slots: direct.writer, numSlots: 3 }));
    const m2 = createAdapterManager(options({ slots: dense.writer, numSlots: 3 }));
    for (const m of [m1, m2]) m.registerDirectory(root, { tenantId: null });
    const s1 = (await acquireSettled(m1, 'c0')) as number;
    const s2 = (await acquireSettled(m2, 'c0')) as number;
    expect(direct.counts).toMatchObject({ compressed: 1, dense: 0 });
    expect(dense.counts).toMatchObject({ compressed: 0, dense: 1 });
    for (const target of ['q_proj', 'down_proj'] as const) {
      for (const layer of [0, hf.config.numLayers - 1]) {
        const a1 = direct.stacks.stackA(layer, target);
        const a2 = dense.stacks.stackA(layer, target);
        const per = a1.length / 3;
        expect(a1.subarray(s1 * per, (s1 + 1) * per)).toEqual(a2.subarray(s2 * per, (s2 + 1) * per));
        const b1 = direct.stacks.stackB(layer, target);
        const b2 = dense.stacks.stackB(layer, target);
        const perB = b1.length / 3;
        expect(b1.subarray(s1 * perB, (s1 + 1) * perB)).toEqual(b2.subarray(s2 * perB, (s2 + 1) * perB));
        expect(a1.subarray(s1 * per, (s1 + 1) * per).some((x) => x !== 0)).toBe(true);
      }
    }
    expect(direct.stacks.scales[s1]).toBe(dense.stacks.scales[s2]);
    const st = await m1.get({ adapterId: 'c0', tenantId: null });
    expect(st.compressedSizeBytes).toBe(fs.statSync(path.join(root, 'c0.cpeft')).size);
    expect(st.decompressedSizeBytes).toBeGreaterThan(st.compressedSizeBytes);
    await m1.shutdown();
    await m2.shutdown();
  });

  test('busy slots are never evicted: a fourth adapter waits (pending) until a reference is released, then takes the LRU slot', async () => {
    const { stacks, writer } = stackWriter(hf, 4); // 3 usable slots
    const clock = createManualClock(1000);
    const m = createAdapterManager(options({ slots: writer, clock, newSlotGraceMs: 0 }));
    m.registerDirectory(root, { tenantId: null });
    const held: Record<string, number> = {};
    for (const id of ['a0', 'a1', 'a2']) {
      held[id] = (await acquireSettled(m, id)) as number;
      clock.advance(10);
    }
    expect(m.acquire('a3', null)).toBe('pending');
    await new Promise((resolve) => setTimeout(resolve, 30));
    expect(m.acquire('a3', null)).toBe('pending'); // fetched to host, but every slot has a running sequence
    expect(m.acquire('a1', null)).toBe(held.a1); // resident adapters keep serving meanwhile
    m.release('a0', held.a0);
    clock.advance(10);
    m.release('a1', held.a1);
    m.release('a1', held.a1);
    clock.advance(10);
    const s3 = (await acquireSettled(m, 'a3')) as number;
    expect(s3).toBe(held.a0); // both idle now; a0's slot was used longest ago
    expect(slotFingerprint(stacks, s3)).toBe(adapterFingerprint(hf.adapterDirs[3]));
    expect(await m.get({ adapterId: 'a0', tenantId: null })).toMatchObject({ tier: 'host' });
    expect(m.acquire('a2', null)).toBe(held.a2);
    await m.shutdown();
  });

  test('reload bumps the version: old sequences keep the old slot, later requests only ever get the new weights', async () => {
    const { stacks, writer } = stackWriter(hf, 4);
    const m = createAdapterManager(options({ slots: writer }));
    await m.load({ adapterId: 'x', source: 'a0', pin: false, tenantId: null });
    const old = (await acquireSettled(m, 'x')) as number;
    expect(slotFingerprint(stacks, old)).toBe(adapterFingerprint(hf.adapterDirs[0]));
    const st = await m.load({ adapterId: 'x', source: 'a1', pin: false, tenantId: null });
    expect(st.version).toBe(2);
    const fresh = await acquireSettled(m, 'x');
    expect(fresh).not.toBe(old);
    expect(slotFingerprint(stacks, fresh as number)).toBe(adapterFingerprint(hf.adapterDirs[1]));
    expect(slotFingerprint(stacks, old)).toBe(adapterFingerprint(hf.adapterDirs[0])); // still serving its sequence
    expect(m.slotTable().find((s) => s.slot === old)).toMatchObject({ version: 1, refs: 1 });
    m.release('x', old);
    expect(m.slotTable().find((s) => s.slot === old)).toMatchObject({ state: 'free', adapterId: null });
    m.release('x', fresh as number);
    await m.shutdown();
  });

  test('unload drains: new requests NOT_FOUND at once, the running sequence keeps its slot until release', async () => {
    const { writer } = stackWriter(hf, 4);
    const m = createAdapterManager(options({ slots: writer }));
    await m.load({ adapterId: 'y', source: 'a2', pin: false, tenantId: null });
    const slot = (await acquireSettled(m, 'y')) as number;
    await m.unload({ adapterId: 'y', tenantId: null });
    expect((m.acquire('y', null) as TesseraError).code).toBe('ADAPTER_NOT_FOUND');
    expect((await errorOf(m.get({ adapterId: 'y', tenantId: null }))).code).toBe('ADAPTER_NOT_FOUND');
    expect(m.slotTable().find((s) => s.slot === slot)).toMatchObject({ adapterId: 'y', refs: 1 });
    m.release('y', slot);
    expect(m.slotTable().find((s) => s.slot === slot)?.state).toBe('free');
    await m.shutdown();
  });

  test("tenants: another tenant's adapter is NOT_FOUND (acquire, get, unload) and absent from list; shared ones are visible", async () => {
    const { writer } = stackWriter(hf, 4);
    const m = createAdapterManager(options({ slots: writer }));
    await m.load({ adapterId: 'mine', source: 'a0', pin: false, tenantId: 't1' });
    await m.load({ adapterId: 'shared', source: 'a1', pin: false, tenantId: null });
    expect((m.acquire('mine', 't2') as TesseraError).code).toBe('ADAPTER_NOT_FOUND');
    expect((m.acquire('mine', null) as TesseraError).code).toBe('ADAPTER_NOT_FOUND');
    expect((await errorOf(m.get({ adapterId: 'mine', tenantId: 't2' }))).message).toBe((await errorOf(m.get({ adapterId: 'never', tenantId: 't2' }))).message.replace('never', 'mine'));
    expect((await errorOf(m.unload({ adapterId: 'mine', tenantId: 't2' }))).code).toBe('ADAPTER_NOT_FOUND');
    expect((await errorOf(m.unload({ adapterId: 'shared', tenantId: 't2' }))).code).toBe('PERMISSION_DENIED');
    expect((await m.list({ tenantId: 't2' })).map((s) => s.adapterId)).toEqual(['shared']);
    expect((await m.list({ tenantId: 't1' })).map((s) => s.adapterId).sort()).toEqual(['mine', 'shared']);
    expect(typeof (await acquireSettled(m, 'mine', 't1'))).toBe('number');
    expect(typeof (await acquireSettled(m, 'shared', 't2'))).toBe('number');
    await m.shutdown();
  });

  test('failed loads reach the waiting requests, are retried with exponential backoff, and recover once the source is fixed', async () => {
    const { writer } = stackWriter(hf, 4);
    const clock = createManualClock(0);
    const dir = path.join(root, 'flakes', 'flaky');
    fs.cpSync(hf.adapterDirs[1], dir, { recursive: true });
    const weights = path.join(dir, 'adapter_model.safetensors');
    const good = fs.readFileSync(weights);
    fs.writeFileSync(weights, good.subarray(0, 100)); // truncated safetensors
    try {
      const m = createAdapterManager(options({ slots: writer, clock, retry: { initialBackoffMs: 1000, maxBackoffMs: 4000 } }));
      await m.load({ adapterId: 'ok', source: 'a0', pin: false, tenantId: null });
      expect(m.registerDirectory(path.dirname(dir), { tenantId: 'flakes' })).toEqual(['flaky']);
      const e1 = await acquireSettled(m, 'flaky', 'flakes');
      expect((e1 as TesseraError).code).toBe('ADAPTER_LOAD_FAILED');
      expect((await m.get({ adapterId: 'flaky', tenantId: 'flakes' })).error).toContain('adapter_model.safetensors');
      clock.advance(999);
      expect(m.acquire('flaky', 'flakes')).toBe(e1); // still backing off: fails fast, no new load
      clock.advance(1);
      expect(m.acquire('flaky', 'flakes')).toBe('pending'); // retried
      const e2 = await acquireSettled(m, 'flaky', 'flakes');
      expect((e2 as TesseraError).code).toBe('ADAPTER_LOAD_FAILED');
      clock.advance(1999);
      expect(m.acquire('flaky', 'flakes')).toBe(e2); // second failure: 2000 ms backoff
      fs.writeFileSync(weights, good);
      clock.advance(1);
      expect(typeof (await acquireSettled(m, 'flaky', 'flakes'))).toBe('number');
      expect((await m.get({ adapterId: 'flaky', tenantId: 'flakes' })).error).toBeNull();
      expect(typeof (await acquireSettled(m, 'ok'))).toBe('number'); // others unaffected throughout
      await m.shutdown();
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  test('bad sources are rejected with clear errors and nothing is registered; the manager keeps serving', async () => {
    const { writer } = stackWriter(hf, 4);
    const m = createAdapterManager(options({ slots: writer, maxAdapterFileBytes: 4 << 20 }));
    const load = (source: string, adapterId = 'bad') => m.load({ adapterId, source, pin: false, tenantId: null });
    const cases: Array<[string, string, RegExp]> = [];
    // path traversal and absolute paths outside the roots
    cases.push(['../../etc/passwd', 'INVALID_ARGUMENT', /must resolve inside the server's adapter roots\. Given/]);
    cases.push(['/etc/passwd', 'INVALID_ARGUMENT', /must resolve inside the server's adapter roots\. Given/]);
    // a symlink inside the root pointing outside, and a PEFT dir whose weights file links outside
    fs.cpSync(hf.adapterDirs[0], path.join(outside, 'real'), { recursive: true });
    fs.symlinkSync(path.join(outside, 'real'), path.join(root, 'link-out'));
    cases.push(['link-out', 'INVALID_ARGUMENT', /must resolve inside the server's adapter roots\. Given/]);
    fs.mkdirSync(path.join(root, 'half-out'));
    fs.copyFileSync(path.join(hf.adapterDirs[0], 'adapter_config.json'), path.join(root, 'half-out', 'adapter_config.json'));
    fs.symlinkSync(path.join(outside, 'real', 'adapter_model.safetensors'), path.join(root, 'half-out', 'adapter_model.safetensors'));
    cases.push(['half-out', 'INVALID_ARGUMENT', /must resolve inside the server's adapter roots\. Given/]);
    // not regular files, missing, not an adapter
    execFileSync('mkfifo', [path.join(root, 'fifo.cpeft')]);
    cases.push(['fifo.cpeft', 'INVALID_ARGUMENT', /not a regular file/]);
    cases.push(['missing', 'INVALID_ARGUMENT', /does not exist/]);
    fs.writeFileSync(path.join(root, 'notes.txt'), 'hello');
    cases.push(['notes.txt', 'INVALID_ARGUMENT', /PEFT directory or a \.cpeft file/]);
    // too large
    fs.writeFileSync(path.join(root, 'huge.cpeft'), Buffer.alloc((4 << 20) + 1));
    cases.push(['huge.cpeft', 'ADAPTER_LOAD_FAILED', /must be <= 4194304 bytes. Given: 4194305 bytes/]);
    // corrupt content
    const corrupt = Buffer.from(fs.readFileSync(path.join(root, 'c0.cpeft')));
    corrupt[corrupt.length - 3] ^= 0xff;
    fs.writeFileSync(path.join(root, 'corrupt.cpeft'), corrupt);
    cases.push(['corrupt.cpeft', 'ADAPTER_LOAD_FAILED', /checksum mismatch/]);
    fs.cpSync(hf.adapterDirs[0], path.join(root, 'garbage'), { recursive: true });
    fs.writeFileSync(path.join(root, 'garbage', 'adapter_model.safetensors'), Buffer.from('\xff\xff\xff\xff\xff\xff\xff\x7fnot safetensors'));
    cases.push(['garbage', 'ADAPTER_LOAD_FAILED', /safetensors/]);
    // wrong shapes (adapter of another model size), rank over the max, other base model
    const other = await makeModel({ preset: 'tiny', outDir: path.join(outside, 'other'), numAdapters: 2, seed: 1 });
    fs.cpSync(other.adapterDirs[1], path.join(root, 'rank8'), { recursive: true });
    const cfgPath = path.join(root, 'rank8', 'adapter_config.json');
    const cfg = JSON.parse(fs.readFileSync(cfgPath, 'utf8'));
    fs.writeFileSync(cfgPath, JSON.stringify({ ...cfg, base_model_name_or_path: modelName('tiny', 0) }));
    fs.cpSync(path.join(root, 'a0'), path.join(root, 'other-base'), { recursive: true });
    const cfg2Path = path.join(root, 'other-base', 'adapter_config.json');
    fs.writeFileSync(cfg2Path, JSON.stringify({ ...JSON.parse(fs.readFileSync(cfg2Path, 'utf8')), base_model_name_or_path: 'meta-llama/Llama-3.1-8B' }));
    cases.push(['other-base', 'ADAPTER_INCOMPATIBLE', /trained for base model "meta-llama\/Llama-3.1-8B"/]);
    // URLs: not allowed prefix, other scheme, 404, body over the limit
    cases.push([`${baseUrl}/elsewhere/c0.cpeft`, 'INVALID_ARGUMENT', /allowed prefixes/]);
    cases.push(['file:///etc/passwd', 'INVALID_ARGUMENT', /scheme must be http or https/]);
    cases.push([`${baseUrl}/ok/missing.cpeft`, 'ADAPTER_SOURCE_UNAVAILABLE', /HTTP 404/]);
    const small = createAdapterManager(options({ slots: writer, maxAdapterFileBytes: 1 << 20 }));
    expect((await errorOf(small.load({ adapterId: 'h', source: `${baseUrl}/ok/huge.cpeft`, pin: false, tenantId: null }))).code).toBe('ADAPTER_LOAD_FAILED');
    await small.shutdown();

    // A symlink inside the root to a file inside it, in place of a PEFT directory's file: refused (never followed).
    fs.mkdirSync(path.join(root, 'half-in'));
    fs.copyFileSync(path.join(hf.adapterDirs[0], 'adapter_config.json'), path.join(root, 'half-in', 'adapter_config.json'));
    fs.symlinkSync(path.join(root, 'a0', 'adapter_model.safetensors'), path.join(root, 'half-in', 'adapter_model.safetensors'));
    cases.push(['half-in', 'INVALID_ARGUMENT', /"half-in\/adapter_model.safetensors" is a symlink/]);
    for (const [source, code, message] of cases) {
      const err = await errorOf(load(source));
      expect({ source, code: err.code }).toEqual({ source, code });
      expect(err.message).toMatch(message);
      // What the client reads names files below the root: no absolute server path, no list of roots.
      expect({ source, message: err.message.includes(path.dirname(root)) }).toEqual({ source, message: false });
    }
    // same-size model with a different seed has the same shapes: the shape check needs a real mismatch; rank 8 > max 4
    const tight = createAdapterManager(options({ slots: writer, maxRank: 4 }));
    const rankErr = await errorOf(tight.load({ adapterId: 'r', source: 'rank8', pin: false, tenantId: null }));
    expect(rankErr.code).toBe('ADAPTER_INCOMPATIBLE');
    expect(rankErr.message).toMatch(/rank must be <= .* 4. Given: 8/);
    await tight.shutdown();

    expect(await m.list({ tenantId: null })).toEqual([]);
    // still serving: a URL source and a local one
    const viaUrl = await m.load({ adapterId: 'remote', source: `${baseUrl}/ok/c0.cpeft`, pin: false, tenantId: null });
    expect(viaUrl).toMatchObject({ version: 1, rank: 4 });
    expect(typeof (await acquireSettled(m, 'remote'))).toBe('number');
    await m.load({ adapterId: 'good', source: 'a3', pin: false, tenantId: null });
    expect(typeof (await acquireSettled(m, 'good'))).toBe('number');
    // A directory symlink inside the root to an adapter inside it is fine: it resolves (once) to the real directory.
    fs.symlinkSync(path.join(root, 'a2'), path.join(root, 'link-in'));
    expect(await m.load({ adapterId: 'linked', source: 'link-in', pin: false, tenantId: null })).toMatchObject({ version: 1 });
    await m.shutdown();
  });

  test('shape mismatch: an adapter whose tensors do not fit the model is ADAPTER_INCOMPATIBLE naming the tensor', async () => {
    const { writer } = stackWriter(hf, 4);
    const m = createAdapterManager(options({ slots: writer }));
    const dir = path.join(root, 'wrong-shape');
    fs.cpSync(hf.adapterDirs[0], dir, { recursive: true });
    const cfgPath = path.join(dir, 'adapter_config.json');
    const cfg = JSON.parse(fs.readFileSync(cfgPath, 'utf8'));
    fs.writeFileSync(cfgPath, JSON.stringify({ ...cfg, r: cfg.r * 2 })); // declared rank no longer matches the tensors
    const err = await errorOf(m.load({ adapterId: 'w', source: 'wrong-shape', pin: false, tenantId: null }));
    expect(err.code).toBe('ADAPTER_INCOMPATIBLE');
    expect(err.message).toMatch(/has shape \[4,\d+\], expected \[8,\d+\]/);
    await m.shutdown();
  });

  test('pin keeps an adapter resident under churn and must leave one slot unpinned', async () => {
    const { writer } = stackWriter(hf, 3); // 2 usable slots
    const clock = createManualClock(0);
    const m = createAdapterManager(options({ slots: writer, numSlots: 3, clock, newSlotGraceMs: 0 }));
    for (const id of ['a1', 'a2', 'a3']) await m.load({ adapterId: id, source: id, pin: false, tenantId: null });
    await m.load({ adapterId: 'p', source: 'a0', pin: true, tenantId: null });
    expect((await errorOf(m.load({ adapterId: 'q', source: 'a1', pin: true, tenantId: null }))).message).toMatch(/at least one device slot unpinned/);
    const pinnedSlot = (await acquireSettled(m, 'p')) as number;
    m.release('p', pinnedSlot);
    for (const id of ['a1', 'a2', 'a3', 'a1']) {
      clock.advance(5);
      const s = (await acquireSettled(m, id)) as number;
      expect(s).not.toBe(pinnedSlot);
      m.release(id, s);
    }
    expect(m.acquire('p', null)).toBe(pinnedSlot);
    await m.shutdown();
  });

  test('Hugging Face-style org/name ids load and serve; the id rule is the server\'s (field, bound and value in the error)', async () => {
    const { stacks, writer } = stackWriter(hf, 4);
    const m = createAdapterManager(options({ slots: writer }));
    const st = await m.load({ adapterId: 'acme/support-v2', source: 'a1', pin: false, tenantId: 'acme' });
    expect(st).toMatchObject({ adapterId: 'acme/support-v2', version: 1 });
    const slot = (await acquireSettled(m, 'acme/support-v2', 'acme')) as number;
    expect(slotFingerprint(stacks, slot)).toBe(adapterFingerprint(hf.adapterDirs[1]));
    m.release('acme/support-v2', slot);
    for (const bad of ['acme/support/v2', '/x', '.hidden', 'a'.repeat(129)]) {
      const err = await errorOf(m.load({ adapterId: bad, source: 'a1', pin: false, tenantId: 'acme' }));
      expect(err.code).toBe('INVALID_ARGUMENT');
      expect(err.message).toMatch(/^`adapterId` must be .*\. Given: /);
    }
    expect((await m.list({ tenantId: 'acme' })).map((a) => a.adapterId)).toEqual(['acme/support-v2']);
    await m.shutdown();
  });

  test('pins: each tenant gets a share, so one tenant cannot pin every slot; shared adapters count only against the global rule', async () => {
    const { writer } = stackWriter(hf, 8); // 7 usable slots: 6 pinnable
    const m = createAdapterManager(options({ slots: writer, numSlots: 8, maxPinnedPerTenant: 2 }));
    const pin = (adapterId: string, tenantId: string | null, source = 'a0') => m.load({ adapterId, source, pin: true, tenantId });
    await pin('p1', 't1');
    await pin('p2', 't1');
    const over = await errorOf(pin('p3', 't1'));
    expect(over.code).toBe('INVALID_ARGUMENT');
    expect(over.message).toBe('`pin` must keep a tenant at <= 2 pinned adapters (max-pinned-adapters-per-tenant). Given: pin number 3 for tenant "t1"');
    expect((await errorOf(m.get({ adapterId: 'p3', tenantId: 't1' }))).code).toBe('ADAPTER_NOT_FOUND'); // nothing registered
    await m.load({ adapterId: 'p3', source: 'a0', pin: false, tenantId: 't1' }); // unpinned loads are not limited
    expect((await pin('p1', 't1', 'a1')).version).toBe(2); // a reload of a pinned adapter takes no new share
    await pin('q1', 't2'); // another tenant keeps its own share
    await pin('q2', 't2');
    await pin('s1', null); // the operator's shared adapters: only the global rule (one slot stays unpinned)
    await pin('s2', null);
    expect((await errorOf(pin('s3', null))).message).toBe('`pin` must leave at least one device slot unpinned: 6 of 7 usable slots are already pinned');
    await m.unload({ adapterId: 'p2', tenantId: 't1' }); // unloading returns the share
    expect((await errorOf(pin('q3', 't2'))).message).toMatch(/<= 2 pinned adapters .* pin number 3 for tenant "t2"/);
    await pin('p4', 't1');
    const pinned = (await m.list({ tenantId: 't1' })).filter((a) => a.pinned).map((a) => a.adapterId).sort();
    expect(pinned).toEqual(['p1', 'p4', 's1', 's2']);
    await m.shutdown();
  });

  test('default share: half of the pinnable slots, at least one', () => {
    expect(defaultMaxPinnedPerTenant(9)).toBe(3); // 8 usable, 7 pinnable
    expect(defaultMaxPinnedPerTenant(4)).toBe(1);
    expect(defaultMaxPinnedPerTenant(3)).toBe(1);
  });

  test('one state machine: under random loads, reloads, unloads, acquires, releases and host-tier churn, GetAdapter and the slot table always agree and no request gets stale weights', async () => {
    const { stacks, writer } = stackWriter(hf, 4); // 3 usable slots for 5 ids
    const clock = createManualClock(0);
    const probe = createAdapterManager(options({ slots: stackWriter(hf, 2).writer, numSlots: 2 }));
    const oneAdapterBytes = (await probe.load({ adapterId: 'probe', source: 'a0', pin: false, tenantId: null })).sizeBytes;
    await probe.shutdown();
    const m = createAdapterManager(options({ slots: writer, clock, newSlotGraceMs: 5, hostCacheBytes: Math.floor(oneAdapterBytes * 2.5) }));
    const rand = seededRandom(20240611);
    const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)];
    const ids = ['x0', 'x1', 'x2', 'org/x3', 'org/x4'];
    const sources = [0, 1, 2, 3];
    /** What each id serves now (source index), and every reference a "running sequence" holds. */
    const current = new Map<string, number>();
    const held: Array<{ id: string; slot: number; source: number }> = [];
    const ops = { acquired: 0, pending: 0, reloads: 0, unloads: 0 };
    const seen = new Set<string>();

    const checkAgreement = async () => {
      const table = m.slotTable();
      for (const st of await m.list({ tenantId: null })) {
        seen.add(st.state);
        const rows = table.filter((r) => r.adapterId === st.adapterId && r.version === st.version && r.state === 'resident');
        expect({ id: st.adapterId, resident: rows.length }).toEqual({ id: st.adapterId, resident: st.state === 'resident' ? 1 : 0 });
        expect(st.tier === 'device').toBe(st.state === 'resident');
        if (st.state === 'resident') expect(slotFingerprint(stacks, rows[0].slot)).toBe(adapterFingerprint(hf.adapterDirs[current.get(st.adapterId)!]));
      }
      for (const h of held) {
        expect(table.find((r) => r.slot === h.slot)?.refs).toBeGreaterThan(0);
        expect(slotFingerprint(stacks, h.slot)).toBe(adapterFingerprint(hf.adapterDirs[h.source])); // a running sequence's weights never change
      }
      const refs = table.reduce((n, r) => n + r.refs, 0);
      expect(refs).toBe(held.length);
      for (const r of table) if (r.adapterId !== null && !current.has(r.adapterId)) expect(r.refs).toBeGreaterThan(0); // unloaded: only held slots remain
    };

    for (let step = 0; step < 300; step++) {
      const op = rand();
      const id = pick(ids);
      if (op < 0.25) {
        const source = pick(sources);
        const st = await m.load({ adapterId: id, source: `a${source}`, pin: false, tenantId: null });
        if (current.has(id)) ops.reloads++;
        current.set(id, source);
        expect(st.adapterId).toBe(id);
      } else if (op < 0.32 && current.has(id)) {
        await m.unload({ adapterId: id, tenantId: null });
        current.delete(id);
        ops.unloads++;
        expect((m.acquire(id, null) as TesseraError).code).toBe('ADAPTER_NOT_FOUND');
      } else if (op < 0.7 && current.has(id)) {
        const r = await acquireSettledOrBusy(m, id);
        if (typeof r === 'number') {
          held.push({ id, slot: r, source: current.get(id)! });
          expect(slotFingerprint(stacks, r)).toBe(adapterFingerprint(hf.adapterDirs[current.get(id)!]));
          ops.acquired++;
        } else ops.pending++;
      } else if (held.length > 0) {
        const [h] = held.splice(Math.floor(rand() * held.length), 1);
        m.release(h.id, h.slot);
      }
      clock.advance(Math.floor(rand() * 4));
      await checkAgreement();
    }
    expect(ops.acquired).toBeGreaterThan(20);
    expect(ops.reloads).toBeGreaterThan(5);
    expect(ops.unloads).toBeGreaterThan(3);
    for (const state of ['resident', 'cached', 'evicted']) expect(seen).toContain(state); // device and host churn happened
    for (const h of held.splice(0)) m.release(h.id, h.slot);
    await checkAgreement();
    await m.shutdown();
  });
});

/** Like acquireSettled, but gives up while every slot stays busy (held by this test's "running sequences"). */
async function acquireSettledOrBusy(m: { acquire(id: string, t: string | null): number | 'pending' | TesseraError }, id: string): Promise<number | 'pending'> {
  for (let i = 0; i < 50; i++) {
    const r = m.acquire(id, null);
    if (r instanceof TesseraError) throw r;
    if (r !== 'pending') return r;
    await new Promise((resolve) => setTimeout(resolve, 1));
  }
  return 'pending';
}
