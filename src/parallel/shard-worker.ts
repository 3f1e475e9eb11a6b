import { isTesseraError, TesseraError } from '../errors.ts';
import type { ExecutorLayout } from '../engine/executor.ts';
import { ShardRunner } from './shard-runner.ts';
import { WholeModelShardRunner } from './whole-model-shard-runner.ts';
import type { ControllerMessage, WorkerMessage } from './wire.ts';

/**
 * The worker side of the shard protocol, shared by both transports: the whole model's StepRunner of the spec's runner
 * kind (WholeModelShardRunner) or one shard of a split model (ShardRunner); messages answered strictly in arrival
 * order (a step never overlaps an adapter write, and pipeline micro-batches keep their order).
 */
export class ShardWorkerHost {
  private runner: ShardRunner | WholeModelShardRunner | null = null;
  private queue: Promise<void> = Promise.resolve();

  /** Queues a message; `reply` is called once with the answer. */
  submit(msg: ControllerMessage, reply: (answer: WorkerMessage) => void): void {
    this.queue = this.queue.then(async () => reply(await this.handle(msg)));
  }

  async handle(msg: ControllerMessage): Promise<WorkerMessage> {
    try {
      switch (msg.type) {
        case 'init': {
          if (this.runner) await this.runner.release();
          this.runner = null;
          const p = msg.spec.position;
          this.runner = p.tpSize === 1 && p.numStages === 1 ? await WholeModelShardRunner.create(msg.spec) : await ShardRunner.create(msg.spec);
          const c = this.runner.manifest.config;
          // What the runner can do beyond single host-sampled steps (a whole-model runner's own layout says).
          const can: Partial<ExecutorLayout> = this.runner instanceof WholeModelShardRunner ? this.runner.runner.layout : {};
          return {
            type: 'ready',
            id: msg.id,
            memory: this.runner.memory(),
            modelId: this.runner.manifest.modelId,
            layout: {
              vocabSize: c.vocabSize,
              maxContextTokens: c.maxPositionEmbeddings,
              numAdapterSlots: msg.spec.numAdapterSlots,
              ...(can.maxDecodeStepsPerRun !== undefined ? { maxDecodeStepsPerRun: can.maxDecodeStepsPerRun } : {}),
              ...(can.samplesInGraph === true ? { samplesInGraph: true } : {}),
            },
          };
        }
        case 'run':
          return { type: 'result', id: msg.id, reply: await this.ready().run(msg.run) };
        case 'load-adapter':
          await this.ready().loadAdapterSlot(msg.slot, msg.weights);
          return { type: 'done', id: msg.id };
        case 'load-compressed-adapter':
          await this.ready().loadCompressedSlot(msg.slot, msg.bytes);
          return { type: 'done', id: msg.id };
        case 'clear-adapter':
          await this.ready().clearAdapterSlot(msg.slot);
          return { type: 'done', id: msg.id };
        case 'shutdown':
          await this.runner?.release();
          this.runner = null;
          return { type: 'done', id: msg.id };
      }
    } catch (err) {
      return { type: 'error', id: msg.id, code: isTesseraError(err) ? err.code : 'INTERNAL', message: (err as Error).message };
    }
  }

  private ready(): ShardRunner | WholeModelShardRunner {
    if (!this.runner) throw new TesseraError('WORKER_UNAVAILABLE', 'shard worker has no model loaded (init first)');
    return this.runner;
  }
}
