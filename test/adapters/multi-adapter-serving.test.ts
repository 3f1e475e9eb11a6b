/**
 * Many adapters in one batch on the real engine and the real model worker (tiny checkpoint, fp32, greedy):
 *   - 8 adapters + base in one batch == each alone == `tessera generate --adapter` (a PEFT directory or a .cpeft file);
 *   - hot swap: 32 adapters through 8 slots under concurrent load, every answer is its own adapter's.
 */
import { execFile } from 'node:child_process';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, describe, expect, test } from 'vitest';
import { compressAdapterDir } from '../../src/adapters/compeft/compress-command.ts';
import { createAdapterManager, type AdapterManager, type DeviceSlotWriter } from '../../src/adapters/adapter-manager.ts';
import { createEngine, type Engine } from '../../src/engine/engine.ts';
import type { ValidGenerateRequest } from '../../src/engine/request.ts';
import { collect, GREEDY } from '../../src/engine/testing/index.ts';
import { readManifest } from '../../src/model/converted-model.ts';
import { ThreadExecutor } from '../../src/parallel/thread-executor.ts';
import { tempDir, tinyModel } from '../helpers/tiny-model.ts';

const NUM_ADAPTERS = 32;
const MAX_NEW_TOKENS = 6;
const PROMPT = [3, 17, 42, 5, 99, 7, 250, 11];

function request(id: string, adapterId: string | null, prompt = PROMPT): ValidGenerateRequest {
  return {
    requestId: id,
    promptTokenIds: prompt,
    adapterId,
    tenantId: null,
    sampling: GREEDY,
    stopping: { maxNewTokens: MAX_NEW_TOKENS, stopSequences: [], stopTokenIds: [], ignoreEos: true },
    topNLogprobs: 0,
    deadlineMs: null,
  };
}

/** The real executor's slot writes, counted. */
function counted(executor: ThreadExecutor) {
  const counts = { writes: 0 };
  const slots: DeviceSlotWriter = {
    loadAdapterSlot: (slot, w) => (counts.writes++, executor.loadAdapterSlot(slot, w)),
    loadCompressedSlot: (slot, b) => (counts.writes++, executor.loadCompressedSlot(slot, b)),
    clearAdapterSlot: (slot) => executor.clearAdapterSlot(slot),
  };
  return { slots, counts };
}

