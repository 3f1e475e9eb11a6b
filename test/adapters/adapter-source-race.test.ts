/**
 * The adapter-root check against a hostile file system: a thread that keeps swapping a directory under the root for a
 * symlink to a directory outside it (and back, with a moment where the path is missing) while LoadAdapter reads from
 * beneath that directory. Every load must either read the inside adapter or fail with the one code a missing source
 * gets (INVALID_ARGUMENT); the outside adapter (told apart by its rank) must never be loaded.
 */
import fs from 'node:fs';
import path from 'node:path';
import { Worker } from 'node:worker_threads';
import { beforeAll, describe, expect, onTestFinished, test } from 'vitest';
import { createAdapterManager, type DeviceSlotWriter } from '../../src/adapters/adapter-manager.ts';
import { compressAdapterDir } from '../../src/adapters/compeft/compress-command.ts';
import { TesseraError } from '../../src/errors.ts';
import { makeModel, modelName, type MadeModel } from '../../src/model/checkpoint/make-model.ts';
import { tempDir } from '../helpers/tiny-model.ts';

/** Swaps `swap` (a real directory) for a symlink to `target` and back, as fast as it can, until told to stop. */
const SWAPPER = `
const { workerData } = require('node:worker_threads');
const fs = require('node:fs');
const { swap, parked, target, stop, counts } = workerData;
const flag = new Int32Array(stop);
const n = new Int32Array(counts);
// Each state lasts about as long as a load (~1 ms), so loads keep meeting swaps in every phase.
while (Atomics.load(flag, 0) === 0) {
  fs.renameSync(swap, parked);
  fs.symlinkSync(target, swap);
  Atomics.wait(flag, 0, 0, 0.5);
  fs.unlinkSync(swap);
  fs.renameSync(parked, swap);
  Atomics.wait(flag, 0, 0, 1);
  Atomics.add(n, 0, 1);
}
`;

const writer: DeviceSlotWriter = { loadAdapterSlot: async () => {}, clearAdapterSlot: async () => {} };
let hf: MadeModel;
let root: string;
let outside: string;

beforeAll(async () => {
  const dir = tempDir('adapter-race');
  hf = await makeModel({ preset: 'tiny', outDir: path.join(dir, 'hf'), numAdapters: 2, seed: 0 });
  root = path.join(dir, 'root');
  outside = path.join(dir, 'outside');
  // Inside: rank 4 (adapter 0). Outside, at the same relative paths: rank 8 (adapter 1).
  for (const [base, adapter] of [[path.join(root, 'sub'), hf.adapterDirs[0]], [path.join(outside, 'sub'), hf.adapterDirs[1]]] as const) {
    fs.mkdirSync(base, { recursive: true });
    fs.cpSync(adapter, path.join(base, 'peft'), { recursive: true });
    await compressAdapterDir({ adapterDir: adapter, config: hf.config, density: 0.3, alpha: 'auto', outFile: path.join(base, 'c.cpeft') });
  }
}, 60_000);

function startSwapper(): { stop(): Promise<number> } {
  const stop = new SharedArrayBuffer(4);
  const counts = new SharedArrayBuffer(4);
  const worker = new Worker(SWAPPER, { eval: true, workerData: { swap: path.join(root, 'sub'), parked: path.join(root, 'sub.parked'), target: path.join(outside, 'sub'), stop, counts } });
  const exited = new Promise<void>((resolve, reject) => {
    worker.once('exit', () => resolve());
    worker.once('error', reject);
  });
  let stopped: Promise<number> | null = null;
  const stopSwapper = () =>
    (stopped ??= (async () => {
      Atomics.store(new Int32Array(stop), 0, 1);
      await exited;
      return new Int32Array(counts)[0];
    })());
  onTestFinished(async () => {
    await stopSwapper();
  });
  return { stop: stopSwapper };
}

describe('adapter root vs a directory <-> symlink swap racing the load', () => {
  test('every load reads the inside adapter or fails with INVALID_ARGUMENT; the outside one is never loaded', async () => {
    const m = createAdapterManager({ slots: writer, config: hf.config, modelId: `${modelName('tiny', 0)}@0123456789ab`, numSlots: 2, maxRank: 8, hostCacheBytes: 1 << 20, allowedRoots: [root] });
    onTestFinished(() => m.shutdown());
    const swapper = startSwapper();
    const ranks = new Map<number, number>();
    const errors = new Map<string, number>();
    const messages = new Set<string>();
    const sources = ['sub/peft', 'sub/c.cpeft'];
    // Enough loads that the old check-then-read-by-path code loaded outside weights many times (~5% of loads); stop
    // early once both outcomes were seen often enough to show the race ran.
    for (let i = 0; i < 3000; i++) {
      try {
        const status = await m.load({ adapterId: 'racer', source: sources[i % 2], pin: false, tenantId: null });
        ranks.set(status.rank, (ranks.get(status.rank) ?? 0) + 1);
      } catch (err) {
        messages.add((err as Error).message);
        const code = err instanceof TesseraError ? err.code : `not a TesseraError (${(err as NodeJS.ErrnoException).code})`;
        const key = `${code}: ${(err as Error).message.replace(/"[^"]*"/g, '"…"')}`;
        errors.set(key, (errors.get(key) ?? 0) + 1);
      }
      const failed = [...errors.values()].reduce((a, b) => a + b, 0);
      if (i >= 1000 && failed >= 50 && (ranks.get(4) ?? 0) >= 50) break;
    }
    const swaps = await swapper.stop();
    console.info(`adapter race: ${swaps} swaps; loaded by rank ${JSON.stringify(Object.fromEntries(ranks))}; errors ${JSON.stringify(Object.fromEntries(errors))}`);
    expect(ranks.get(8) ?? 0).toBe(0); // never the outside adapter
    expect(ranks.get(4) ?? 0).toBeGreaterThan(0);
    // The race was exercised: some loads met the swap, and every one of those got the same code.
    expect(errors.size).toBeGreaterThan(0);
    expect([...errors.keys()].every((k) => k.startsWith('INVALID_ARGUMENT: '))).toBe(true);
    // No absolute server path in what a client would read.
    for (const message of messages) expect(message).not.toContain(path.dirname(root));
    // Settled again: the inside adapter loads.
    expect((await m.load({ adapterId: 'racer', source: 'sub/peft', pin: false, tenantId: null })).rank).toBe(4);
  }, 120_000);
});
