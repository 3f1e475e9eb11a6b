import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, expect, onTestFinished, test } from 'vitest';
import { readPeftAdapter } from '../../src/adapters/peft/peft-adapter.ts';
import { isTesseraError } from '../../src/errors.ts';
import { ShardController } from '../../src/parallel/controller.ts';
import { grpcLinks, ThreadLink } from '../../src/parallel/shard-link.ts';
import { tinyModel } from '../helpers/tiny-model.ts';
import { driveGreedy, maxAbsDiff } from './shard-driver.ts';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const PROMPTS = [
  [3, 17, 42, 5, 99, 7],
  [5, 6, 7],
  [200, 201, 202, 203],
];
const SLOTS = [0, 1, 1];
const BLOCK = 8;
const base = { kvCacheBytes: 2 << 20, blockSizeTokens: BLOCK, numAdapterSlots: 2, maxAdapterRank: 16, intraOpThreads: 1 };

/** Starts a worker process on `listen`; resolves with its bound address. */
function startWorkerProcess(listen = '127.0.0.1:0'): Promise<{ child: ChildProcess; address: string }> {
  const child = spawn(process.execPath, ['bin/run-ts.mjs', 'test/parallel/remote-worker-main.ts', listen], { cwd: ROOT, stdio: ['ignore', 'pipe', 'inherit'] });
  onTestFinished(() => {
    if (child.exitCode === null) child.kill('SIGKILL');
  });
  return new Promise((resolve, reject) => {
    let out = '';
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      const m = out.match(/listening (\S+)/);
      if (m) resolve({ child, address: m[1] });
    });
    child.once('exit', (code) => reject(new Error(`worker process exited with ${code}`)));
  });
}

async function expectUnavailable(p: Promise<unknown>): Promise<void> {
  const err = await p.then(
    () => null,
    (e: unknown) => e,
  );
  expect(isTesseraError(err) && err.code).toBe('WORKER_UNAVAILABLE');
}

describe('remote shard workers and worker faults', async () => {
  const { hf, convertedDir } = await tinyModel({ quant: 'fp32', numAdapters: 1 });
  const adapter = readPeftAdapter(hf.adapterDirs[0], hf.config);
  const one = await ShardController.start({ modelDir: convertedDir, ...base });
  await one.loadAdapterSlot(1, adapter);
  const reference = await driveGreedy(one, PROMPTS, SLOTS, 3, BLOCK);
  await one.shutdown();

  test('TP=2 over two worker processes on loopback == world size 1; killing one fails in-flight steps, then it reconnects', async () => {
    const workers = await Promise.all([startWorkerProcess(), startWorkerProcess()]);
    const health: boolean[] = [];
    const controller = await ShardController.start({
      modelDir: convertedDir,
      tp: 2,
      ...base,
      openLink: grpcLinks(workers.map((w) => w.address)),
      callTimeoutMs: 5000,
      restartDelayMs: 100,
      onHealth: (serving) => health.push(serving),
    });
    onTestFinished(() => controller.shutdown());
    await controller.loadAdapterSlot(1, adapter);
    const remote = await driveGreedy(controller, PROMPTS, SLOTS, 3, BLOCK);
    expect(remote.tokens).toEqual(reference.tokens);
    remote.logits.forEach((rows, step) => {
      for (const [seqId, row] of rows) expect(maxAbsDiff(row, reference.logits[step].get(seqId)!)).toBeLessThanOrEqual(1e-4);
    });

    // Kill worker 1 while a step is in flight: the step fails with WORKER_UNAVAILABLE (no hang), health drops.
    const started = performance.now();
    const failed = expectUnavailable(driveGreedy(controller, PROMPTS, SLOTS, 50, BLOCK));
    workers[1].child.kill('SIGKILL');
    await failed;
    expect(performance.now() - started).toBeLessThan(5000);
    expect(health).toEqual([false]);
    await expectUnavailable(controller.execute({ stepId: 99, sequences: [] }));

    // Restart the process on the same address: the controller reconnects, re-sends the shard and the adapter.
    await startWorkerProcess(workers[1].address);
    await controller.whenServing();
    expect(health).toEqual([false, true]);
    const after = await driveGreedy(controller, PROMPTS, SLOTS, 3, BLOCK);
    expect(after.tokens).toEqual(reference.tokens);
  });

  test('PP=2 over threads: a killed thread fails the step with WORKER_UNAVAILABLE, is restarted, and service resumes', async () => {
    const health: boolean[] = [];
    const controller = await ShardController.start({ modelDir: convertedDir, pp: 2, ...base, onHealth: (s) => health.push(s) });
    onTestFinished(() => controller.shutdown());
    await controller.loadAdapterSlot(1, adapter);
    const failed = expectUnavailable(driveGreedy(controller, PROMPTS, SLOTS, 50, BLOCK));
    await new Promise((r) => setTimeout(r, 20));
    await (controller.links()[1] as ThreadLink).kill('test kill');
    await failed;
    await controller.whenServing();
    expect(health).toEqual([false, true]);
    const after = await driveGreedy(controller, PROMPTS, SLOTS, 3, BLOCK);
    expect(after.tokens).toEqual(reference.tokens);
  });
});