describe('multi-adapter serving (tiny model, fp32, real engine and worker)', async () => {
  const { hf, convertedDir } = await tinyModel({ quant: 'fp32', numAdapters: NUM_ADAPTERS });
  const adaptersDir = path.join(hf.outDir, 'adapters');
  const modelId = readManifest(convertedDir).modelId;
  const executor = await ThreadExecutor.start({ modelDir: convertedDir, kvCacheBytes: 16 << 20, blockSizeTokens: 8, numAdapterSlots: 9, maxAdapterRank: 8, intraOpThreads: 1 });
  const { slots, counts } = counted(executor);
  const manager: AdapterManager = createAdapterManager({ slots, config: hf.config, modelId, numSlots: 9, maxRank: 8, hostCacheBytes: 1 << 20, allowedRoots: [adaptersDir] });
  const ids = manager.registerDirectory(adaptersDir, { tenantId: null });
  const engine: Engine = createEngine({ executor, detokenizer: null, eosTokenIds: hf.config.eosTokenIds, adapterSlots: manager, maxRunningSequences: 16 });
  afterAll(async () => {
    await engine.shutdown();
    await manager.shutdown();
    await executor.shutdown();
  });
  const run = async (id: string, adapterId: string | null) => (await collect(engine.submit(request(id, adapterId)))).tokenIds;

  test('registers every generated adapter at boot', () => {
    expect(ids).toHaveLength(NUM_ADAPTERS);
  });

  test('8 adapters + base in one batch: each row == its alone result == `tessera generate --adapter`', async () => {
    const chosen = ids.slice(0, 8);
    const alone = new Map<string | null, number[]>();
    alone.set(null, await run('alone-base', null));
    for (const id of chosen) alone.set(id, await run(`alone-${id}`, id));
    // the adapters matter: not all alone results are the base result
    expect(chosen.filter((id) => alone.get(id)!.join() !== alone.get(null)!.join()).length).toBeGreaterThanOrEqual(6);

    const writesBefore = counts.writes;
    const streams = [null, ...chosen].map((id, i) => ({ id, stream: engine.submit(request(`batch-${i}`, id)) }));
    const batched = await Promise.all(streams.map(async ({ id, stream }) => ({ id, tokens: (await collect(stream)).tokenIds })));
    expect(counts.writes).toBe(writesBefore); // all resident: one batch, no reload
    for (const { id, tokens } of batched) expect({ id, tokens }).toEqual({ id, tokens: alone.get(id) });

    // the CLI on the HF checkpoint (own conversion, own single-slot engine) prints the same tokens (two adapters: ranks 4 and 8)
    const cacheDir = tempDir('cli-cache');
    for (const id of chosen.slice(0, 2)) {
      const { stdout } = await promisify(execFile)(
        process.execPath,
        ['bin/tessera.mjs', 'generate', '--model', hf.outDir, '--adapter', path.join(adaptersDir, id), '--prompt-ids', PROMPT.join(','), '--quant', 'fp32', '--json', '--max-tokens', String(MAX_NEW_TOKENS), '--ignore-eos'],
        { env: { ...process.env, TESSERA_CACHE_DIR: cacheDir }, timeout: 60_000 },
      );
      const cli = JSON.parse(stdout.trim().split('\n').pop()!) as { tokens: Array<{ id: number }> };
      expect({ id, tokens: cli.tokens.map((t) => t.id) }).toEqual({ id, tokens: alone.get(id) });
    }

    // a .cpeft file: the CLI loads it as the server does, and answers what the server answers with it
    const cpeft = path.join(adaptersDir, `${chosen[0]}-compressed.cpeft`);
    await compressAdapterDir({ adapterDir: path.join(adaptersDir, chosen[0]), config: hf.config, density: 0.3, alpha: 'auto', outFile: cpeft });
    await manager.load({ adapterId: 'compressed', source: cpeft, pin: false, tenantId: null });
    const served = await run('served-cpeft', 'compressed');
    expect(served).not.toEqual(alone.get(null));
    const { stdout } = await promisify(execFile)(
      process.execPath,
      ['bin/tessera.mjs', 'generate', '--model', hf.outDir, '--adapter', cpeft, '--prompt-ids', PROMPT.join(','), '--quant', 'fp32', '--json', '--max-tokens', String(MAX_NEW_TOKENS), '--ignore-eos'],
      { env: { ...process.env, TESSERA_CACHE_DIR: cacheDir }, timeout: 60_000 },
    );
    expect((JSON.parse(stdout.trim().split('\n').pop()!) as { tokens: Array<{ id: number }> }).tokens.map((t) => t.id)).toEqual(served);
  }, 180_000);

  test('hot swap: 32 adapters through 8 slots under concurrent load; loads and evictions happen, no request fails or gets another adapter', async () => {
    const expected = new Map<string, string>();
    for (const id of ids) expected.set(id, (await run(`ref-${id}`, id)).join());
    const base = (await run('ref-base', null)).join();
    // adapters whose greedy answer is unique among all (and differs from base): a mix-up would be visible
    const counts2 = new Map<string, number>();
    for (const v of expected.values()) counts2.set(v, (counts2.get(v) ?? 0) + 1);
    const distinct = ids.filter((id) => counts2.get(expected.get(id)!) === 1 && expected.get(id) !== base);
    expect(distinct.length).toBeGreaterThanOrEqual(16);

    const writesBefore = counts.writes;
    let seed = 12345;
    const pick = () => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return distinct[Math.floor(seed / 65536) % distinct.length];
    };
    const jobs: Array<Promise<{ id: string; tokens: string; reason: string }>> = [];
    for (let wave = 0; wave < 6; wave++) {
      for (let i = 0; i < 16; i++) {
        const id = pick();
        jobs.push(collect(engine.submit(request(`load-${wave}-${i}`, id))).then((g) => ({ id, tokens: g.tokenIds.join(), reason: g.reason })));
      }
      await new Promise((resolve) => setTimeout(resolve, 5)); // waves overlap: new adapters arrive while others run
    }
    const results = await Promise.all(jobs);
    for (const r of results) expect(r).toEqual({ id: r.id, tokens: expected.get(r.id), reason: 'length' });
    const loads = counts.writes - writesBefore;
    expect(new Set(results.map((r) => r.id)).size).toBeGreaterThan(8);
    expect(loads).toBeGreaterThan(8); // more loads than slots: slots were evicted and reused
    const table = manager.slotTable();
    expect(table.every((s) => s.refs === 0)).toBe(true); // every reference released
  }, 120_000);
});
