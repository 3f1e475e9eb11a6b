/** Worker-thread entry: hosts one shard and answers the controller's messages in order over the parent port. */
import { parentPort } from 'node:worker_threads';
import { ShardWorkerHost } from './shard-worker.ts';
import type { ControllerMessage, WorkerMessage } from './wire.ts';

const port = parentPort!;
const host = new ShardWorkerHost();

port.on('message', (msg: ControllerMessage) => {
  host.submit(msg, (answer: WorkerMessage) => {
    // Big outputs move, never copy: the result buffer is transferred to the controller.
    const transfer: ArrayBuffer[] = [];
    if (answer.type === 'result') {
      const out = answer.reply.output;
      if (out.buffer instanceof ArrayBuffer && out.byteOffset === 0 && out.byteLength === out.buffer.byteLength) transfer.push(out.buffer);
      else answer.reply.output = out.slice();
    }
    port.postMessage(answer, transfer);
    if (msg.type === 'shutdown') port.close();
  });
});
