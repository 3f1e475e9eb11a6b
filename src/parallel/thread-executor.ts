import type { Worker } from 'node:worker_threads';
import { TesseraError } from '../errors.ts';
import type { Executor, ExecutorLayout, StepPlan, StepResult } from '../engine/executor.ts';
import type { LoraWeights } from '../model/runner/adapter-slot-stacks.ts';
import type { RunnerMemory, RunnerOptions } from '../model/runner/model-runner.ts';
import { startTsWorker } from '../util/ts-worker.ts';
import type { ControllerMessage, RunnerWorkerData, WorkerMessage } from './wire.ts';

type Pending = { resolve: (msg: WorkerMessage) => void; reject: (err: Error) => void };

/**
 * The engine's Executor for a model that runs in one worker thread on this host (world size 1): the main thread
 * stays free for gRPC and scheduling while ORT runs. A worker that dies fails every pending call with
 * WORKER_UNAVAILABLE instead of hanging.
 */
export class ThreadExecutor implements Executor {
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  private dead: TesseraError | null = null;
  private shutdownPromise: Promise<void> | null = null;

  private constructor(
    private readonly worker: Worker,
    readonly layout: ExecutorLayout,
    readonly memory: RunnerMemory,
    readonly modelId: string,
  ) {
    worker.on('message', (msg: WorkerMessage) => {
      if (!('id' in msg)) return;
      const p = this.pending.get(msg.id);
      if (!p) return;
      this.pending.delete(msg.id);
      if (msg.type === 'error') p.reject(new TesseraError(msg.code, msg.message));
      else p.resolve(msg);
    });
    const fail = (reason: string) => {
      this.dead = new TesseraError('WORKER_UNAVAILABLE', `model worker stopped: ${reason}`);
      for (const p of this.pending.values()) p.reject(this.dead);
      this.pending.clear();
    };
    worker.on('error', (err) => fail(err.message));
    worker.on('exit', (code) => fail(`exit code ${code}`));
  }

  static async start(options: RunnerOptions): Promise<ThreadExecutor> {
    const data: RunnerWorkerData = { runner: options };
    const worker = startTsWorker(new URL('./runner-worker.ts', import.meta.url), data as unknown as Record<string, unknown>);
    const first = await new Promise<WorkerMessage>((resolve, reject) => {
      worker.once('message', resolve);
      worker.once('error', reject);
      worker.once('exit', (code) => reject(new TesseraError('WORKER_UNAVAILABLE', `model worker exited with code ${code} while starting`)));
    });
    if (first.type === 'init-error') {
      await worker.terminate();
      throw new TesseraError(first.code, first.message);
    }
    if (first.type !== 'ready') throw new TesseraError('INTERNAL', `unexpected first worker message ${first.type}`);
    return new ThreadExecutor(worker, first.layout, first.memory, first.modelId);
  }

  async execute(plan: StepPlan): Promise<StepResult> {
    const reply = await this.call({ type: 'execute', id: 0, plan });
    if (reply.type !== 'result') throw new TesseraError('INTERNAL', `unexpected worker reply ${reply.type}`);
    return reply.result;
  }

  async loadAdapterSlot(slot: number, weights: LoraWeights): Promise<void> {
    await this.call({ type: 'load-adapter', id: 0, slot, weights });
  }

  /** Sends a `.cpeft` file's bytes; the worker checks and decodes them straight into the slot (no dense copy here). */
  async loadCompressedSlot(slot: number, bytes: Uint8Array): Promise<void> {
    const copy = bytes.slice();
    await this.call({ type: 'load-compressed-adapter', id: 0, slot, bytes: copy }, [copy.buffer]);
  }

  async clearAdapterSlot(slot: number): Promise<void> {
    await this.call({ type: 'clear-adapter', id: 0, slot });
  }

  shutdown(): Promise<void> {
    this.shutdownPromise ??= (async () => {
      if (!this.dead) {
        try {
          await this.call({ type: 'shutdown', id: 0 });
        } catch {
          // already gone: nothing to release
        }
      }
      await this.worker.terminate();
    })();
    return this.shutdownPromise;
  }

  private call(msg: ControllerMessage, transfer: ArrayBuffer[] = []): Promise<WorkerMessage> {
    if (this.dead) return Promise.reject(this.dead);
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.worker.postMessage({ ...msg, id }, transfer);
    });
  }
}
