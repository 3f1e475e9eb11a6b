/** Worker-thread entry: hosts one ModelRunner and answers the controller's messages in order. */
import { parentPort, workerData } from 'node:worker_threads';
import { isTesseraError } from '../errors.ts';
import { ModelRunner } from '../model/runner/model-runner.ts';
import { decodeCompeftIntoSlot } from '../adapters/slot-decode-compeft.ts';
import type { ControllerMessage, RunnerWorkerData, WorkerMessage } from './wire.ts';

const port = parentPort!;
const data = workerData as RunnerWorkerData;
const send = (msg: WorkerMessage, transfer: ArrayBuffer[] = []) => port.postMessage(msg, transfer);

let runner: ModelRunner;
try {
  runner = await ModelRunner.create(data.runner);
  send({ type: 'ready', layout: runner.layout, memory: runner.memory(), modelId: runner.manifest.modelId });
} catch (err) {
  send({ type: 'init-error', code: isTesseraError(err) ? err.code : 'INTERNAL', message: (err as Error).message });
  process.exit(1);
}

// Messages are handled one at a time: a step never overlaps an adapter write.
let queue: Promise<void> = Promise.resolve();
port.on('message', (msg: ControllerMessage) => {
  queue = queue.then(() => handle(msg));
});

async function handle(msg: ControllerMessage): Promise<void> {
  try {
    switch (msg.type) {
      case 'execute': {
        const result = await runner.execute(msg.plan);
        const buffer = result.logits.buffer as ArrayBuffer;
        send({ type: 'result', id: msg.id, result }, [buffer]);
        return;
      }
      case 'load-adapter':
        runner.loadAdapterSlot(msg.slot, msg.weights);
        send({ type: 'done', id: msg.id });
        return;
      case 'load-compressed-adapter':
        decodeCompeftIntoSlot(msg.bytes, runner.manifest.config, msg.slot, (rank, scale, fill) => runner.fillAdapterSlot(msg.slot, rank, scale, fill));
        send({ type: 'done', id: msg.id });
        return;
      case 'clear-adapter':
        runner.clearAdapterSlot(msg.slot);
        send({ type: 'done', id: msg.id });
        return;
      case 'shutdown':
        await runner.release();
        send({ type: 'done', id: msg.id });
        port.close();
        return;
    }
  } catch (err) {
    send({ type: 'error', id: msg.id, code: isTesseraError(err) ? err.code : 'INTERNAL', message: (err as Error).message });
  }
}
