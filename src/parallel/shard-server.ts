import * as grpc from '@grpc/grpc-js';
import { TesseraError } from '../errors.ts';
import { checkController, LEASE_FREE_IN_TRAILER, LEASE_HEADER, serverCredentials, type ShardServerSecurity } from './shard-auth.ts';
import { ShardLease } from './shard-lease.ts';
import { ShardWorkerHost } from './shard-worker.ts';
import { decodeControllerFrame, encodeWorkerMessage, shardServiceClient } from './shard-grpc.ts';

export interface RunningShardServer {
  /** The bound address, port read back (listen on port 0 to get a free one). */
  address: string;
  /** The controller this worker belongs to now, if any. */
  holder(): { controllerId: string; connected: boolean } | null;
  shutdown(): Promise<void>;
}

export interface ShardServerOptions extends Partial<ShardServerSecurity> {
  listen: string;
  /** How long a controller whose connection dropped keeps this worker (shard-lease.ts). Default 15 s. */
  leaseMs?: number;
  /** HTTP/2 keepalive pings to the controller, so a vanished one is noticed and its lease starts to run out. Default 10 s. */
  keepaliveMs?: number;
  /** Lines for the operator (refused controllers, who holds the worker). */
  log?: (line: string) => void;
}

const REFUSAL_LOG_INTERVAL_MS = 10_000;

type Call = grpc.ServerDuplexStream<unknown, unknown>;

/**
 * A remote shard worker: the tessera.shard.v1 service in front of the same ShardWorkerHost the worker threads use.
 * Each Connect call is checked (shared secret, controller id; mutual TLS is checked by the TLS handshake before it)
 * and then leased: the worker serves one controller at a time, a second one is refused with FAILED_PRECONDITION and
 * does not disturb the first. A refusal never touches the model.
 */
export async function startShardServer(options: ShardServerOptions): Promise<RunningShardServer> {
  const security: ShardServerSecurity = { tls: options.tls ?? null, secret: options.secret ?? null };
  const keepaliveMs = options.keepaliveMs ?? 10_000;
  const server = new grpc.Server({
    'grpc.max_receive_message_length': -1,
    'grpc.max_send_message_length': -1,
    'grpc.keepalive_time_ms': keepaliveMs,
    'grpc.keepalive_timeout_ms': Math.max(1000, Math.floor(keepaliveMs / 2)),
  });
  const lease = new ShardLease<Call>({ leaseMs: options.leaseMs ?? 15_000 });
  /** Ends a stream's session (its model released); by stream, so a reconnect can retire the stream it replaces. */
  const sessions = new Map<Call, () => void>();
  let address = options.listen;
  const refusals = { count: 0, lastLogMs: -Infinity };
  const refuse = (call: Call, code: grpc.status, details: string, freeInMs: number | null = null) => {
    refusals.count++;
    const now = performance.now();
    if (now - refusals.lastLogMs >= REFUSAL_LOG_INTERVAL_MS) {
      options.log?.(`refused a controller from ${call.getPeer()}: ${details}${refusals.count > 1 ? ` (${refusals.count} refusals since the last such line)` : ''}`);
      refusals.count = 0;
      refusals.lastLogMs = now;
    }
    const metadata = new grpc.Metadata();
    if (freeInMs !== null) metadata.set(LEASE_FREE_IN_TRAILER, String(Math.ceil(freeInMs)));
    call.emit('error', { code, details, metadata });
  };

  server.addService(shardServiceClient().service, {
    Connect(call: Call) {
      const checked = checkController(call.metadata, security);
      if ('code' in checked) return refuse(call, checked.code, checked.details);
      const decision = lease.acquire(checked.controllerId, call);
      if (!decision.granted) return refuse(call, grpc.status.FAILED_PRECONDITION, `${decision.reason}; a worker serves one controller at a time`, decision.freeInMs);
      if (decision.replaces) sessions.get(decision.replaces)?.();
      else options.log?.(`serving controller "${checked.controllerId}" from ${call.getPeer()}`);
      const accepted = new grpc.Metadata();
      accepted.set(LEASE_HEADER, 'granted');
      call.sendMetadata(accepted);

      const host = new ShardWorkerHost();
      let goodbye = false;
      let ended = false;
      const release = () => {
        if (ended) return;
        ended = true;
        sessions.delete(call);
        lease.release(call, goodbye);
        host.submit({ type: 'shutdown', id: 0 }, () => {});
        if (!call.writableEnded && !call.destroyed) call.end();
      };
      sessions.set(call, release);
      call.on('data', (frame: Record<string, unknown>) => {
        if (ended) return;
        let msg;
        try {
          msg = decodeControllerFrame(frame);
        } catch (err) {
          call.write({ id: Number(frame.id), error: { code: 'INVALID_ARGUMENT', message: (err as Error).message } });
          return;
        }
        if (msg.type === 'shutdown') goodbye = true;
        host.submit(msg, (answer) => {
          if (!call.writableEnded && !call.destroyed) call.write(encodeWorkerMessage(answer));
        });
      });
      call.on('end', release);
      call.on('error', release);
      call.on('cancelled', release);
    },
  });
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync(options.listen, serverCredentials(security), (err, p) => (err ? reject(new TesseraError('CONFIG_INVALID', `cannot listen on ${options.listen}: ${err.message}`)) : resolve(p))),
  );
  const host = options.listen.slice(0, options.listen.lastIndexOf(':'));
  address = `${host}:${port}`;
  let stopped: Promise<void> | null = null;
  return {
    address,
    holder: () => lease.current,
    shutdown() {
      stopped ??= new Promise<void>((resolve) => {
        for (const release of [...sessions.values()]) release();
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
