import * as grpc from '@grpc/grpc-js';
import { TesseraError } from '../errors.ts';
import { ShardWorkerHost } from './shard-worker.ts';
import { decodeControllerFrame, encodeWorkerMessage, shardServiceClient } from './shard-grpc.ts';

export interface RunningShardServer {
  /** The bound address, port read back (listen on port 0 to get a free one). */
  address: string;
  shutdown(): Promise<void>;
}

/**
 * A remote shard worker: the tessera.shard.v1 service in front of the same ShardWorkerHost the worker threads use.
 * One controller stream at a time owns the shard; a new stream (controller reconnect) replaces the old one.
 */
export async function startShardServer(options: { listen: string }): Promise<RunningShardServer> {
  const server = new grpc.Server({ 'grpc.max_receive_message_length': -1, 'grpc.max_send_message_length': -1 });
  let current: grpc.ServerDuplexStream<unknown, unknown> | null = null;
  server.addService(shardServiceClient().service, {
    Connect(call: grpc.ServerDuplexStream<unknown, unknown>) {
      if (current) current.end();
      current = call;
      const host = new ShardWorkerHost();
      call.on('data', (frame: Record<string, unknown>) => {
        let msg;
        try {
          msg = decodeControllerFrame(frame);
        } catch (err) {
          call.write({ id: Number(frame.id), error: { code: 'INVALID_ARGUMENT', message: (err as Error).message } });
          return;
        }
        host.submit(msg, (answer) => {
          if (!call.writableEnded && !call.destroyed) call.write(encodeWorkerMessage(answer));
        });
      });
      const release = () => {
        host.submit({ type: 'shutdown', id: 0 }, () => {});
        if (current === call) current = null;
      };
      call.on('end', () => {
        release();
        call.end();
      });
      call.on('error', release);
    },
  });
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync(options.listen, grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(new TesseraError('CONFIG_INVALID', `cannot listen on ${options.listen}: ${err.message}`)) : resolve(p))),
  );
  const host = options.listen.slice(0, options.listen.lastIndexOf(':'));
  let stopped: Promise<void> | null = null;
  return {
    address: `${host}:${port}`,
    shutdown() {
      stopped ??= new Promise<void>((resolve) => {
        current?.end();
        server.tryShutdown(() => resolve());
        setTimeout(() => {
          server.forceShutdown();
          resolve();
        }, 2000).unref();
      });
      return stopped;
    },
  };
}
